"""TracingPolicy for arm64 from an x86_64 host (issue #16): vmlinux.h and hook facts come
from the target kernel's own BTF (the arm64 image in the matrix cache), a syscall arm64
does not have is refused at its line, and a fetched kernel keeps its config/System.map."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bpfpolicy.kinds.target import Target, btf_in_raw_image
from bpfpolicy.matrix.kernels import FACT_FILES, KERNELS, FetchError, fetch

ROOT = Path(__file__).resolve().parents[2]
OPEN_POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: x86-open
spec:
  kprobes:
  - call: sys_open
    syscall: true
"""


def _kernel(arch: str):
    try:
        return fetch(KERNELS["6.12"].for_arch(arch))
    except FetchError as e:
        pytest.skip(f"6.12 {arch} kernel not cached and not fetchable here: {e}")


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_fetched_kernel_keeps_config_and_system_map(arch: str) -> None:
    kernel = _kernel(arch)
    for name in FACT_FILES:
        assert (kernel.spec.dir / name).is_file(), name
    config = (kernel.spec.dir / "config").read_text()
    assert "CONFIG_DEBUG_INFO_BTF=y" in config
    facts = Target(kernel.version, "aarch64" if arch == "arm64" else "x86_64").facts()
    assert facts.release == kernel.release and facts.config is not None


def test_arm64_btf_is_found_in_the_raw_image_and_dumps_arm64_types() -> None:
    kernel = _kernel("arm64")
    blob = btf_in_raw_image(kernel.vmlinuz.read_bytes())
    assert blob is not None and blob[:2] == b"\x9f\xeb"
    path = Target(kernel.version, "aarch64").btf
    assert path is not None and path.read_bytes() == blob
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(path), "format", "c"],
                         capture_output=True, text=True, check=True).stdout
    assert "struct user_pt_regs {" in out


def _compile(policy: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv/bin/bpfpolicy"), "compile", "--arch", "aarch64", *args,
                           "--out", str(out), str(policy)], capture_output=True, text=True, check=False)


def test_tracing_policy_compiles_for_arm64_kernel(tmp_path: Path) -> None:
    _kernel("arm64")
    proc = _compile(ROOT / "policies/tracing/sensitive-files.yaml", tmp_path, "--kernel", "6.12")
    assert proc.returncode == 0, proc.stderr
    assert "__arm64_sys_openat" in proc.stdout + proc.stderr
    obj = next(tmp_path.rglob("*.o")).read_bytes()
    assert obj[:4] == b"\x7fELF" and int.from_bytes(obj[18:20], "little") == 247  # EM_BPF


def test_x86_only_syscall_is_refused_for_arm64_at_its_line(tmp_path: Path) -> None:
    _kernel("arm64")
    policy = tmp_path / "open.yaml"
    policy.write_text(OPEN_POLICY)
    proc = _compile(policy, tmp_path / "out", "--kernel", "6.12")
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert f"{policy}:7:5: spec.kprobes[0].call: syscall open does not exist on aarch64" in proc.stdout + proc.stderr


def test_arm64_without_a_kernel_is_refused_naming_why(tmp_path: Path) -> None:
    proc = _compile(ROOT / "policies/tracing/sensitive-files.yaml", tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "needs the BTF of an aarch64 kernel and no --kernel was given" in proc.stdout + proc.stderr
