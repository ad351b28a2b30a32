"""`kernel.pins`: a pinned object opens as a scoped fd that is closed on every exit."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.kernel_fixtures import require_kernel

XDP_PASS_C = """
#define SEC(name) __attribute__((section(name), used))
SEC("xdp") int pass(void *ctx) { return 2; }
char LICENSE[] SEC("license") = "GPL";
"""


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_pinned_closes_its_fd_on_exit_and_on_error(tmp_path: Path, bpffs_dir: str) -> None:
    require_kernel()
    if not shutil.which("clang"):
        pytest.skip("clang not installed")
    from bpfpolicy.kernel import bpf
    from bpfpolicy.kernel.libbpf import BpfObject
    from bpfpolicy.kernel.pins import pinned, pinned_prog_id

    (tmp_path / "p.c").write_text(XDP_PASS_C)
    subprocess.run(["clang", "-target", "bpf", "-O2", "-c", str(tmp_path / "p.c"), "-o", str(tmp_path / "p.o")],
                   check=True)
    pin = os.path.join(bpffs_dir, "prog_pass")
    with BpfObject.open_file(tmp_path / "p.o") as obj:
        obj.load()
        prog = obj.program("pass")
        bpf.obj_pin(prog.fd, pin)
        want = bpf.prog_info(prog.fd)["id"]
        before = _open_fds()
        with pinned(pin) as fd:
            assert _open_fds() == before + 1
            assert bpf.prog_info(fd)["id"] == want
        assert _open_fds() == before
        with pytest.raises(RuntimeError), pinned(pin):
            raise RuntimeError("boom")
        assert _open_fds() == before
        assert pinned_prog_id(pin) == want
        assert pinned_prog_id(str(tmp_path / "absent")) is None
        assert _open_fds() == before
