"""The kernel matrix: prove compiled artifacts load, attach and behave on the kernels a
fleet runs (Debian 5.10, 6.1, 6.12, 7.x under QEMU) and on the running host kernel.

    fetch kernels (cached) ─ build static runner (cached) ─ per kernel: initramfs ─ boot
    ─ parse RESULT lines ─ table kernel × artifact (load / attach / behaviour) + JSON

Kernels run concurrently (up to the number of cores). Nothing here imports validation
or compilation: policy paths are compiled by the caller (see cli/kernel_test.py), which
hands over a function producing artifact directories per target kernel.

    __init__   run_matrix (concurrent boots, the report), write_bundle (for other machines)
    kernels    Debian kernels: resolve, download, extract, cache
    guest      build the static runner, pack an initramfs, boot QEMU
    artifacts  find the artifact directories a run exercises
    results    parse the runner's console output; summarise per kernel × artifact
    data/      the runner's C source, init and run-bundle.sh (package data)

The report's table is drawn by cli/render.py.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import guest, kernels, results
from .artifacts import ArtifactDir, discover
from .kernels import KERNELS, FetchError, Kernel
from .results import KernelRun, StepResult

__all__ = ["KERNELS", "ALL_KERNELS", "ArtifactDir", "MatrixReport", "discover", "run_matrix",
           "FetchError"]

ALL_KERNELS = (*KERNELS, "host")

# Given a target kernel (major, minor) — None for the running host — the artifacts to run.
ArtifactSource = Callable[[tuple[int, int] | None], list[ArtifactDir]]
# Per-kernel progress, called from the worker threads as each member moves on:
# (member name, stage: booting | running | done, the finished run at `done`, else None).
Progress = Callable[[str, str, KernelRun | None], None]


@dataclass
class MatrixReport:
    runs: list[KernelRun] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    fetch_seconds: float = 0.0
    out_dir: Path | None = None

    @property
    def failures(self) -> list[StepResult]:
        return [r for run in self.runs for r in run.results if r.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failures and all(run.error is None for run in self.runs)

    def run(self, kernel: str) -> KernelRun:
        return next(r for r in self.runs if r.name == kernel)

    def results_for(self, kernel: str, artifact: str) -> list[StepResult]:
        return [r for r in self.run(kernel).results if r.artifact == artifact]

    def gaps(self) -> dict[str, list[str]]:
        """Per kernel: the distinct features it lacks, as the runner/compiler stated them."""
        out: dict[str, list[str]] = {}
        for run in self.runs:
            seen: dict[str, None] = {}
            for r in run.results:
                m = _GAP.search(r.detail) or (_COMPILE_GAP.search(r.detail) if r.step == "compile" else None)
                if m and r.status in ("skip", "ok"):
                    seen.setdefault(m[1].strip())
            out[run.name] = list(seen)
        return out

    def as_dict(self) -> dict[str, object]:
        table = {a: {run.name: results.cell([r for r in run.results if r.artifact == a])
                     for run in self.runs} for a in self.artifacts}
        return {"ok": self.ok, "wall_seconds": round(self.wall_seconds, 2),
                "fetch_seconds": round(self.fetch_seconds, 2), "artifacts": self.artifacts,
                "table": table, "gaps": self.gaps(), "kernels": [run.as_dict() for run in self.runs]}


# "kernel lacks feature: kprobes (no kprobe PMU ...)" -> "kprobes"; program types keep their name.
_GAP = re.compile(r"kernel lacks feature: ([^(;:]+?)\s*(?:\(|;|:|$)")
# The compiler's wording ("kernel 6.18 lacks bpf_lsm (...)") -> "bpf_lsm".
_COMPILE_GAP = re.compile(r"\blacks? ([\w./-]+(?: [\w./-]+)?)")


def fetch_all(kernel_names: list[str], arch: str = "amd64") -> tuple[dict[str, Kernel | str], float]:
    """Fetch the Debian members (of one architecture) concurrently: {name: Kernel or
    error text}, seconds taken."""
    start = time.monotonic()
    vm_names = [k for k in kernel_names if k != "host"]
    fetched: dict[str, Kernel | str] = {}
    with ThreadPoolExecutor(max(1, len(vm_names))) as pool:
        for name, got in zip(vm_names, pool.map(lambda n: _fetch_or_error(n, arch), vm_names), strict=True):
            fetched[name] = got
    return fetched, time.monotonic() - start


def run_matrix(kernel_names: list[str], source: ArtifactSource, out_dir: Path,
               jobs: int | None = None, timeout: float = 90.0,
               prefetched: tuple[dict[str, Kernel | str], float] | None = None,
               arch: str = "amd64", progress: Progress | None = None) -> MatrixReport:
    """Fetch, boot and test every requested kernel of one architecture (`host` only for
    amd64, the host's own); write logs and results.json to out_dir. `progress` hears of
    each member as it starts and as its results arrive (the CLI's live display)."""
    start = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = MatrixReport(out_dir=out_dir)
    fetched, report.fetch_seconds = prefetched or fetch_all(kernel_names, arch)
    runner = guest.build_runner(arch)
    workers = jobs or os.cpu_count() or 1

    def one(name: str) -> KernelRun:
        if progress:
            progress(name, "running" if name == "host" else "booting", None)
        run = _run_kernel(name, fetched.get(name), runner, source, out_dir, timeout)
        if progress:
            progress(name, "done", run)
        return run

    with ThreadPoolExecutor(max(1, workers)) as pool:
        report.runs = list(pool.map(one, kernel_names))
    seen: dict[str, None] = {}
    for run in report.runs:
        for r in run.results:
            seen.setdefault(r.artifact)
    report.artifacts = list(seen)
    report.wall_seconds = time.monotonic() - start + (prefetched[1] if prefetched else 0.0)
    _write(report, out_dir)
    return report


def _fetch_or_error(name: str, arch: str = "amd64") -> Kernel | str:
    try:
        return kernels.fetch(KERNELS[name].for_arch(arch))
    except (FetchError, OSError) as e:
        return str(e)


def _run_kernel(name: str, kernel: Kernel | str | None, runner: Path, source: ArtifactSource,
                out_dir: Path, timeout: float) -> KernelRun:
    if isinstance(kernel, str):
        return KernelRun(name, error=f"kernel unavailable: {kernel}")
    version = kernel.version if kernel else None
    everything = source(version)
    refused = [StepResult(name, a.name, 0, "compile", a.error_status, a.error)
               for a in everything if a.error is not None]
    artifacts = [a for a in everything if a.error is None]
    names = [a.name for a in artifacts]
    if not artifacts:
        run = KernelRun(name, release=kernel.release if kernel else os.uname().release,
                        package=kernel.package if kernel else "", results=refused)
        return run
    if kernel is None:
        out = guest.run_on_host(runner, artifacts, timeout)
    else:
        out = guest.boot(kernel, runner, artifacts, out_dir / "work", timeout)
    (out_dir / f"console-{name}.log").write_text(out.console)
    run = results.parse_console(name, out.console, names if out.console.strip() else [])
    run.accel, run.seconds, run.error = out.accel, round(out.seconds, 2), out.error
    if kernel is not None:
        run.package = kernel.package
        run.release = run.release or kernel.release
    else:
        run.release = run.release or os.uname().release
    if out.error and not out.console.strip():
        run.results += [StepResult(name, a, 0, "boot", "fail", out.error) for a in names]
    run.results = refused + run.results
    _keep_logs(run, out_dir)
    return run


def _keep_logs(run: KernelRun, out_dir: Path) -> None:
    for r in run.results:
        if r.log:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", r.artifact)
            path = out_dir / "verifier" / run.name / f"{safe}-line{r.line}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(r.log)
            r.log_file = str(path)


def _write(report: MatrixReport, out_dir: Path) -> None:
    (out_dir / "results.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")


def write_bundle(dest: Path, members: list[str], source: ArtifactSource,
                 versions: dict[str, tuple[int, int]]) -> Path:
    """A self-contained directory to run the matrix on machines we do not boot ourselves
    (the Vagrant VMs, real hardware): the static runner, run.sh, and per member
    `<member>/<NNN>/` artifact directories. `run.sh` picks the member by `uname -r`."""
    import shutil

    from ..resources import MATRIX_DATA_DIR

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(guest.build_runner(), dest / "kt-runner")
    shutil.copy2(MATRIX_DATA_DIR / "run-bundle.sh", dest / "run.sh")
    for member in members:
        target = dest / member
        shutil.rmtree(target, ignore_errors=True)
        for i, art in enumerate(a for a in source(versions.get(member)) if a.path is not None):
            adir = target / f"{i:03d}"
            shutil.copytree(art.path, adir)
            (adir / "kernel-test.txt").write_text(art.script)
            (adir / ".kt-name").write_text(art.name + "\n")
    return dest
