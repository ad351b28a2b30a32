"""One `vagrant up` of the locally built box (scripts/build-vagrant-box.sh 6.1) under TCG:
the Vagrantfile's trigger builds the bundle, the VM boots Debian bookworm's own kernel,
provisioning runs the bundle, and its RESULT lines are checked like a guest's console.

Slow (minutes under TCG) and not in the CI smoke; skipped with the reason when vagrant,
vagrant-libvirt, a running libvirtd or the box is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfpolicy.matrix.results import parse_console

ROOT = Path(__file__).resolve().parents[2]
BOX = "bpfpolicy/6.1"


def _vagrant_env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1", BPFPOLICY_VAGRANT_DRIVER="qemu",
                VAGRANT_DOTFILE_PATH=str(tmp_path / "dot-vagrant"), BPFPOLICY_VAGRANT_PREFIX="kttest_")


def _skip_unless_vagrant_can_run() -> None:
    if os.environ.get("BPFPOLICY_VAGRANT_TEST") != "1":
        pytest.skip("brings a VM up under TCG (~9 min): opt in with BPFPOLICY_VAGRANT_TEST=1 "
                    "(`make kernel-vagrant`)")
    if shutil.which("vagrant") is None or shutil.which("virsh") is None:
        pytest.skip("vagrant and libvirt are not installed (scripts/setup-matrix-dev.sh vagrant)")
    plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True, timeout=120)
    if "vagrant-libvirt" not in plugins.stdout:
        pytest.skip("the vagrant-libvirt plugin is not installed")
    virsh = subprocess.run(["virsh", "-c", "qemu:///system", "list"], capture_output=True, text=True, timeout=60)
    if virsh.returncode != 0:
        pytest.skip(f"libvirt cannot run here: {virsh.stderr.strip()[-300:]}")
    boxes = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True, timeout=120)
    if BOX not in boxes.stdout:
        pytest.skip(f"box {BOX} not built (scripts/build-vagrant-box.sh 6.1; no download needed)")


@pytest.mark.slow
@pytest.mark.vm
def test_vagrant_up_runs_the_bundle_on_the_box_kernel(tmp_path: Path) -> None:
    _skip_unless_vagrant_can_run()
    env = _vagrant_env(tmp_path)
    try:
        up = subprocess.run(["vagrant", "up", "k61", "--provider=libvirt"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1800)
        out = up.stdout + up.stderr
        assert "KT-KERNEL 6.1." in out, out[-4000:]
        run = parse_console("k61", out, [])
        fails = [r for r in run.results if r.status == "fail"]
        assert run.results and not fails, fails or out[-4000:]
        live = [r for r in run.results if r.step == "live"]
        assert live and all(r.status == "ok" for r in live), live
        assert up.returncode == 0, out[-4000:]
    finally:
        subprocess.run(["vagrant", "destroy", "-f", "k61"], cwd=ROOT, env=env, capture_output=True, timeout=600)
