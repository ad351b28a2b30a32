"""Observed state: what is really in the kernel for each policy bpfpolicy manages.

Sources, cheapest first: the inventory (what we applied: ids, pins, attachments), the
bpffs pins under the root (`<root>/<Kind>/<name>/prog_*|map_*|link_*`, docs/ARTIFACTS.md),
and the kernel itself (bpf(2) info on pinned objects; each attachment is asked through
its hook's attacher, `kernel.attach`). `kernel_snapshot()` adds the `bpftool -j` view (all programs, maps,
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

from ..kernel.attach import AttachRecord, Observation, attacher_for
from ..kernel.pins import pinned_prog_id
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
    cache = Observation()
    for key in sorted(keys):
        if deep or inv.get(key) is None:
            obs.policies[key] = observe_policy(cfg, key, inv.get(key), cache)
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
                   cache: Observation | None = None) -> ObservedPolicy:
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
        op.prog_ids[prog] = pinned_prog_id(info.get("pin"))
        if op.prog_ids[prog] is None:
            op.drift.append(f"program {prog}: pin {info.get('pin')} missing")
        elif op.prog_ids[prog] != info.get("id"):
            op.drift.append(f"program {prog}: pinned id {op.prog_ids[prog]} != applied id {info.get('id')}")
    for mname, info in entry.get("maps", {}).items():
        if not os.path.exists(info.get("pin", "")):
            op.drift.append(f"map {mname}: pin {info.get('pin')} missing")
    for att in entry.get("attachments", []):
        idx = int(att["index"])
        op.attached[idx] = attached_prog_ids(att, cache)
        want = att.get("prog_id")
        if want not in op.attached[idx]:
            op.drift.append(f"attachment {describe_attachment(att)}: expected program {want}, "
                            f"found {op.attached[idx] or 'nothing'}")
    return op


def _observe_installed(key: str, entry: dict[str, Any]) -> ObservedPolicy:
    """A file-installed artifact (no pins): compare installed files with their hashes."""
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


def attached_prog_ids(att: AttachRecord, cache: Observation | None = None) -> list[int]:
    """Program ids the kernel runs at this attachment right now ([] when detached).
    `cache` (one per observation) holds e.g. one netlink dump per netns."""
    try:
        return attacher_for(att).attached_prog_ids(att, cache)
    except OSError:
        return []


def describe_attachment(att: AttachRecord) -> str:
    return attacher_for(att).describe(att)


def kernel_snapshot() -> dict[str, Any]:
    """`bpftool -j` programs, maps and links (ids), for status and leak checks."""
    from ..kernel import bpftool

    snap: dict[str, Any] = {"progs": [], "maps": [], "links": []}
    with contextlib.suppress(OSError, ValueError):
        snap["progs"] = bpftool.prog_show()
        snap["maps"] = bpftool.map_show()
        snap["links"] = bpftool.link_show()
    return snap
