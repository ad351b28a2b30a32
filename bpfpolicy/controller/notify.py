"""sd_notify without libsystemd: systemd's `Type=notify` readiness, watchdog and status.

systemd passes `$NOTIFY_SOCKET` (a datagram socket path; a leading `@` means the Linux
abstract namespace) and, with `WatchdogSec=`, `$WATCHDOG_USEC`. The protocol is one
datagram of newline-separated `KEY=value` lines, so a socket and a send is all it takes —
no dependency to install on a host. Outside systemd (no `$NOTIFY_SOCKET`) every call is a
no-op, so `watch` behaves the same from a shell.

The controller sends READY=1 after its first cycle that converged (or was refused with the
previous enforcement kept — the agent is up either way), STATUS=<revision: condition>
after every cycle, WATCHDOG=1 from a thread at half the watchdog period while the loop is
alive, and STOPPING=1 when SIGTERM/SIGINT is received.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("bpfpolicy.controller")


@dataclass(frozen=True)
class NotifyTarget:
    """Where to send, and how often systemd expects a watchdog ping (None: no watchdog)."""

    address: str
    watchdog_seconds: float | None


def target_from_env(env: dict[str, str] | None = None) -> NotifyTarget | None:
    """The systemd notify target from the environment, or None when not under systemd.

    `$WATCHDOG_PID`, when set, must be our pid (systemd sets it for the main process);
    otherwise the watchdog belongs to another process and we must not ping it."""
    env = dict(os.environ) if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    watchdog: float | None = None
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
        watchdog = int(usec) / 1_000_000
    return NotifyTarget(address=address, watchdog_seconds=watchdog)


def _socket_address(address: str) -> str | bytes:
    """`@name` is the abstract namespace: a leading NUL byte on the wire."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


class Notifier:
    """Sends sd_notify datagrams; every failure is logged once and otherwise ignored —
    a lost notification must never stop the controller."""

    def __init__(self, target: NotifyTarget | None) -> None:
        self.target = target
        self._ready_sent = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._warned = False
        self._cycle_started: float | None = None

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(target_from_env())

    def send(self, *lines: str) -> bool:
        if self.target is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, _socket_address(self.target.address))
            return True
        except OSError as e:
            if not self._warned:
                log.warning("sd_notify to %s failed: %s", self.target.address, e)
                self._warned = True
            return False

    def cycle_done(self, status: str, converged: bool) -> None:
        """After each cycle: STATUS always; READY=1 the first time the agent is up."""
        status_line = "STATUS=" + status.replace("\n", " ")[:200]
        with self._lock:
            self._cycle_started = None
            if converged and not self._ready_sent:
                self._ready_sent = self.send("READY=1", status_line)
                return
        self.send(status_line)

    def stopping(self) -> None:
        self._stop.set()
        self.send("STOPPING=1", "STATUS=stopping; enforcement left in place")

    def cycle_started(self) -> None:
        with self._lock:
            self._cycle_started = time.monotonic()

    def _loop_healthy(self) -> bool:
        """Idle between cycles, or inside a cycle younger than the watchdog period."""
        assert self.target is not None and self.target.watchdog_seconds is not None
        with self._lock:
            started = self._cycle_started
        return started is None or time.monotonic() - started < self.target.watchdog_seconds

    def start_watchdog(self) -> threading.Thread | None:
        """Ping WATCHDOG=1 every half period from a daemon thread until `stopping()`.

        The ping reflects the loop, not the thread: it is withheld while one cycle has run
        longer than the watchdog period, so systemd restarts a controller wedged in a
        cycle (enforcement stays pinned; the restart adopts it)."""
        if self.target is None or self.target.watchdog_seconds is None:
            return None
        period = self.target.watchdog_seconds / 2

        def loop() -> None:
            while not self._stop.wait(period):
                if self._loop_healthy():
                    self.send("WATCHDOG=1")

        thread = threading.Thread(target=loop, name="sd-notify-watchdog", daemon=True)
        thread.start()
        return thread
