"""`bpfpolicy watch`: the controller loop.

Triggers: file events on a directory source (watchdog, debounced), the reconcile interval
(with 10% jitter so a fleet does not reconcile in lockstep), the git poll interval, and
SIGHUP ("reconcile now"). A burst of writes (an editor, a `git checkout`, 1,000 writes in
a second) is coalesced: a cycle starts once the source has been quiet for DEBOUNCE
seconds, or at the latest MAX_DELAY after the first pending change, so a steady stream
still converges on its final content with a handful of cycles.

A file being written is waited for: a write event on a file starts a wait for its
close (IN_CLOSE_WRITE), and only once no file the source saw written is still open does
the short SETTLE quiet period start — so a 14 MB list written in place is read whole, not
half-truncated, and a finished write is picked up within milliseconds instead of a fixed
debounce. Once events have kept coming for BURST, the quiet period is DEBOUNCE again (a
stream of writes is coalesced as before). A writer that keeps a file open is bounded by
MAX_DELAY.

SIGTERM/SIGINT stop the loop after the current cycle and leave every program loaded and
attached (pins keep them); the next start adopts them — same digests plan as no-op.
`bpfpolicy suspend` (a flag file) pauses applying and drift correction.

A cycle never ends the loop: whatever a revision holds (a 5000-digit port, a symlink
loop, a FIFO named like a policy, YAML the loader chokes on), the reconciler marks the
source Stalled and keeps the previous enforcement; an exception that escapes even that
(status unwritable, lock trouble) is logged as one line and the loop waits for the next
trigger. Only SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

from . import events
from .config import HostConfig
from .notify import Notifier
from .reconcile import CycleResult, Reconciler, one_line

log = logging.getLogger("bpfpolicy.controller")

DEBOUNCE = 0.01  # quiet period after events with no write in progress (directory changes, SIGHUP)
SETTLE = 0.002  # quiet period once every file written has been closed: a `git checkout`'s next
# file follows its predecessor's close within microseconds, so this still coalesces it
BURST = 0.05  # events still coming this long after the first: a burst, DEBOUNCE applies again
MAX_DELAY = 0.5
JITTER = 0.1
TIMINGS_ENV = "BPFPOLICY_TIMINGS"  # set: every cycle's log line ends with ms per phase


class Trigger:
    """Coalesces wake-ups: `poke()` from any thread, `wait()` in the loop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._first: float | None = None
        self._last: float | None = None
        self._quiet = DEBOUNCE
        self._writing: set[str] = set()  # files seen written and not yet closed
        self.reasons: set[str] = set()
        self.waited = 0.0  # seconds from the first pending event to the cycle's start

    def poke(self, reason: str, immediate: bool = False, *, writing: str | None = None,
             closed: str | None = None, done: bool = False, echo: bool = False) -> None:
        """`writing`: a file was modified (wait for its close); `closed`: a file written
        was closed (IN_CLOSE_WRITE), `done`: a complete operation (delete, rename) — once
        no written file is open, SETTLE is the quiet period. `echo`: a directory's own
        event that accompanies a file event (its mtime changed): the quiet period stays."""
        with self._cond:
            now = time.monotonic()
            if self._first is None:
                self._first = now
            if writing is not None:
                self._writing.add(writing)
            if closed is not None:
                self._writing.discard(closed)
            if not echo:
                self._quiet = SETTLE if (closed is not None or done) and not self._writing else DEBOUNCE
            self._last = now - (MAX_DELAY if immediate else 0)
            self.reasons.add(reason)
            self._cond.notify_all()

    def wait(self, timeout: float, stop: threading.Event) -> set[str]:
        """Block until a debounced trigger fires or `timeout` passes; returns reasons."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not stop.is_set():
                now = time.monotonic()
                if self._first is not None:
                    assert self._last is not None
                    quiet = MAX_DELAY if self._writing else self._quiet
                    if self._last - self._first > BURST:
                        quiet = max(quiet, DEBOUNCE)
                    due = min(self._last + quiet, self._first + MAX_DELAY)
                    if now >= due:
                        self.waited = now - self._first
                        break
                    self._cond.wait(due - now)
                    continue
                if now >= deadline:
                    return {"interval"}
                self._cond.wait(deadline - now)
            reasons, self.reasons = self.reasons, set()
            self._first = self._last = None
            self._writing.clear()  # a close we missed must not hold the next cycle back
            return reasons


class Watcher:
    def __init__(self, cfg: HostConfig, paths: list[Path] | None = None, *, once_ready: Any = None,
                 log: Any = None) -> None:
        self.cfg = cfg
        self.paths = paths or ([cfg.source_dir] if cfg.source_dir else [])
        self.reconciler = Reconciler(cfg, paths or None)
        self.trigger = Trigger()
        self.stop = threading.Event()
        self.log = log or (lambda msg: None)
        self.cycles = 0
        self._observer: Any = None
        self.notifier = Notifier.from_env()  # systemd Type=notify; a no-op elsewhere

    def _start_file_watch(self) -> None:
        if self.cfg.git is not None or not self.paths:
            return
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        trig = self.trigger

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                kind = getattr(event, "event_type", "")
                if kind in ("opened", "closed_no_write"):
                    return
                is_dir = bool(getattr(event, "is_directory", False))
                path = None if is_dir else str(getattr(event, "src_path", ""))
                if path and os.path.basename(path).startswith("."):
                    trig.poke("file", done=True)  # hidden (an editor's swap file): never read, never waited for
                    return
                if kind in ("modified", "created") and path:
                    trig.poke("file", writing=path)
                elif kind == "closed" and path:
                    trig.poke("file", closed=path)
                elif kind in ("deleted", "moved"):
                    trig.poke("file", done=True)
                else:  # a directory's modified event follows every file event in it
                    trig.poke("file", echo=is_dir and kind == "modified")

        self._observer = Observer()
        for p in self.paths:
            target = p if p.is_dir() else p.parent
            try:
                self._observer.schedule(Handler(), str(target), recursive=True)
            except Exception as e:  # unreadable dir, symlink loop: cycles still run on the interval
                self.log(f"file watch on {target} failed: {one_line(e)}; relying on the interval")
        try:
            self._observer.start()
        except Exception as e:
            self.log(f"file watch failed: {one_line(e)}; relying on the interval")
            self._observer = None

    def _signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGHUP, lambda *_: self.trigger.poke("SIGHUP", immediate=True))
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())

    def request_stop(self) -> None:
        self.notifier.stopping()
        self.stop.set()
        self.trigger.poke("stop", immediate=True)

    def run(self) -> None:
        self._signals()
        if self.cfg.metrics_address:
            from . import metrics

            metrics.serve(self.cfg.metrics_address)
        self.notifier.start_watchdog()
        self._start_file_watch()
        events.emit(self.cfg.events_path, "ControllerStarted",
                    f"watching {', '.join(map(str, self.paths)) or self.cfg.git}")
        reasons = {"startup"}
        try:
            while not self.stop.is_set():
                self.run_cycle(reasons)
                reasons = self.trigger.wait(self._next_timeout(), self.stop)
        finally:
            if self._observer is not None:
                self._observer.stop()
                self._observer.join(timeout=2)
            events.emit(self.cfg.events_path, "ControllerStopped", "enforcement left in place")

    def _next_timeout(self) -> float:
        base = self.cfg.interval
        if self.cfg.git is not None:
            base = min(base, self.cfg.git.poll_interval)
        return base * (1 + random.uniform(0, JITTER))

    def run_cycle(self, reasons: set[str]) -> CycleResult:
        self.cycles += 1
        self.notifier.cycle_started()
        # file events alone: a shallow cycle (trust the inventory, diff against the
        # applied copies); startup, interval, git poll and SIGHUP: a deep drift check
        try:
            res = self.reconciler.cycle(deep=not reasons <= {"file"}, retry_failed="SIGHUP" in reasons)
        except Exception as e:  # the reconciler guards a revision; this guards the loop itself
            log.debug("cycle failed", exc_info=True)
            res = CycleResult(error=f"internal error: {one_line(e)}", reason="InternalError")
        if reasons != {"startup"}:
            res.timings = {"debounce": self.trigger.waited * 1000, **res.timings}
        try:
            self.log(_summary(res, reasons))
            for note in res.notes:
                self.log(f"  {note}")
        except Exception:
            log.debug("cannot log the cycle summary", exc_info=True)
        self.notifier.cycle_done(_notify_status(res), converged=res.reason != "InternalError")
        return res



def _notify_status(res: CycleResult) -> str:
    """systemd's STATUS= line (`systemctl status`): the revision and where it stands.
    READY=1 goes out after the first cycle that reached a definite state — converged, or
    refused with the previous enforcement kept (Stalled) — not only a clean one, or a
    bad revision at boot would make systemd kill an agent that is enforcing."""
    if res.skipped:
        return f"{res.revision or 'no revision'}: suspended"
    if res.error:
        return f"{res.revision or 'no revision'}: Stalled ({res.reason or 'error'})"
    return f"{res.revision}: {'Ready' if res.ok else 'Degraded'}"


def _summary(res: CycleResult, reasons: set[str]) -> str:
    why = ",".join(sorted(reasons))
    if res.skipped:
        return f"[{why}] skipped: {res.skipped}"
    if res.error:
        lines = [x.strip() for x in res.error.splitlines() if x.strip()]
        text = lines[0] + (" " + "; ".join(lines[1:4]) if len(lines) > 1 else "")
        reason = f"{res.reason}: " if res.reason else ""
        return f"[{why}] {res.revision}: error: {reason}{text}"
    outs = res.applied.outcomes if res.applied else []
    timings = ""
    if os.environ.get(TIMINGS_ENV) and res.timings:
        timings = " timings: " + " ".join(f"{k}={v:.1f}" for k, v in res.timings.items())
    if not outs:
        return f"[{why}] {res.revision}: no changes ({res.seconds * 1000:.1f} ms)" + timings
    parts = [f"{o.key} {o.action} {'ok' if o.ok else 'FAILED: ' + o.message}" for o in outs]
    return f"[{why}] {res.revision}: " + "; ".join(parts) + f" ({res.seconds * 1000:.1f} ms)" + timings
