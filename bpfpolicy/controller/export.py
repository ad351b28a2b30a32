"""The durable kernel-event export: `watch` is the one reader of every ring buffer and
appends each decoded record as one JSON line to `exportFile` (Tetragon's export file,
`--export-filename`, plays the same role: consumers tail a file instead of competing for
ring-buffer records, which a ring buffer hands to exactly one reader).

* Size- and count-bounded: beyond `exportMaxBytes` the file is renamed to `.1` (`.1` to
  `.2`, …) and at most `exportKeep` files exist in total (current + `exportKeep - 1`).
* Created 0600 whatever the umask (events carry argument strings of watched processes).
* `exportFormat`: `bpfpolicy` (the stream's own lines) or a format a kind provides in
  `Kind.export_formatters` (TracingPolicy: `tetragon`, Tetragon's `GetEventsResponse`
  JSON); an event whose kind has no formatter for it is written in the bpfpolicy shape.
* While the exporter runs it holds an exclusive `flock` on `export.lock` beside the file:
  `bpfpolicy events` takes that as "a controller is reading the rings, read the file".
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import create_private

DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # Tetragon's default rotation size is 10 MiB too
DEFAULT_KEEP = 5  # files in total, current included
MIN_MAX_BYTES = 4096  # smaller rotates on nearly every event: a typo, not a choice
MAX_KEEP = 100  # bounds the rename chain run on every rotation
FORMATS = ("bpfpolicy", "tetragon")
FIELDS = ("exportFile", "exportMaxBytes", "exportKeep", "exportFormat")

Formatter = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class ExportSettings:
    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    keep: int = DEFAULT_KEEP
    format: str = "bpfpolicy"

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")


def settings(cfg: Any) -> ExportSettings:
    """The host config's export settings (defaults under `<stateDir>/events/`)."""
    raw = getattr(cfg, "export", None) or {}
    path = raw.get("exportFile") or cfg.state_dir / "events" / "export.jsonl"
    return ExportSettings(Path(path), int(raw.get("exportMaxBytes", DEFAULT_MAX_BYTES)),
                          int(raw.get("exportKeep", DEFAULT_KEEP)), str(raw.get("exportFormat", "bpfpolicy")))


def check_config(get: dict[str, tuple[str, Any]], err: Callable[[str, str], None]) -> dict[str, Any]:
    """Validate the export fields of a host config (`get`: canonical key -> (key, value));
    returns the accepted ones."""
    from .config import path_problem

    out: dict[str, Any] = {}
    if "exportFile" in get:
        problem = path_problem(get["exportFile"][1])
        if problem:
            err("exportFile", problem)
        else:
            out["exportFile"] = os.path.normpath(get["exportFile"][1])
    for key, low, high in (("exportMaxBytes", MIN_MAX_BYTES, 1 << 40), ("exportKeep", 1, MAX_KEEP)):
        if key in get:
            v = get[key][1]
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                err(key, f"must be an integer in [{low}, {high}]")
            else:
                out[key] = v
    if "exportFormat" in get:
        v = get["exportFormat"][1]
        if v not in FORMATS:
            err("exportFormat", f"must be one of {', '.join(FORMATS)}")
        else:
            out["exportFormat"] = v
    return out


def formatter(fmt: str) -> Formatter:
    """`ev -> line object` for `fmt`; kinds provide non-native formats by event kind."""
    if fmt == "bpfpolicy":
        return lambda ev: ev
    from ..kinds import KINDS

    by_kind = {name: k.export_formatters[fmt] for name, k in KINDS.items() if fmt in k.export_formatters}

    def fmt_one(ev: dict[str, Any]) -> dict[str, Any] | None:
        fn = by_kind.get(str(ev.get("kind")))
        if fn is None:
            return ev
        return fn(ev)
    return fmt_one


class ExportWriter:
    """Appends lines, rotating by size; each line is one `write()` (readers never see half)."""

    def __init__(self, s: ExportSettings) -> None:
        self.s = s
        s.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.format = formatter(s.format)

    def write(self, ev: dict[str, Any]) -> bool:
        obj = self.format(ev)
        if obj is None:
            return False
        line = (json.dumps(obj, default=str) + "\n").encode()
        self._rotate_for(len(line))
        fd = create_private(self.s.path)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return True

    def _rotate_for(self, n: int) -> None:
        try:
            size = self.s.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + n <= self.s.max_bytes:
            return
        backups = [self.s.path.with_name(f"{self.s.path.name}.{i}") for i in range(1, self.s.keep)]
        if not backups:  # keep == 1: the current file only
            self.s.path.unlink()
            return
        backups[-1].unlink(missing_ok=True)
        for older, newer in zip(reversed(backups[1:]), reversed(backups[:-1]), strict=True):
            if newer.exists():
                os.replace(newer, older)
        os.replace(self.s.path, backups[0])


class Exporter:
    """A daemon thread: one EventStream over every ring buffer, each event exported."""

    def __init__(self, cfg: Any, on_warning: Callable[[str], None] | None = None) -> None:
        from .stream import EventStream

        self.s = settings(cfg)
        self.writer = ExportWriter(self.s)
        self.stream = EventStream(cfg.bpffs_root, cfg.state_dir, controller_log=False, on_warning=on_warning)
        self.on_warning = on_warning or (lambda m: None)
        self._thread = threading.Thread(target=self._run, name="bpfpolicy-export", daemon=True)
        self._lock_fd: int | None = None
        self.exported = 0

    def start(self) -> Exporter:
        self._lock_fd = os.open(self.s.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            self.on_warning(f"{self.s.path}: another controller exports here; not exporting")
            return self
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for ev in self.stream.run():
                try:
                    self.exported += self.writer.write(ev)
                except OSError as e:  # disk full, removed dir: keep reading, say so once
                    self.on_warning(f"export: {e}")
        except Exception as e:  # the controller keeps enforcing without an exporter
            self.on_warning(f"export stopped: {e}")

    def stop(self, timeout: float = 5.0) -> None:
        """Drain what the rings hold now, then release the lock."""
        self.stream.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def controller_exporting(s: ExportSettings) -> bool:
    """True while some process (a running `watch`) holds the export lock."""
    try:
        fd = os.open(s.lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
