"""The README's `bpfpolicy kernel-test … policies/` works as written: without
--inventory the endpoint inventory comes from the host config or, here, the
repository's examples/host-config.yaml (the host member is the fast stand-in for the
QEMU kernels)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.kernel
def test_readme_kernel_test_without_inventory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF loads)")
    env = {**os.environ, "BPFPOLICY_CONFIG": str(tmp_path / "absent.yaml")}
    res = subprocess.run([sys.executable, "-m", "bpfpolicy", "kernel-test", "--kernels", "host",
                          "--out", str(tmp_path / "out"), "policies/"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"endpoint inventory from {REPO / 'examples' / 'host-config.yaml'}" in res.stderr
    assert "NetworkPolicy/demo" in res.stdout and "all kernels ok" in res.stdout
