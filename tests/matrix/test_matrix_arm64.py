"""Kernel matrix on arm64: Debian's 6.12 arm64 kernel under qemu-system-aarch64 (`virt`,
TCG), with the runner cross-built against multiarch libbpf and an arm64 busybox. The
fixture programs are arch-neutral BPF except the hand-assembled x86_64 seccomp filter,
which is left out here.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from bpfpolicy.matrix import discover, run_matrix
from bpfpolicy.matrix.guest import ARCHES, GuestError

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import kt_fixtures as fixture_build  # noqa: E402  (tests/matrix/fixtures/kt_fixtures.py)

ARM64_FIXTURES = ("xdp_udp9", "lsm_file_open", "attach_kinds")


@pytest.fixture(scope="module")
def arm64_report(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("BPFPOLICY_KERNEL_TEST_ARM64") != "1":
        pytest.skip("arm64 guests are opt-in (the CI smoke is one x86_64 kernel): "
                    "BPFPOLICY_KERNEL_TEST_ARM64=1, as `make kernel-matrix ARCH=arm64` sets")
    tools = ARCHES["arm64"]
    missing = [t for t in (tools.qemu, tools.gcc) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed ({tools.setup_hint})")
    try:
        arts_dir = fixture_build.build(tmp_path_factory.mktemp("kt-arm64"), ARM64_FIXTURES)
    except fixture_build.FixtureError as e:
        pytest.skip(str(e))
    arts, _ = discover(arts_dir)
    try:
        report = run_matrix(["6.12"], lambda _v: arts, tmp_path_factory.mktemp("kt-arm64-out"), arch="arm64")
    except GuestError as e:
        pytest.skip(str(e))
    err = report.run("6.12").error
    if err and err.startswith("kernel unavailable"):
        pytest.skip(f"Debian 6.12 arm64 kernel not cached and not downloadable: {err}")
    assert err is None, (report.out_dir / "console-6.12.log").read_text()[-3000:]
    return report


@pytest.mark.vm
@pytest.mark.slow
def test_arm64_guest_runs_every_fixture_step(arm64_report) -> None:
    run = arm64_report.run("6.12")
    assert run.release.endswith("-arm64"), run.release
    assert run.accel == "tcg"
    assert not arm64_report.failures, arm64_report.failures
    by = {(r.artifact, r.line): r for r in run.results}
    assert "delivered 0 (want dropped)" in by[("Fixture/xdp_udp9", 13)].detail  # live XDP drop
    assert by[("Fixture/lsm_file_open", 5)].status == "ok"  # the LSM hook denies in the guest
    assert all(r.status == "ok" for r in run.results if r.artifact == "Fixture/attach_kinds")
