"""The systemd unit as `bpfpolicy install-service` writes it: `systemd-analyze verify`
clean, `systemd-analyze security` at most 4.0 (OK), and its CapabilityBoundingSet enough
to load and attach real policies (run under `setpriv` with exactly that bounding set) —
and not padded: without CAP_SYS_ADMIN the setns() into an interface's namespace fails.

systemd is not PID 1 on this host, so the unit is not started here: the sandbox options
other than the capability set are checked by systemd-analyze, not by running them."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BPFPOLICY, REPO

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt install systemd)")
MAX_EXPOSURE = 4.0


def _install(prefix: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    exe = REPO / ".venv/bin/bpfpolicy"
    args = ["--executable", str(exe)] if exe.exists() else []
    return subprocess.run([*BPFPOLICY, "install-service", "--prefix", str(prefix), *args, *extra],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    r = _install(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp_path / "etc/systemd/system/bpfpolicy.service"


@needs_analyze
def test_unit_verifies_clean(installed: Path) -> None:
    r = subprocess.run([ANALYZE, "verify", str(installed)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


@needs_analyze
def test_unit_exposure_is_ok(installed: Path) -> None:
    r = subprocess.run([ANALYZE, "security", "--offline=yes", str(installed)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, m.group(0)


def test_unit_points_at_the_real_executable(installed: Path) -> None:
    exec_start = next(ln for ln in installed.read_text().splitlines() if ln.startswith("ExecStart="))
    exe = Path(exec_start.removeprefix("ExecStart=").split()[0])
    assert exe.is_file() and exe.stat().st_mode & 0o111, exec_start
    text = installed.read_text()
    for line in ("Type=notify", "WatchdogSec=", "CacheDirectory=bpfpolicy",
                 "BPFPOLICY_CACHE=%C/bpfpolicy", "ProtectSystem=strict", "ReadWritePaths=/sys/fs/bpf"):
        assert line in text


def test_default_config_written_once_and_loads(installed: Path) -> None:
    from bpfpolicy.controller.config import load_config

    config = installed.parents[2] / "bpfpolicy/config.yaml"
    cfg = load_config(config, env={})
    assert cfg.source_dir == Path("/etc/bpfpolicy/policies")
    config.write_text("interval: 5s\n")
    assert _install(installed.parents[3]).returncode == 0
    assert config.read_text() == "interval: 5s\n"


def test_edited_unit_is_kept_without_force(installed: Path) -> None:
    prefix = installed.parents[3]
    installed.write_text(installed.read_text() + "\n# local tweak\n")
    edited = installed.read_text()
    r = _install(prefix)
    assert r.returncode != 0 and "edited" in r.stderr, r.stdout + r.stderr
    assert installed.read_text() == edited
    r = _install(prefix, "--force")
    assert r.returncode == 0 and "# local tweak" not in installed.read_text()


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    r = _install(tmp_path, "--dry-run")
    assert r.returncode == 0 and "create" in r.stdout, r.stdout + r.stderr
    assert not any(tmp_path.iterdir())


def _bounding_set(unit: Path) -> list[str]:
    line = next(ln for ln in unit.read_text().splitlines() if ln.startswith("CapabilityBoundingSet="))
    return line.split("=", 1)[1].split()


def _apply_with_caps(cfg, caps: list[str], src: Path) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    """`bpfpolicy apply` as root whose bounding set is exactly `caps` (what systemd's
    CapabilityBoundingSet= gives the service: after exec, root's permitted = bounding)."""
    spec = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
    return subprocess.run(["setpriv", f"--bounding-set={spec}", "--inh-caps=-all", "--", *BPFPOLICY,
                           "apply", str(src)], env=cfg.env, capture_output=True, text=True,
                          timeout=180, cwd=REPO)


XDP = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: caps}}
spec:
  interfaces: [{{name: {ifname}, netns: {netns}}}]
  deny:
    - name: listed
      sources: [192.0.2.1/32]
"""


@pytest.mark.kernel
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_bounding_set_loads_and_attaches(ctl, veth, tmp_path: Path) -> None:  # noqa: ANN001
    """XDP on a namespaced veth (setns + netlink attach) and a syscall TracingPolicy
    (tracepoint perf event) apply with the unit's set; without CAP_SYS_ADMIN they don't."""
    src = tmp_path / "policies"
    src.mkdir()
    (src / "caps.yaml").write_text(XDP.format(ifname=veth.if_a, netns=veth.ns_a))
    forbidden = f"/tmp/bpfpolicy-caps-{secrets.token_hex(3)}"
    tracing = (REPO / "policies/tracing/forbidden-mkdir.yaml").read_text()
    (src / "trace.yaml").write_text(tracing.replace("/tmp/bpfpolicy-forbidden", forbidden))
    caps = _bounding_set(REPO / "contrib/bpfpolicy.service")
    assert set(caps) <= {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"}, caps

    without_admin = _apply_with_caps(ctl, [c for c in caps if c != "CAP_SYS_ADMIN"], src)
    assert without_admin.returncode != 0
    assert "setns" in without_admin.stdout + without_admin.stderr, without_admin.stdout

    r = _apply_with_caps(ctl, caps, src)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "converged" in r.stdout, r.stdout


def test_host_requirements_named_once_and_checked_by_doctor() -> None:
    """scripts/setup.sh installs bpfpolicy/hostreqs.py's list; doctor reports each need."""
    from bpfpolicy.doctor import requirements
    from bpfpolicy.hostreqs import REQUIREMENTS, apt_packages

    listed = subprocess.run([sys.executable, str(REPO / "bpfpolicy/hostreqs.py")], capture_output=True,
                            text=True, check=True).stdout.split()
    assert listed == apt_packages() and "libbpf1" in listed and "clang" in listed
    assert "hostreqs.py" in (REPO / "scripts/setup.sh").read_text()
    rows = requirements()
    assert [r.name for r in rows] == [r.name for r in REQUIREMENTS]
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
