"""Durable controller state in the state dir, every file written atomically.

* `inventory.json` — what bpfpolicy *applied* to the kernel, per policy: kind, name,
  digest, program_hash, revision, pins, map content digests, attachments. Written only
  after the kernel change succeeded (the kernel is the truth; the inventory is our diff
  base, like Flux's inventory or kopf's persisted diff base).
* `status.json` — conditions (Ready / Reconciling / Stalled + reason + message),
  last-applied vs last-attempted revision, per policy and for the whole source.
* `lock` — an flock so two controllers (a `watch` and a manual `apply`) never interleave.

Every file here is 0600: temp files come from mkstemp (0600), the lock is created 0600.

Atomic write = temp file in the same dir + fsync + rename + fsync(dir): a kill -9 at any
point leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .paths import create_private

INVENTORY_VERSION = 1
HISTORY = 5


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """`durable=False` skips the fsyncs (still atomic via rename; a crash may lose the
    latest version but never tears it) — fine for status, not for the inventory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_json(path: Path, default: Any) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError:
        # A torn file cannot happen with write_json_atomic; a hand-edited one can.
        # Treat it as absent: observation re-derives the truth from bpffs pins.
        return default


def gc_temporaries(state_dir: Path) -> list[str]:
    """Remove `.*.tmp` files a killed writer left behind."""
    removed = []
    if state_dir.is_dir():
        for p in state_dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(str(p))
    return removed


class Store:
    """Inventory + status of one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.inventory_path = state_dir / "inventory.json"
        self.status_path = state_dir / "status.json"

    # -- inventory ------------------------------------------------------------
    def inventory(self) -> dict[str, dict[str, Any]]:
        data = read_json(self.inventory_path, {})
        return dict(data.get("policies", {})) if isinstance(data, dict) else {}

    def save_inventory(self, policies: dict[str, dict[str, Any]]) -> None:
        write_json_atomic(self.inventory_path, {"version": INVENTORY_VERSION, "policies": policies})

    def record_policy(self, key: str, entry: dict[str, Any] | None) -> None:
        """Set (or with None remove) one policy's inventory entry."""
        inv = self.inventory()
        if entry is None:
            inv.pop(key, None)
        else:
            inv[key] = entry
        self.save_inventory(inv)

    # -- status ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        data = read_json(self.status_path, {})
        if not isinstance(data, dict):
            data = {}
        data.setdefault("policies", {})
        data.setdefault("source", {})
        return data

    def save_status(self, status: dict[str, Any]) -> None:
        write_json_atomic(self.status_path, status, durable=False)

    @contextlib.contextmanager
    def lock(self, blocking: bool = True) -> Iterator[bool]:
        """Exclusive controller lock; yields False when non-blocking and already held."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = create_private(self.dir / "lock", os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


def push_history(entry: dict[str, Any], revision: str | None) -> None:
    """Keep the last HISTORY applied revisions (Flux keeps 5)."""
    hist = [h for h in entry.get("history", []) if h != revision]
    if revision:
        hist.insert(0, revision)
    entry["history"] = hist[:HISTORY]
