"""`bpfpolicy events --follow` on the real kernel: the example TracingPolicies applied by
the controller, the real CLI streaming their ring buffers, real processes triggering the
hooks (an open of /etc/shadow, a mkdir that gets SIGKILLed); and a NetworkPolicy verdict
(a UDP datagram dropped by tc on a veth in a throwaway netns)."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import BPFPOLICY, REPO, run_cli

TRACING = REPO / "policies" / "tracing"


class Follower:
    """`bpfpolicy events --follow ARGS` as a subprocess; complete JSON lines read with
    a timeout (raw fd reads, so nothing hides in a Python buffer from select)."""

    def __init__(self, cfg, *args: str) -> None:  # noqa: ANN001
        self.proc = subprocess.Popen([*BPFPOLICY, "events", "--follow", *args], env=cfg.env,
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""
        self.seen: list[dict[str, Any]] = []

    def lines(self, timeout: float) -> Iterator[dict[str, Any]]:
        """Lines that arrive within `timeout` seconds (stops early at EOF)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                ev = json.loads(raw)
                self.seen.append(ev)
                yield ev
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self.buf += chunk

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def follow(ctl):  # noqa: ANN001, ANN201
    """Start followers against the test's state dir; all stopped afterwards."""
    started: list[Follower] = []

    def start(*args: str) -> Follower:
        f = Follower(ctl, *args)
        started.append(f)
        return f
    try:
        yield start
    finally:
        for f in started:
            f.close()


def _apply(cfg) -> None:  # noqa: ANN001
    res = run_cli(cfg, "apply", str(TRACING))
    assert res.returncode == 0, res.stdout + res.stderr


