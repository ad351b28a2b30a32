"""`kernel-test` shows each kernel's progress as it happens, not only the final table:
piped (CI logs) it prints one plain line per stage change on stderr — `host: running`,
then `host: done: N ok, 0 fail, M skip` as soon as the host's results arrive, before the
table; on a terminal the same rows are a rich Live table (arch, kernel, stage, results)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bpfpolicy.cli.kernel_test import Progress
from bpfpolicy.matrix.results import KernelRun, StepResult

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.kernel
def test_piped_progress_lines_precede_the_table(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF loads)")
    # One pipe for stdout and stderr: the order the reader sees is the order written.
    res = subprocess.run([sys.executable, "-m", "bpfpolicy", "kernel-test", "--kernels", "host",
                          "--out", str(tmp_path / "out"), "policies/"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    out = res.stdout
    assert res.returncode == 0, out
    running = out.index("kernel-test: host: running")
    done = re.search(r"kernel-test: host: done: (\d+) ok, 0 fail, \d+ skip \([\d.]+ s\)", out)
    table = out.index("bpfpolicy kernel-test")
    assert done is not None, out
    assert running < done.start() < table
    assert int(done[1]) > 0
    assert "all kernels ok" in out[table:]


def test_terminal_shows_a_live_row_per_kernel() -> None:
    buf = io.StringIO()
    progress = Progress(["6.12", "host"], "amd64")
    progress.console = Console(file=buf, force_terminal=True, width=100)
    run = KernelRun("host", seconds=1.5, results=[StepResult("host", "XDPBlocklist/edge", 1, "load", "ok", ""),
                                                  StepResult("host", "XDPBlocklist/edge", 2, "attach", "fail", "x")])
    with progress:
        progress.update("6.12", "booting", None)
        progress.update("host", "done", run)
    screen = buf.getvalue()
    assert re.search(r"amd64\s*│\s*6\.12\s*│\s*booting", screen), screen
    assert re.search(r"amd64\s*│\s*host\s*│\s*done\s*│\s*1 ok, 1 fail, 0 skip \(1\.5 s\)", screen), screen
    assert "kernel-test: host" not in screen  # no plain lines on a terminal
