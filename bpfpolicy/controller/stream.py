"""`bpfpolicy events --follow`: kernel events of every applied policy, interleaved with
new controller log lines, as one stream of dicts.

Kind-independent: a policy takes part when its applied manifest (inventory.json) has an
`events` section `{"map": ..., "type": "ringbuf", "layout": ...}`; its ring buffer is
opened from the pin `<policy dir>/map_<map>` and each record is decoded by the decoder
registered for `layout`. Decoders are pure functions `(raw, manifest) -> dict` that live
with their kind, which lists them in `Kind.event_layouts`; `register_decoder` adds more.

Every line carries `time`, `source` ("kernel" | "controller"), `kind` and `policy`.
The set of ring buffers follows the inventory: a policy applied (or replaced: new map or
new digest) while the stream runs is picked up within a second. A record the decoder
cannot read becomes a line with `error` instead of ending the stream.
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import events as log
from .state import Store

Decoder = Callable[[bytes, dict[str, Any]], dict[str, Any]]

# layout -> decoder, beyond the ones the kinds declare (tests, plug-ins).
_DECODERS: dict[str, Decoder] = {}


def register_decoder(layout: str, fn: Decoder) -> None:
    """Decode ring-buffer records whose manifest says `events.layout == layout`."""
    _DECODERS[layout] = fn


def _kind_decoders() -> dict[str, Decoder]:
    """Every registered kind's `event_layouts` (imported on first use, not up front)."""
    from ..kinds import KINDS

    return {layout: fn for k in KINDS.values() for layout, fn in k.event_layouts.items()}


def decoder_for(manifest: dict[str, Any]) -> Decoder | None:
    """The decoder for a manifest's `events.layout` (falling back to the kind name)."""
    layout = str((manifest.get("events") or {}).get("layout"))
    return _DECODERS.get(layout) or _kind_decoders().get(layout) or _DECODERS.get(str(manifest.get("kind")))


