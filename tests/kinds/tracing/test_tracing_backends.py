"""What runs where (issue #14): per-hook backend notes and backend-change warnings from
validate/compile, --strict-backend, feature facts read from the target kernel itself
(its config, lsm=, System.map's error-injection entries), and compile --kernel X never
verifying on a host that is not X. Everything runs the real CLI on real policies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bpfpolicy.kinds.target import (
    MATRIX_LSM,
    error_injection_from_system_map,
    matrix_facts,
    parse_config,
    running_kernel_version,
)
from bpfpolicy.kinds.tracing.features import features_from_facts, injectable

ROOT = Path(__file__).resolve().parents[3]
POLICIES = ROOT / "policies" / "tracing"
HOST = f"{running_kernel_version()[0]}.{running_kernel_version()[1]}"
K612 = matrix_facts((6, 12))
needs_612 = pytest.mark.skipif(K612.config is None, reason=f"no Debian 6.12 config in {K612.where}")

LINKAT_OVERRIDE = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata: {name: sys-linkat-passwd}
spec:
  kprobes:
  - call: sys_linkat
    syscall: true
    args: [{index: 1, type: string}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: [/etc/passwd]}]
      matchActions: [{action: Override, argError: -1}]
"""
SECURITY_SIGKILL = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata: {name: mkdir-kill}
spec:
  kprobes:
  - call: security_inode_mkdir
    syscall: false
    args: [{index: 0, type: nop}]
    selectors:
    - matchActions: [{action: Sigkill}]
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bpfpolicy", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- say what runs where

