"""`bpfpolicy watch` under a systemd-like supervisor: the test binds the `$NOTIFY_SOCKET`
datagram socket itself (as systemd does for `Type=notify`), sets `$WATCHDOG_USEC`, runs
the real CLI on a real XDPBlocklist and reads what the agent sends: READY=1 after the
first cycle, STATUS with the revision, WATCHDOG=1 repeating at half the period, and
STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BPFPOLICY, REPO

pytestmark = pytest.mark.kernel

POLICY = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: notify}}
spec:
  interfaces: [{{name: {ifname}, netns: {netns}}}]
  deny:
    - name: listed
      sources: [192.0.2.1/32]
"""


def _receive_until(sock: socket.socket, done, timeout: float) -> list[tuple[float, str]]:  # noqa: ANN001
    """Datagrams (arrival time, text) until `done(messages)` or the timeout."""
    messages: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(messages):
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        messages.append((time.monotonic(), data.decode()))
    return messages


def _with(messages: list[tuple[float, str]], line: str) -> list[tuple[float, str]]:
    return [m for m in messages if line in m[1].splitlines()]


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_watch_speaks_sd_notify(ctl, veth, tmp_path: Path, abstract: bool) -> None:  # noqa: ANN001
    src = tmp_path / "policies"
    src.mkdir()
    (src / "notify.yaml").write_text(POLICY.format(ifname=veth.if_a, netns=veth.ns_a))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"bpfpolicy-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind(b"\0" + name.encode())
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    env = {**ctl.env, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"}  # 0.6 s
    proc = subprocess.Popen([*BPFPOLICY, "watch", str(src)], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        started = _receive_until(sock, lambda ms: bool(_with(ms, "READY=1")), timeout=90)
        ready = _with(started, "READY=1")
        assert ready, f"no READY=1; got {started}; agent: {_stop(proc)}"
        status = [ln for ln in ready[0][1].splitlines() if ln.startswith("STATUS=")]
        assert status and "dir@sha256:" in status[0] and status[0].endswith(": Ready"), ready

        later = _receive_until(sock, lambda ms: len(_with(ms, "WATCHDOG=1")) >= 4, timeout=5)
        pings = [t for t, _ in _with(started + later, "WATCHDOG=1")]
        assert len(pings) >= 4, f"watchdog pings: {started + later}"
        gaps = [b - a for a, b in zip(pings[-4:-1], pings[-3:], strict=True)]
        assert all(0.15 < g < 0.6 for g in gaps), f"half of 0.6 s expected, got {gaps}"

        proc.send_signal(signal.SIGTERM)
        tail = _receive_until(sock, lambda ms: bool(_with(ms, "STOPPING=1")), timeout=30)
        assert _with(tail, "STOPPING=1"), tail
        assert proc.wait(timeout=60) == 0
    finally:
        _stop(proc)
        sock.close()


def test_no_notify_socket_is_a_no_op() -> None:
    """Outside systemd nothing is sent and nothing fails."""
    from bpfpolicy.controller.notify import Notifier, target_from_env

    assert target_from_env({}) is None
    n = Notifier(None)
    assert n.send("READY=1") is False
    assert n.start_watchdog() is None


def test_watchdog_of_another_pid_is_not_ours() -> None:
    from bpfpolicy.controller.notify import target_from_env

    t = target_from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert t is not None and t.watchdog_seconds is None


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out or ""
