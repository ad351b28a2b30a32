"""Observed state: what is really in the kernel for each policy bpfpolicy manages.

Sources, cheapest first: the inventory (what we applied: ids, pins, attachments), the
bpffs pins under the root (`<root>/<Kind>/<name>/prog_*|map_*|link_*`, docs/ARTIFACTS.md),
and the kernel itself (bpf(2) info on pinned objects, netlink for XDP/tc, link info for
cgroup/tcx links). `kernel_snapshot()` adds the `bpftool -j` view (all programs, maps,
links) for status and leak checks; the reconcile hot path does not need it.

Observation never changes anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import HostConfig
from .state import Store

STAGING = "_staging"


@dataclass
class ObservedPolicy:
    key: str
    entry: dict[str, Any] | None  # inventory entry (None: pins without inventory)
    pin_dir: Path | None
    pins: set[str] = field(default_factory=set)
    prog_ids: dict[str, int | None] = field(default_factory=dict)  # program -> id behind pin
    attached: dict[int, list[int]] = field(default_factory=dict)  # attachment index -> prog ids
    drift: list[str] = field(default_factory=list)  # human-readable findings

    @property
    def kind(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[1]


@dataclass
class Observed:
    policies: dict[str, ObservedPolicy] = field(default_factory=dict)
    staging: list[Path] = field(default_factory=list)  # leftovers of a killed apply


def policy_dir(cfg: HostConfig, kind: str, name: str) -> Path:
    return cfg.bpffs_root / kind / name


def observe(cfg: HostConfig, store: Store | None = None, *, deep: bool = True) -> Observed:
    """Deep: ask the kernel about every pin and attachment. Shallow (file-triggered
    cycles): trust the inventory for ids and attachments, only list the pin dirs."""
    store = store or Store(cfg.state_dir)
    inv = store.inventory()
    obs = Observed()
    root = cfg.bpffs_root
    if (root / STAGING).is_dir():
        obs.staging = sorted((root / STAGING).iterdir())
    keys = set(inv)
    if root.is_dir():
        for kind_dir in root.iterdir():
            if kind_dir.name == STAGING or not kind_dir.is_dir():
                continue
            keys |= {f"{kind_dir.name}/{d.name}" for d in kind_dir.iterdir() if d.is_dir()}
    xdp_cache: dict[str | None, dict[str, int | None]] = {}
    for key in sorted(keys):
        if deep or inv.get(key) is None:
            obs.policies[key] = observe_policy(cfg, key, inv.get(key), xdp_cache)
        else:
            obs.policies[key] = trusted_policy(cfg, key, inv[key])
    return obs


def trusted_policy(cfg: HostConfig, key: str, entry: dict[str, Any]) -> ObservedPolicy:
    """The inventory's view, without kernel queries (the next deep cycle verifies it)."""
    kind, name = key.split("/", 1)
    op = ObservedPolicy(key, entry, policy_dir(cfg, kind, name) if entry.get("bpf", True) else None)
    op.prog_ids = {p: info.get("id") for p, info in entry.get("programs", {}).items()}
    op.attached = {int(a["index"]): [a.get("prog_id")] for a in entry.get("attachments", [])}
    return op