def test_validate_notes_each_hook_and_warns_on_kprobe_to_tracepoint() -> None:
    """This host has no kprobes: sys_* kprobes run as syscall tracepoints, said per hook."""
    r = cli("validate", str(POLICIES / "sensitive-files.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"sensitive-files\.yaml:\d+:\d+: spec\.kprobes\[0\]: note: sys_openat runs as "
                     rf"tracepoint syscalls/sys_enter_openat on kernel {HOST}", r.stdout), r.stdout
    assert "warning: backend change: kprobe → tracepoint" in r.stdout
    assert "raw user arguments" in r.stdout


def test_strict_backend_turns_the_change_into_an_error() -> None:
    r = cli("validate", "--strict-backend", str(POLICIES))
    assert r.returncode == 1
    assert re.search(r"spec\.kprobes\[0\]: backend change: kprobe → tracepoint", r.stdout)
    assert "0 warning(s)" in r.stderr and "error(s)" in r.stderr


@needs_612
def test_compile_for_612_notes_kprobe_and_warns_kprobe_to_lsm(tmp_path: Path) -> None:
    """6.12 has kprobes (a plain note), and security_* Sigkill becomes BPF LSM (a warning
    naming lsm= and the earlier-LSM rule); --strict-backend fails the compile."""
    pol = write(tmp_path, "kill.yaml", SECURITY_SIGKILL)
    r = cli("compile", "--dry-run", "--kernel", "6.12", "--format", "json", str(POLICIES / "sensitive-files.yaml"), str(pol))
    assert r.returncode == 0, r.stdout + r.stderr
    diags = json.loads(r.stdout)["diagnostics"]
    notes = [d["message"] for d in diags if d["severity"] == "note"]
    assert any(m.startswith("sys_openat runs as kprobe __x64_sys_openat on kernel 6.12") for m in notes), notes
    warn = [d for d in diags if d["severity"] == "warning"]
    assert len(warn) == 1 and warn[0]["path"] == "spec.kprobes[0]" and warn[0]["file"].endswith("kill.yaml")
    assert "kprobe → lsm" in warn[0]["message"] and "lsm=" in warn[0]["message"]
    assert "no earlier LSM" in warn[0]["message"]
    strict = cli("compile", "--dry-run", "--kernel", "6.12", "--strict-backend", str(pol))
    assert strict.returncode == 1 and "backend change: kprobe → lsm" in strict.stdout


# ---------------------------------------------------------------- facts from the kernel

def test_system_map_error_injection_entries_and_config_parse() -> None:
    smap = ("ffffffff81000000 T _stext\n"
            "ffffffff82a1b2c0 d _eil_addr___x64_sys_openat\n"
            "ffffffff82a1b2d0 d _eil_addr_should_failslab\n")
    assert error_injection_from_system_map(smap) == {"__x64_sys_openat", "should_failslab"}
    cfg = parse_config("CONFIG_KPROBES=y\n# CONFIG_FUNCTION_ERROR_INJECTION is not set\nCONFIG_LSM=\"a,bpf\"\n")
    assert cfg == {"CONFIG_KPROBES": "y", "CONFIG_LSM": '"a,bpf"'}


def test_matrix_lsm_is_the_guest_boot_command_line() -> None:
    from bpfpolicy.matrix.guest import CMDLINE

    assert f"lsm={MATRIX_LSM} " in CMDLINE


@needs_612
def test_612_features_come_from_its_own_config() -> None:
    """Debian 6.12 is built without CONFIG_FUNCTION_ERROR_INJECTION: no syscall is
    modifiable there (the `__x64_sys_linkat() is not modifiable` load failure)."""
    f = features_from_facts(K612)
    assert f["kprobes"] and f["trampoline"] and f["bpf_lsm"] and not f["kprobe_override"]
    assert not f["error_injection"] and "CONFIG_FUNCTION_ERROR_INJECTION" in f["reasons"]["error_injection"]
    assert str(K612.config_source) in f["source"]
    assert injectable(f, "__x64_sys_linkat") is False


@needs_612
def test_linkat_override_for_612_fails_at_compile_with_the_reason(tmp_path: Path) -> None:
    pol = write(tmp_path, "linkat.yaml", LINKAT_OVERRIDE)
    r = cli("compile", "--dry-run", "--kernel", "6.12", str(pol))
    assert r.returncode == 1
    line = next(x for x in r.stdout.splitlines() if "linkat.yaml:" in x)
    assert re.match(r".*linkat\.yaml:11:\d+: spec\.kprobes\[0\]\.selectors\[0\]\.matchActions\[0\]\.action: "
                    "Override on syscall linkat", line), line
    assert "CONFIG_FUNCTION_ERROR_INJECTION is not set in" in line and "path_link" in line


def test_unknown_error_injection_list_refuses_override(tmp_path: Path) -> None:
    """A kernel whose error-injection list cannot be read: refuse, don't compile."""
    from bpfpolicy.kinds.base import CompileContext
    from bpfpolicy.kinds.tracing.lower import Lowering
    from bpfpolicy.policy.diagnostics import PolicyError
    from bpfpolicy.policy.load import load_paths

    docs, _ = load_paths([write(tmp_path, "linkat.yaml", LINKAT_OVERRIDE)])
    feats = {"kernel": "9.9", "kprobes": True, "trampoline": True, "error_injection": True, "btf": True,
             "syscall_tracepoints": True, "error_injection_where": "unknown",
             "reasons": {"error_injection": "no System.map"}}
    with pytest.raises(PolicyError) as e:
        Lowering(docs[0], CompileContext(options={"features": feats}))
    msg = str(e.value)
    assert "cannot tell whether kernel 9.9 may modify it" in msg and "__x64_sys_linkat" in msg


# ---------------------------------------------------------------- verify only on X

@pytest.mark.skipif(running_kernel_version() == (6, 12), reason="the host is 6.12")
def test_dry_run_for_another_kernel_offers_the_guest(tmp_path: Path) -> None:
    r = cli("compile", "--dry-run", "--kernel", "6.12", str(POLICIES / "forbidden-mkdir.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    import os

    if os.geteuid() == 0:
        assert "verification needs the target kernel: run `bpfpolicy kernel-test --kernels 6.12`" in r.stderr