def _run(argv: list[str]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.wait(30)
    return p


def _until(f: Follower, trigger: Callable[[], subprocess.Popen[bytes]],
           pred: Callable[[dict[str, Any], set[int]], bool], timeout: float = 40) -> tuple[dict, set[int]]:
    """Trigger until an event satisfying `pred` (given the triggering pids) is streamed.
    Retrying covers the stream's start-up (it opens the ring buffers asynchronously)."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids.add(trigger().pid)
        for ev in f.lines(0.7):
            # the process sensor's process_fork/exec lines carry the same pids
            if pred(ev, pids) and ev.get("policy") != "TracingPolicy/bpfpolicy-process-sensor":
                return ev, pids
        if f.proc.poll() is not None:
            break
    pytest.fail(f"no matching event; streamed {f.seen!r}; stderr: {f.stderr()}")


@pytest.mark.kernel
def test_open_event_names_policy_hook_pid_and_action(ctl, follow) -> None:  # noqa: ANN001
    f = follow("--source", "kernel")  # started before the apply: picked up by rescan
    _apply(ctl)
    ev, pids = _until(f, lambda: _run(["cat", "/etc/shadow"]),
                      lambda e, p: e.get("pid") in p)
    assert ev["source"] == "kernel" and ev["kind"] == "TracingPolicy"
    assert ev["policy"] == "TracingPolicy/sensitive-files"
    assert ev["hook"] == "sys_openat" and ev["hook_path"] == "spec.kprobes[0]"
    assert ev["comm"] == "cat" and ev["binary"].endswith("/cat")
    assert ev["uid"] == os.geteuid()
    assert ev["action"] == ["Post"]
    assert {"index": 1, "type": "string", "label": "pathname", "value": "/etc/shadow"} in ev["args"]
    assert ev["time"].endswith("Z")


@pytest.mark.kernel
def test_sigkill_event_and_policy_filter(ctl, follow) -> None:  # noqa: ANN001
    _apply(ctl)
    target = f"/tmp/bpfpolicy-forbidden-{secrets.token_hex(4)}"
    f = follow("--policy", "forbidden-mkdir", "--count", "1")
    killed: list[int] = []

    def trigger() -> subprocess.Popen[bytes]:
        _run(["cat", "/etc/shadow"])  # sensitive-files fires too, and must be filtered out
        p = _run(["mkdir", target])
        killed.append(p.returncode)
        return p
    try:
        ev, pids = _until(f, trigger, lambda e, p: e.get("pid") in p)
    finally:
        with_dir = Path(target)
        if with_dir.is_dir():
            with_dir.rmdir()  # SIGKILL does not undo the call
    assert -signal.SIGKILL in killed
    assert ev["policy"] == "TracingPolicy/forbidden-mkdir"
    assert ev["hook"] in ("sys_mkdir", "sys_mkdirat") and ev["comm"] == "mkdir"
    assert ev["action"] == ["Sigkill", "Post"]  # policy order, the last one is the event's action (Tetragon)
    assert any(a.get("value") == target for a in ev["args"])
    assert f.proc.wait(10) == 0  # --count 1: stopped by itself
    assert all(e["policy"] == "TracingPolicy/forbidden-mkdir" for e in f.seen)


@pytest.mark.kernel
def test_controller_lines_interleave_and_sigterm_exits_cleanly(ctl, follow) -> None:  # noqa: ANN001
    _apply(ctl)
    f = follow()
    got, pids = _until(f, lambda: _run(["cat", "/etc/shadow"]), lambda e, p: e.get("pid") in p)
    assert got["source"] == "kernel"
    res = run_cli(ctl, "suspend")
    assert res.returncode == 0, res.stderr
    try:
        ctl_ev = next((e for e in f.lines(10) if e["source"] == "controller"), None)
    finally:
        run_cli(ctl, "resume")
    assert ctl_ev is not None, f.seen
    assert ctl_ev["reason"] == "Suspended" and ctl_ev["time"] >= got["time"][:19]
    # history (the Applied lines) is not replayed by --follow without --since
    assert not any(e.get("reason") == "Applied" for e in f.seen)
    f.proc.send_signal(signal.SIGTERM)
    assert f.proc.wait(10) == 0, f.stderr()


def _blocked_in_write(pid: int) -> bool:
    """The process sleeps in a pipe write (its reader stopped reading)."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()  # anon_pipe_write on 6.18
    except OSError:
        return False
    return wchan.endswith("pipe_write") or wchan == "pipe_wait_writable"


@pytest.mark.kernel
def test_sigterm_ends_a_follower_whose_reader_stopped_reading(ctl, follow) -> None:  # noqa: ANN001
    """A consumer that stops reading fills the pipe; the follower's write then blocks, and
    a SIGTERM must still end it (exit 0) instead of the write being retried forever."""
    _apply(ctl)  # the process sensor posts process_exec/exit for every exec below
    f = follow("--source", "kernel")
    deadline = time.monotonic() + 60
    while not _blocked_in_write(f.proc.pid) and time.monotonic() < deadline:
        for _ in range(50):
            _run(["true"])
    assert _blocked_in_write(f.proc.pid), "the pipe never filled"
    f.proc.send_signal(signal.SIGTERM)
    assert f.proc.wait(10) == 0


@pytest.mark.kernel
def test_without_follow_prints_the_controller_log(ctl) -> None:  # noqa: ANN001
    _apply(ctl)
    res = run_cli(ctl, "events", "--policy", "TracingPolicy/sensitive-files")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert lines and all(e["policy"] == "TracingPolicy/sensitive-files" for e in lines)
    assert "source" not in lines[0]  # today's format, unchanged


# -- no kernel needed --------------------------------------------------------------------


def test_decoder_registry_is_keyed_by_layout() -> None:
    from bpfpolicy.controller import stream

    assert stream.decoder_for({"kind": "X", "events": {"layout": "nope"}}) is None
    assert stream.decoder_for({"events": {"layout": "tracing_event_v1"}}).__name__ == "decode_event"
    stream.register_decoder("test_layout_v1", lambda raw, m: {"n": raw[0], "ts_ns": 0})
    manifest = {"kind": "Demo", "name": "d", "events": {"layout": "test_layout_v1"}}
    ev = stream.normalize(stream.decoder_for(manifest)(b"\x07", manifest), "Demo/d", manifest)
    assert list(ev)[:5] == ["time", "source", "kind", "policy", "artifact"]
    assert ev["source"] == "kernel" and ev["kind"] == "Demo" and ev["policy"] == "Demo/d"
    assert ev["n"] == 7


def test_undecodable_record_becomes_an_error_line(tmp_path: Path) -> None:
    from bpfpolicy.controller import stream

    def short(raw: bytes, _m: dict) -> dict:
        import struct
        return {"v": struct.unpack("<Q", raw)[0]}
    stream.register_decoder("test_short_v1", short)
    manifest = {"kind": "Demo", "events": {"layout": "test_short_v1"}}
    es = stream.EventStream(tmp_path, tmp_path)
    collect = es._collector(stream._Source("Demo/d", "unused", 1, manifest))
    collect(b"\x01" + bytes(7))
    collect(b"\x01")
    ok, bad = list(es._pending)
    assert ok["v"] == 1 and ok["policy"] == "Demo/d"
    assert bad["source"] == "kernel" and bad["error"].startswith("undecodable record (1 bytes)")


def test_filters() -> None:
    from bpfpolicy.controller.stream import from_controller, matches

    k = {"source": "kernel", "kind": "NetworkPolicy", "policy": "NetworkPolicy/web",
         "artifact": "NetworkPolicy/ep1"}
    assert matches(k, policy="web") and matches(k, policy="NetworkPolicy/ep1")
    assert not matches(k, policy="other") and not matches(k, source="controller")
    assert matches(k, kind="networkpolicy") and not matches(k, kind="TracingPolicy")
    c = from_controller({"time": "t", "reason": "Applied", "policy": "TracingPolicy/x"})
    assert c["source"] == "controller" and c["kind"] == "TracingPolicy" and c["reason"] == "Applied"


@pytest.mark.kernel
def test_networkpolicy_drop_names_policy_and_rule(ctl, veth, follow, tmp_path: Path) -> None:  # noqa: ANN001
    from conftest import udp_received

    Path(ctl.env["BPFPOLICY_CONFIG"]).write_text(
        "selfHeal: true\ninterval: 1\nendpoints:\n"
        f"  - name: ep\n    labels: {{app: ev}}\n"
        f"    interfaces: [{{name: {veth.if_a}, netns: {veth.ns_a}}}]\n"
        f"    addresses: [{veth.ip4_a}]\n")
    src = tmp_path / "np"
    src.mkdir()
    (src / "np.yaml").write_text(
        "apiVersion: bpfpolicy.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny-peer\n"
        "spec:\n  endpointSelector:\n    matchLabels: {app: ev}\n"
        f"  ingressDeny:\n    - fromCIDR: [{veth.ip4_b}/32]\n")
    res = run_cli(ctl, "apply", str(src))
    assert res.returncode == 0, res.stdout + res.stderr
    f = follow("--kind", "NetworkPolicy", "--source", "kernel")
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 40
    while not got and time.monotonic() < deadline:
        assert udp_received(veth, count=2, wait=0.2) == 0  # dropped by the deny rule
        got = [e for e in f.lines(0.7) if e.get("proto") == "UDP" and e.get("remote") == veth.ip4_b]
    assert got, f"no verdict event; streamed {f.seen!r}; stderr: {f.stderr()}"
    ev = got[0]
    assert ev["policy"] == "NetworkPolicy/deny-peer" and ev["artifact"] == "NetworkPolicy/ep", f.seen
    assert ev["rule"] == "NetworkPolicy/deny-peer:spec.ingressDeny[0]"
    assert ev["action"] == "deny" and ev["audited"] is False
    assert ev["remote"] == veth.ip4_b and ev["local"] == veth.ip4_a and ev["proto"] == "UDP"


@pytest.mark.kernel
def test_ringbuf_reads_several_pinned_maps_in_one_poll_and_reraises(ctl) -> None:  # noqa: ANN001
    from bpfpolicy.kernel.ringbuf import RingBuffer

    _apply(ctl)
    pins = {name: str(ctl.bpffs_root / "TracingPolicy" / name / "map_events")
            for name in ("sensitive-files", "forbidden-mkdir")}
    target = f"/tmp/bpfpolicy-forbidden-{secrets.token_hex(4)}"
    got: dict[str, list[bytes]] = {n: [] for n in pins}
    with RingBuffer() as rb:
        for name, pin in pins.items():
            rb.add_pinned(pin, got[name].append)
        assert len(rb) == 2
        try:
            _run(["cat", "/etc/shadow"])
            assert _run(["mkdir", target]).returncode == -signal.SIGKILL
        finally:
            if Path(target).is_dir():
                Path(target).rmdir()
        deadline = time.monotonic() + 10
        while not all(got.values()) and time.monotonic() < deadline:
            rb.poll(200)
        assert all(got.values()), {n: len(v) for n, v in got.items()}

    def boom(_raw: bytes) -> None:
        raise ValueError("decoder failed")
    with RingBuffer() as rb:
        rb.add_pinned(pins["sensitive-files"], boom)
        _run(["cat", "/etc/shadow"])
        with pytest.raises(ValueError, match="decoder failed"):
            for _ in range(50):
                rb.poll(200)
