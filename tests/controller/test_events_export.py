"""The events export: a real `bpfpolicy watch` is the one reader of the ring buffers and
writes a rotated JSON-lines export; `bpfpolicy events` reads it with filters; real UDP
datagrams dropped by a NetworkPolicy on a veth, real processes under a TracingPolicy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import BPFPOLICY, REPO, run_cli, udp_received

NETPOL = """\
apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata:
  name: deny-peer
spec:
  endpointSelector:
    matchLabels: {{app: ex}}
  ingressDeny:
    - fromCIDR: [{peer}/32]
"""
TRACEPOINT = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: tp-openat
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    selectors:
    - matchBinaries:
      - operator: In
        values: [{binary}]
"""


def _config(ctl, extra: str, veth=None) -> None:  # noqa: ANN001
    text = "selfHeal: true\ninterval: 1\n" + extra
    if veth is not None:
        text += ("endpoints:\n  - name: ep\n    labels: {app: ex}\n"
                 f"    interfaces: [{{name: {veth.if_a}, netns: {veth.ns_a}}}]\n"
                 f"    addresses: [{veth.ip4_a}]\n")
    Path(ctl.env["BPFPOLICY_CONFIG"]).write_text(text)


class Watch:
    """`bpfpolicy watch SRC` as a subprocess, stopped with SIGTERM."""

    def __init__(self, ctl, src: Path) -> None:  # noqa: ANN001
        self.proc = subprocess.Popen([*BPFPOLICY, "watch", str(src)], env=ctl.env, cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]


