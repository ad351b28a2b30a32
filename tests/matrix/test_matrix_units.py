"""Kernel-matrix pieces that need no VM, no root and no network: Debian version
ordering, dependency parsing, artifact discovery, the initramfs writer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bpfpolicy.matrix.artifacts import compile_failure, discover
from bpfpolicy.matrix.guest import Cpio
from bpfpolicy.matrix.kernels import _debian_version_key, _dep_name


def test_debian_versions_order_numerically() -> None:
    versions = ["5.10.223-1", "5.10.262-1", "5.10.9-1"]
    assert max(versions, key=_debian_version_key) == "5.10.262-1"
    assert max(["6.12.117-1", "6.12.118-1"], key=_debian_version_key) == "6.12.118-1"


def test_dependency_names_and_versions() -> None:
    assert _dep_name("linux-image-6.1.0-56-amd64 (= 6.1.192-2)") == ("linux-image-6.1.0-56-amd64", "6.1.192-2")
    assert _dep_name(" linux-base-amd64") == ("linux-base-amd64", None)
    assert _dep_name("dracut | initramfs-tools (>= 0.120)")[0] == "dracut"


def test_discover_names_from_manifest_and_synthesises_load_tests(tmp_path: Path) -> None:
    a = tmp_path / "XDPBlocklist" / "edge"
    a.mkdir(parents=True)
    (a / "manifest.json").write_text(json.dumps({"kind": "XDPBlocklist", "name": "edge"}))
    (a / "kernel-test.txt").write_text("object prog.bpf.o\n")
    b = tmp_path / "loose"
    b.mkdir()
    (b / "manifest.json").write_text("{}")
    (b / "prog.o").write_bytes(b"\x7fELF")
    empty = tmp_path / "Seccomp" / "nothing"
    empty.mkdir(parents=True)
    (empty / "manifest.json").write_text(json.dumps({"kind": "Seccomp", "name": "nothing"}))
    (tmp_path / ".edge.tmp123").mkdir()  # Artifact.write's half-written temp dir
    (tmp_path / ".edge.tmp123" / "kernel-test.txt").write_text("object x.o\n")

    found, nothing = discover(tmp_path)
    by_name = {f.name: f for f in found}
    assert set(by_name) == {"XDPBlocklist/edge", "loose"}
    assert by_name["XDPBlocklist/edge"].script == "object prog.bpf.o\n"
    assert by_name["loose"].synthesized and "object prog.o" in by_name["loose"].script
    assert nothing == [empty.resolve()]


def test_compile_refusals_for_missing_kernel_features_are_skips() -> None:
    assert compile_failure("TracingPolicy/x", "kernel 6.18 lacks bpf_lsm (BPF LSM ...)").error_status == "skip"
    assert compile_failure("TracingPolicy/x", "spec: nothing to compile").error_status == "fail"
    assert compile_failure("Tracing Policy/x y", "boom").name == "Tracing_Policy/x_y"


def test_initramfs_is_a_cpio_the_system_tool_reads(tmp_path: Path) -> None:
    c = Cpio()
    c.dir("bin")
    c.file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    c.file("deep/er/file.txt", b"x" * 5)
    c.symlink("bin/sh", "busybox")
    c.chardev("dev/console", 5, 1)
    archive = tmp_path / "initrd.cpio"
    archive.write_bytes(c.finish())
    try:
        listing = subprocess.run(["cpio", "-itv", "-F", str(archive)], capture_output=True, text=True, check=True)
    except FileNotFoundError:
        pytest.skip("cpio(1) not installed")
    out = listing.stdout
    for name in ("bin/tool", "deep/er/file.txt", "deep/er", "bin/sh -> busybox", "dev/console"):
        assert name in out, out
    assert "crw-------" in out  # /dev/console as a character device, no root needed


def test_live_traffic_is_its_own_cell_part() -> None:
    from bpfpolicy.matrix.results import StepResult, cell, cell_text

    steps = [StepResult("6.12", "a", 2, "object", "ok", ""), StepResult("6.12", "a", 3, "prog-run", "ok", ""),
             StepResult("6.12", "a", 4, "live", "ok", ""), StepResult("6.12", "a", 5, "live", "fail", "")]
    counts = cell(steps)
    assert counts["live"] == {"ok": 1, "fail": 1, "skip": 0}
    assert cell_text(counts, markup=False) == "L ok  B ok  live FAIL 1/2"


def test_kernel_modules_come_with_their_dependencies(tmp_path: Path) -> None:
    from bpfpolicy.matrix.kernels import _with_dependencies

    (tmp_path / "modules.dep").write_text(
        "kernel/drivers/net/veth.ko.xz: kernel/net/core/page_pool.ko.xz\n"
        "kernel/net/core/page_pool.ko.xz:\nkernel/net/sched/cls_bpf.ko.xz:\n")
    assert _with_dependencies(tmp_path, ("cls_bpf", "veth")) == ["cls_bpf", "page_pool", "veth"]
    assert _with_dependencies(tmp_path / "missing", ("veth",)) == ["veth"]


def test_arm64_members_have_their_own_cache_and_machine(tmp_path: Path) -> None:
    from bpfpolicy.matrix.guest import qemu_command
    from bpfpolicy.matrix.kernels import KERNELS, Kernel

    spec = KERNELS["6.12"].for_arch("arm64")
    assert spec.dir.name == "6.12-arm64" and KERNELS["6.12"].dir.name == "6.12"
    cmd = qemu_command(Kernel(spec, tmp_path / "vmlinuz", [], "6.12.1-arm64", "p"), tmp_path / "initrd", "tcg")
    assert cmd[0] == "qemu-system-aarch64" and cmd[cmd.index("-M") + 1] == "virt"
    assert "console=ttyAMA0" in cmd[cmd.index("-append") + 1]
