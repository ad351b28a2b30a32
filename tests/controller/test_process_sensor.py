"""The process sensor through the controller: `bpfpolicy apply policies/tracing` also
applies `TracingPolicy/bpfpolicy-process-sensor` (sched_process_exec/exit tracepoints);
a command run afterwards is streamed by `bpfpolicy events --follow` as `process_exec`
with its binary, its arguments and a `parent_exec_id` equal to the exec_id of the shell
that started it; jq (Tetragon's documented way to read events) selects it from the
output; `destroy` removes the sensor's pins and inventory entry with the policies."""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import time
from typing import Any

import pytest

from conftest import BPFPOLICY, REPO, run_cli

SENSOR = "TracingPolicy/bpfpolicy-process-sensor"

pytestmark = pytest.mark.kernel


def _follow_until(cfg, marker: str, timeout: float = 40) -> list[dict[str, Any]]:  # noqa: ANN001
    """Stream events while re-running `sh -c '/bin/echo MARKER'` until both the sh and
    its echo child arrive as process_exec (retries cover the stream's start-up)."""
    proc = subprocess.Popen([*BPFPOLICY, "events", "--follow", "--source", "kernel"], env=cfg.env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    buf, found = b"", []
    deadline = time.monotonic() + timeout
    try:
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        while time.monotonic() < deadline and proc.poll() is None:
            subprocess.run(["/bin/sh", "-c", f"/bin/echo {marker} >/dev/null; :"], check=True)
            end = time.monotonic() + 0.7
            while (left := end - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
                buf += os.read(fd, 1 << 20)
            *lines, buf = buf.split(b"\n")
            found += [ev for ev in map(json.loads, lines) if ev.get("event") == "process_exec"
                      and marker in json.dumps(ev.get("process", {}).get("arguments", ""))]
            if any(e["process"]["binary"] == "/bin/echo" for e in found):
                return found
    finally:
        _stop(proc)
    pytest.fail(f"no process_exec for {marker}: {proc.stderr.read().decode(errors='replace')[-2000:]}")  # type: ignore[union-attr]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM; the pipe closed first so a follower blocked writing a busy host's events
    sees EPIPE instead of waiting for a reader; SIGKILL if it still lingers."""
    proc.terminate()
    proc.stdout.close()  # type: ignore[union-attr]
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_apply_streams_process_exec_and_destroy_removes_sensor(ctl) -> None:  # noqa: ANN001
    res = run_cli(ctl, "apply", str(REPO / "policies" / "tracing"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert SENSOR in res.stdout
    sensor_pins = ctl.bpffs_root / SENSOR
    assert sensor_pins.is_dir() and any(sensor_pins.iterdir())

    marker = f"x13-{secrets.token_hex(4)}"
    events = _follow_until(ctl, marker)
    echo = next(e for e in events if e["process"]["binary"] == "/bin/echo")
    assert echo["policy"] == SENSOR and echo["source"] == "kernel"
    assert marker in echo["process"]["arguments"]
    assert echo["parent"]["binary"] in ("/bin/sh", "/usr/bin/sh", "/usr/bin/dash", "/bin/dash")
    assert echo["process"]["parent_exec_id"] == echo["parent"]["exec_id"]
    shells = [e for e in events if e["process"]["exec_id"] == echo["process"]["parent_exec_id"]]
    assert shells, "the parent's own process_exec carries the exec_id the child links to"

    jq = subprocess.run(["jq", "-r", 'select(.event == "process_exec") | .process.binary'],
                        input="\n".join(json.dumps(e) for e in events), capture_output=True, text=True, check=True)
    assert "/bin/echo" in jq.stdout.split()

    res = run_cli(ctl, "destroy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"removed {SENSOR}" in res.stdout + res.stderr
    assert not sensor_pins.exists()
    inventory = json.loads((ctl.state_dir / "inventory.json").read_text() or "{}")
    assert not any(SENSOR in json.dumps(k) for k in inventory)