def observe_policy(cfg: HostConfig, key: str, entry: dict[str, Any] | None,
                   xdp_cache: dict[str | None, dict[str, int | None]] | None = None) -> ObservedPolicy:
    kind, name = key.split("/", 1)
    if entry is not None and not entry.get("bpf", True):
        return _observe_installed(key, entry)
    d = policy_dir(cfg, kind, name)
    op = ObservedPolicy(key, entry, d if d.is_dir() else None)
    if op.pin_dir is not None:
        op.pins = {p.name for p in op.pin_dir.iterdir()}
    if entry is None:
        op.drift.append("pinned objects without an inventory entry")
        return op
    for prog, info in entry.get("programs", {}).items():
        op.prog_ids[prog] = _pinned_prog_id(info.get("pin"))
        if op.prog_ids[prog] is None:
            op.drift.append(f"program {prog}: pin {info.get('pin')} missing")
        elif op.prog_ids[prog] != info.get("id"):
            op.drift.append(f"program {prog}: pinned id {op.prog_ids[prog]} != applied id {info.get('id')}")
    for mname, info in entry.get("maps", {}).items():
        if not os.path.exists(info.get("pin", "")):
            op.drift.append(f"map {mname}: pin {info.get('pin')} missing")
    for att in entry.get("attachments", []):
        idx = int(att["index"])
        op.attached[idx] = attached_prog_ids(att, xdp_cache)
        want = att.get("prog_id")
        if want not in op.attached[idx]:
            op.drift.append(f"attachment {describe_attachment(att)}: expected program {want}, "
                            f"found {op.attached[idx] or 'nothing'}")
    return op


def _observe_installed(key: str, entry: dict[str, Any]) -> ObservedPolicy:
    """A file-installed artifact (seccomp): compare installed files with their hashes."""
    d = Path(entry["install_dir"])
    op = ObservedPolicy(key, entry, None)
    for rel, digest in entry.get("files", {}).items():
        try:
            ok = hashlib.sha256((d / rel).read_bytes()).hexdigest() == digest
        except OSError:
            ok = False
        if not ok:
            op.drift.append(f"installed file {d / rel} missing or modified")
    return op


def _pinned_prog_id(pin: str | None) -> int | None:
    if not pin:
        return None
    from ..kernel import bpf

    try:
        fd = bpf.obj_get(pin)
    except OSError:
        return None
    try:
        return int(bpf.prog_info(fd)["id"])
    except OSError:
        return None
    finally:
        os.close(fd)


def attached_prog_ids(att: dict[str, Any],
                      xdp_cache: dict[str | None, dict[str, int | None]] | None = None) -> list[int]:
    """Program ids the kernel runs at this attachment right now ([] when detached).
    `xdp_cache` (per observation) holds one netlink dump per netns."""
    from ..kernel import cgroup, netdev, tc, xdp

    t = att.get("type")
    try:
        if t == "xdp" and xdp_cache is not None:
            ns = att.get("netns")
            if ns not in xdp_cache:
                xdp_cache[ns] = netdev.xdp_prog_ids(ns)
            pid = xdp_cache[ns].get(att["interface"])
            return [pid] if pid else []
        if t == "xdp":
            pid = xdp.query(att["interface"], att.get("netns")).prog_id
            return [pid] if pid else []
        if t == "tc":
            return tc.attached_prog_ids(att.get("tc", {}), att["interface"], att["direction"], att.get("netns"))
        if t == "cgroup_skb" and att.get("link_pin") and att.get("cgroup"):
            pid = cgroup.attached_prog_id(att["link_pin"], att["cgroup"])  # on that cgroup now
            return [pid] if pid else []
        if att.get("link_pin"):
            pid = cgroup.link_prog_id(att["link_pin"])  # any pinned bpf_link
            return [pid] if pid else []
    except OSError:
        return []
    return []


def describe_attachment(att: dict[str, Any]) -> str:
    t = att.get("type")
    if t in ("xdp", "tc"):
        where = att.get("interface", "?") + (f"@{att['netns']}" if att.get("netns") else "")
        return f"{t}{'/' + att['direction'] if att.get('direction') else ''} {where}"
    if t == "cgroup_skb":
        return f"cgroup_skb/{att.get('direction')} {att.get('cgroup')}"
    return f"{t} {att.get('program', '')}".strip()


def kernel_snapshot() -> dict[str, Any]:
    """`bpftool -j` programs, maps and links (ids), for status and leak checks."""
    from ..kernel import bpftool

    snap: dict[str, Any] = {"progs": [], "maps": [], "links": []}
    with contextlib.suppress(OSError, ValueError):
        snap["progs"] = bpftool.prog_show()
        snap["maps"] = bpftool.map_show()
        snap["links"] = bpftool.link_show()
    return snap