def normalize(decoded: dict[str, Any], key: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the common fields to one decoded kernel record. `policy` is the decoder's (an
    endpoint artifact's verdict names the rule's policy) or else the artifact's `Kind/name`;
    `artifact` is always the applied artifact the ring buffer belongs to."""
    kind = str(manifest.get("kind") or key.split("/", 1)[0])
    ev = dict(decoded)
    if "time" not in ev:
        ts = ev.get("ts_ns")  # bpf_ktime_get_ns(): CLOCK_MONOTONIC
        ns = int(ts) + time.time_ns() - time.monotonic_ns() if isinstance(ts, int) else time.time_ns()
        ev["time"] = _iso(ns)
    policy = ev.get("policy") or (manifest.get("metadata") or {}).get("policy") or key
    head = {"time": ev.pop("time"), "source": "kernel", "kind": kind, "policy": policy,
            "artifact": key}
    ev.pop("policy", None)
    return head | ev


def from_controller(ev: dict[str, Any]) -> dict[str, Any]:
    """A controller log line with the common fields in front."""
    policy = ev.get("policy")
    kind = policy.split("/", 1)[0] if isinstance(policy, str) and "/" in policy else None
    return {"time": ev.get("time"), "source": "controller", "kind": kind, "policy": policy} | \
        {k: v for k, v in ev.items() if k not in ("time", "policy")}


def matches(ev: dict[str, Any], *, policy: str | None = None, kind: str | None = None,
            source: str | None = None, verdict: str | None = None, ip: str | None = None,
            port: int | None = None, since: float | None = None, until: float | None = None) -> bool:
    """Filters of the CLI. `policy` is `Kind/name` or just `name`; it also matches the
    artifact (an endpoint artifact's events name the rule's policy). `verdict` matches the
    event's action (NetworkPolicy allow/deny/audit…, a TracingPolicy action such as
    Sigkill); `ip`/`port` either end of a packet; `since`/`until` are epoch seconds."""
    ev = flat(ev)
    if source and ev.get("source") != source:
        return False
    if kind and str(ev.get("kind") or "").lower() != kind.lower():
        return False
    if policy:
        names = {str(ev.get("policy") or ""), str(ev.get("artifact") or "")}
        if policy not in names and policy not in {n.split("/", 1)[-1] for n in names}:
            return False
    if verdict is not None:
        acts = ev.get("action") if isinstance(ev.get("action"), list) else [ev.get("action")]
        if verdict.lower() not in {str(a).lower() for a in acts if a is not None}:
            return False
    if ip is not None and ip not in {str(ev.get(k)) for k in ("local", "remote") if ev.get(k)}:
        return False
    if port is not None and port not in {ev.get("lport"), ev.get("rport")}:
        return False
    if since is not None or until is not None:
        t = epoch(ev.get("time"))
        if t is None or (since is not None and t < since) or (until is not None and t > until):
            return False
    return True


def flat(ev: dict[str, Any]) -> dict[str, Any]:
    """A Tetragon-shaped export line (`{"process_kprobe": {...}, "node_name", "time"}`)
    seen with the stream's field names, so `--policy NAME`, `--verdict` and the times
    apply to either format (the kind is not in that shape)."""
    if "source" in ev or len(ev) > 3:
        return ev
    key = next((k for k in ev if k.startswith("process_")), None)
    if key is None or not isinstance(ev[key], dict):
        return ev
    body = ev[key]
    pol = body.get("policy_name")
    return {"time": ev.get("time"), "source": "kernel", "kind": None, "policy": pol,
            "action": body.get("action")}


def epoch(value: Any) -> float | None:
    """An RFC 3339 time (any precision, `Z` or offset) as epoch seconds; None if not one."""
    from datetime import UTC, datetime

    if not isinstance(value, str) or "T" not in value.upper():
        return None
    text = value.strip()
    head, dot, rest = text.partition(".")
    if dot:  # fromisoformat takes at most 6 fractional digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[:min(digits, 6)] + rest[digits:]
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: float | None = None) -> float:
    """`--since/--until`: an RFC 3339 time or a duration before now (`1h`, `30m`,
    `1h30m`, `90s`). Raises ValueError naming the accepted forms."""
    t = epoch(text)
    if t is not None:
        return t
    if _DURATION.match(text.strip()):
        secs = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text))
        return (time.time() if now is None else now) - secs
    raise ValueError(f"{text!r} is neither an RFC 3339 time (2024-05-01T12:00:00Z) "
                     "nor a duration (30s, 5m, 1h, 2d)")


@dataclass
class _Source:
    key: str
    path: str
    map_id: int
    manifest: dict[str, Any]
    digest: str | None = None  # a replaced program may reuse the map with new hooks

    @property
    def ident(self) -> tuple[int, str | None]:
        return (self.map_id, self.digest)


@dataclass
class EventStream:
    """Open ring buffers of applied policies and tail the controller log."""

    bpffs_root: Path
    state_dir: Path
    since: str | None = None
    poll_ms: int = 200
    rescan_s: float = 1.0
    on_warning: Callable[[str], None] | None = None  # e.g. "permission denied" once per pin
    controller_log: bool = True  # interleave the controller log (the exporter does not)
    sources: dict[str, _Source] = field(default_factory=dict)
    _pending: deque[dict[str, Any]] = field(default_factory=deque)
    _stop: bool = False
    _warned: set[str] = field(default_factory=set)

    def stop(self) -> None:
        """Ask `run()` to return after the current poll (signal handlers call this)."""
        self._stop = True

    def discover(self) -> dict[str, _Source]:
        """Applied policies with an `events` ring buffer whose pin exists."""
        from ..kernel import bpf
        from ..kernel.pins import pinned

        out: dict[str, _Source] = {}
        for key, entry in Store(self.state_dir).inventory().items():
            manifest = dict(entry.get("manifest") or {})
            spec = manifest.get("events") or {}
            if not spec.get("map") or spec.get("type", "ringbuf") != "ringbuf":
                continue
            manifest.setdefault("kind", entry.get("kind") or key.split("/", 1)[0])
            if decoder_for(manifest) is None:
                continue
            pin_dir = entry.get("dir") or str(self.bpffs_root / key)
            # the applied maps' pins, for decoders that read a second map (stack traces)
            manifest["pins"] = {n: m["pin"] for n, m in (entry.get("maps") or {}).items()
                                if isinstance(m, dict) and m.get("pin")}
            path = os.path.join(pin_dir, f"map_{spec['map']}")
            try:
                with pinned(path, read_only=True) as fd:
                    map_id = int(bpf.map_info(fd)["id"])
            except FileNotFoundError:
                continue  # not pinned (yet / any more)
            except OSError as e:
                self._warn(f"{key}: {e.strerror or e}")
                continue
            out[key] = _Source(key, path, map_id, manifest, entry.get("digest") or manifest.get("digest"))
        return out

    def _warn(self, msg: str) -> None:
        if msg not in self._warned and self.on_warning is not None:
            self._warned.add(msg)
            self.on_warning(msg)

    def run(self) -> Iterator[dict[str, Any]]:
        """Yield events until `stop()`. Controller lines start at the end of the log
        (or at `since`, replaying history first)."""
        from ..kernel.ringbuf import RingBuffer

        tail = log.LogTail(self.state_dir / "events.jsonl", at_end=self.since is None)
        rb: RingBuffer | None = None
        next_scan = 0.0
        try:
            while not self._stop:
                if time.monotonic() >= next_scan:
                    rb = self._rescan(rb)
                    next_scan = time.monotonic() + self.rescan_s
                if rb is not None and len(rb):
                    rb.poll(self.poll_ms)
                else:
                    time.sleep(self.poll_ms / 1000)
                for ev in tail.new() if self.controller_log else ():
                    if self.since and str(ev.get("time", "")) < self.since:
                        continue
                    self._pending.append(from_controller(ev))
                while self._pending:
                    yield self._pending.popleft()
        finally:
            if rb is not None:
                rb.close()

    def _rescan(self, rb: Any) -> Any:
        """Rebuild the ring buffer set when the applied policies (or their maps) changed;
        records already in the old rings are consumed first."""
        from ..kernel.ringbuf import RingBuffer

        found = self.discover()
        if rb is not None and {k: s.ident for k, s in found.items()} == \
                {k: s.ident for k, s in self.sources.items()}:
            return rb
        if rb is not None:
            rb.consume()
            rb.close()
        rb = RingBuffer()
        self.sources = {}
        for key, src in found.items():
            try:
                rb.add_pinned(src.path, self._collector(src))
            except OSError as e:  # unpinned since the scan: retried next scan
                if not isinstance(e, FileNotFoundError):
                    self._warn(f"{key}: {e.strerror or e}")
                continue
            self.sources[key] = src
        return rb

    def _collector(self, src: _Source) -> Callable[[bytes], None]:
        decode = decoder_for(src.manifest)
        assert decode is not None

        def collect(raw: bytes) -> None:
            try:
                decoded = decode(raw, src.manifest)
            except (ValueError, IndexError, KeyError, TypeError, struct.error) as e:
                # one record the decoder cannot read (e.g. written by the previous program
                # during a replace) must not end the stream
                decoded = {"error": f"undecodable record ({len(raw)} bytes): {e}"}
            self._pending.append(normalize(decoded, src.key, src.manifest))
        return collect


def _iso(ns: int) -> str:
    secs, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rem // 1_000_000:03d}Z"
