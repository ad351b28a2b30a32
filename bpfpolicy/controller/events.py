"""A JSON-lines event log in the state dir: one line per apply, prune, drift repair and
failure (Flux/Argo emit the same kinds of events). Appends are single `write()` calls of
one line, so concurrent writers (the controller, a ring-buffer reader)
never interleave inside a line.

The log is created 0600 (umask-independent) and an existing one is chmod-ed down: event
messages carry build errors, which quote (short tokens of) policy files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .paths import create_private

MAX_BYTES = 16 * 1024 * 1024  # rotate to events.jsonl.1 beyond this


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def emit(path: Path, reason: str, message: str, *, policy: str | None = None,
         type_: str = "Normal", **extra: Any) -> dict[str, Any]:
    """Append one event. `type_` is Normal or Warning (the Kubernetes convention)."""
    event = {"time": now_iso(), "type": type_, "reason": reason, "policy": policy,
             "message": message, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    _rotate(path)
    line = (json.dumps(event, sort_keys=False, default=str) + "\n").encode()
    fd = create_private(path)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def _rotate(path: Path) -> None:
    try:
        if path.stat().st_size > MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


def read(path: Path, *, since: str | None = None, policy: str | None = None) -> list[dict[str, Any]]:
    """All events (oldest first), optionally filtered."""
    return list(_iter_lines(path, since, policy, follow=False))


def follow(path: Path, *, since: str | None = None, policy: str | None = None,
           poll: float = 0.2) -> Iterator[dict[str, Any]]:
    """Existing events, then new ones as they are appended (like `tail -F`)."""
    yield from _iter_lines(path, since, policy, follow=True, poll=poll)


def _iter_lines(path: Path, since: str | None, policy: str | None, *, follow: bool,
                poll: float = 0.2) -> Iterator[dict[str, Any]]:
    tail = LogTail(path)
    while True:
        for ev in tail.new():
            if since and str(ev.get("time", "")) < since:
                continue
            if policy and ev.get("policy") != policy:
                continue
            yield ev
        if not follow:
            return
        time.sleep(poll)


class LogTail:
    """Incremental reader of the log (`tail -F`): `new()` returns the complete lines
    appended since the last call, following rotation and truncation. Non-blocking, so
    the kernel-event stream can interleave it with its ring-buffer poll."""

    def __init__(self, path: Path, *, at_end: bool = False) -> None:
        self.path = path
        self.pos, self.inode, self.buf = 0, None, b""
        if at_end:
            try:
                st = path.stat()
                self.pos, self.inode = st.st_size, st.st_ino
            except FileNotFoundError:
                pass

    def new(self) -> list[dict[str, Any]]:
        try:
            st = self.path.stat()
            if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.pos):
                self.pos, self.buf = 0, b""  # rotated or truncated
            self.inode = st.st_ino
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            chunk = b""
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [ev for ev in map(_parse, lines) if ev is not None]


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        ev = json.loads(raw)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None