def _until(pred: Callable[[], object], trigger: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trigger()
        got = pred()
        if got:
            return got
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def _lines(path: Path) -> list[dict]:
    """The complete lines (a line the exporter is still writing has no newline yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(x) for x in complete.splitlines() if x.strip()]


@pytest.fixture
def netpol_watch(ctl, veth, tmp_path: Path):  # noqa: ANN001, ANN201
    """A running `watch` enforcing deny-peer on the veth; export rotated small."""
    _config(ctl, "exportMaxBytes: 4096\nexportKeep: 3\n", veth)
    src = tmp_path / "np"
    src.mkdir()
    (src / "np.yaml").write_text(NETPOL.format(peer=veth.ip4_b))
    w = Watch(ctl, src)
    export = ctl.state_dir / "events" / "export.jsonl"
    try:
        yield w, export
    finally:
        err = w.stop()
        assert "Traceback" not in err, err


@pytest.mark.kernel
def test_drops_exported_with_rule_location_rotated_0600(ctl, veth, netpol_watch) -> None:  # noqa: ANN001
    w, export = netpol_watch
    drops = lambda: [e for e in _lines(export) if e.get("remote") == veth.ip4_b]  # noqa: E731
    _until(drops, lambda: udp_received(veth, count=2, wait=0.1), "a drop in the export")
    ev = drops()[0]
    assert ev["policy"] == "NetworkPolicy/deny-peer" and ev["action"] == "deny"
    assert ev["rule"] == "NetworkPolicy/deny-peer:spec.ingressDeny[0]"
    assert ev["where"].startswith(str(Path("np.yaml"))) or ev["where"].split(":")[0].endswith("np.yaml")
    assert ev["where"].count(":") >= 2  # file:line:col
    # enough drops to rotate a 4 KiB export several times
    files = lambda: sorted(export.parent.glob("export.jsonl*"))  # noqa: E731
    _until(lambda: export.with_name("export.jsonl.2").exists(),
           lambda: udp_received(veth, count=20, wait=0.05), "rotation")
    data = [f for f in files() if not f.name.endswith(".lock")]
    assert len(data) <= 3, data
    for f in data:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert f.stat().st_size <= 4096
    # `events` reads the export (the controller is running): filters, compact
    # each probe binds a fresh port; the first may be rotated away, and the live file may
    # have just been rotated (empty): the newest drop of the live file or its backups
    newest_first = [export, *(export.with_name(f"export.jsonl.{i}") for i in (1, 2))]
    port = next(e["lport"] for f in newest_first if f.exists()
                for e in reversed(_lines(f)) if e.get("remote") == veth.ip4_b)
    res = run_cli(ctl, "events", "--source", "kernel", "--verdict", "deny", "--ip", veth.ip4_b,
                  "--port", str(port), "--since", "10m")
    assert res.returncode == 0, res.stderr
    got = [json.loads(x) for x in res.stdout.splitlines()]
    assert got and all(e["remote"] == veth.ip4_b and e["action"] == "deny" for e in got)
    assert not run_cli(ctl, "events", "--verdict", "allow", "--source", "kernel").stdout.strip()
    assert not run_cli(ctl, "events", "--source", "kernel", "--until", "1h").stdout.strip()
    compact = run_cli(ctl, "events", "-o", "compact", "--source", "kernel", "--count", "1")
    assert compact.returncode == 0, compact.stderr
    line = compact.stdout.strip()
    assert line.count("\n") == 0 and "DENY UDP" in line and "spec.ingressDeny[0]" in line and "np.yaml:" in line


@pytest.mark.parametrize("bad", [("--since", "garbage"), ("--until", "2024-13-01T00:00:00Z"),
                                 ("--since", "1y"), ("--port", "70000")])
def test_bad_filter_values_are_usage_errors(tmp_path: Path, bad: tuple[str, str]) -> None:
    env = {**os.environ, "BPFPOLICY_STATE_DIR": str(tmp_path), "BPFPOLICY_CONFIG": str(tmp_path / "c.yaml")}
    (tmp_path / "c.yaml").write_text("interval: 1\n")
    res = subprocess.run([*BPFPOLICY, "events", *bad], env=env, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Invalid value" in res.stderr and "Traceback" not in res.stderr


def test_since_parses_rfc3339_and_durations() -> None:
    from bpfpolicy.controller.stream import epoch, parse_when

    assert parse_when("2024-05-01T12:00:00Z") == epoch("2024-05-01T12:00:00.000000001Z") == 1714564800.0
    assert parse_when("1h30m", now=10_000) == 10_000 - 5400
    assert parse_when("500ms", now=10) == 9.5
    for bad in ("garbage", "", "1y", "12:00"):
        with pytest.raises(ValueError):
            parse_when(bad)


def test_export_config_is_validated(tmp_path: Path) -> None:
    from bpfpolicy.controller.config import load_config
    from bpfpolicy.policy.diagnostics import PolicyError

    (tmp_path / "c.yaml").write_text("exportKeep: 0\nexportFormat: xml\nexportFile: rel/x\n")
    with pytest.raises(PolicyError) as e:
        load_config(tmp_path / "c.yaml", env={})
    msgs = {(d.line, d.path): d.message for d in e.value.diagnostics}
    assert msgs[(1, "exportKeep")].startswith("must be an integer in [1,")
    assert msgs[(2, "exportFormat")] == "must be one of bpfpolicy, tetragon"
    assert msgs[(3, "exportFile")] == "must be an absolute path"


@pytest.mark.kernel
def test_tetragon_format_is_read_by_jq(ctl, tmp_path: Path) -> None:  # noqa: ANN001
    if shutil.which("jq") is None:
        pytest.skip("jq not installed (scripts/setup.sh installs it)")
    _config(ctl, "exportFormat: tetragon\n")
    src = tmp_path / "tp"
    src.mkdir()
    binary = shutil.which("cat")
    (src / "tp.yaml").write_text(TRACEPOINT.format(binary=binary))
    w = Watch(ctl, src)
    export = ctl.state_dir / "events" / "export.jsonl"
    try:
        _until(lambda: any("process_tracepoint" in e for e in _lines(export)),
               lambda: subprocess.run([binary, "/etc/hostname"], capture_output=True), "a tracepoint event")
    finally:
        err = w.stop()
    assert "Traceback" not in err, err
    res = subprocess.run(["jq", "-r", "select(.process_tracepoint) | .process_tracepoint.policy_name", str(export)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "tp-openat" in res.stdout.split()
    first = next(e for e in _lines(export) if "process_tracepoint" in e)
    assert first["process_tracepoint"]["subsys"] == "syscalls" and first["node_name"]
