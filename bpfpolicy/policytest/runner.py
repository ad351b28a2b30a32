"""`bpfpolicy test`: every case two ways. First the reference model (unprivileged);
then the compiled artifact: the seccomp emulator on the compiled filter always, and —
as root, or in a QEMU guest with `--kernel` — one kernel-test.txt per artifact (its map
contents, then one vector per case, expected values from the model) through the
kernel-matrix runner. A vector the kernel answers differently is a compiler bug,
reported with both answers."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..kinds.base import CompileContext
from ..kinds.vectors import KernelTestScript
from ..policy.compile import compile_paths
from ..policy.diagnostics import Diagnostic
from ..policy.validate import validate_paths
from .model import Case, TestFile, find_test_files, load_test_file
from .subjects import Answer, NetpolSubject, SeccompSubject, Unsupported, Vector, XdpSubject

# map records written into one kernel script; above this the kernel side is skipped
# (a runner line per record: a million-entry blocklist would take minutes to load)
MAX_MAP_RECORDS = 20000


@dataclass
class CaseResult:
    case: Case
    status: str  # pass | fail | error | skip (the model cannot evaluate the case)
    model: Answer | None = None
    compiled: str | None = None  # the compiled artifact's answer, where one was had
    compiled_by: str = ""  # emulator | kernel <release> | "" (not run)
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.case.file, "index": self.case.index, "name": self.case.name,
                "where": self.case.where, "status": self.status, "message": self.message,
                "model": self.model.value if self.model else None,
                "rule": self.model.rule if self.model else None,
                "compiled": self.compiled, "compiled_by": self.compiled_by}


@dataclass
class Report:
    results: list[CaseResult] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    kernel_notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.diagnostics and all(r.status in ("pass", "skip") for r in self.results)


def subject_for(tf: TestFile) -> tuple[Any, list[Diagnostic]]:
    """The policy's validated model, wrapped in its kind's subject."""
    v = validate_paths([tf.policy])
    if not v.ok:
        return None, v.diagnostics
    kinds = {p.ident.kind.kind for p in v.policies}
    if len(kinds) != 1:
        return None, [Diagnostic(str(tf.path), 1, 1, "spec.policy", f"{tf.policy}: expected policies of one kind, found {sorted(kinds) or 'none'}")]
    kind = kinds.pop()
    models = [p.model for p in v.policies]
    if kind == "XDPBlocklist":
        return XdpSubject(models[0]), []
    if kind == "SeccompProfile":
        return SeccompSubject(models[0]), []
    if kind == "TracingPolicy":
        from .tracing import TracingSubject

        return TracingSubject(models[0], tf.policy), []
    if kind == "NetworkPolicy":
        if tf.inventory is None:
            return None, [Diagnostic(str(tf.path), 1, 1, "spec", "NetworkPolicy tests need spec.inventory (the endpoints)")]
        from ..kinds.netpol.inventory import InventoryError

        try:
            return NetpolSubject(models, str(tf.inventory)), []
        except InventoryError as e:
            return None, [Diagnostic(str(tf.path), 1, 1, "spec.inventory", f"{tf.inventory}: {e}")]
    return None, [Diagnostic(str(tf.path), 1, 1, "spec.policy", f"{kind}: no test subject for this kind yet (XDPBlocklist, NetworkPolicy, SeccompProfile)")]


def expect_matches(case: Case, ans: Answer) -> str | None:
    """None when the model's answer is what the case expects, else why not."""
    exp = case.expect
    if case.event is not None:
        from .tracing import expected_text

        want = expected_text(exp)
        return None if ans.value == want else f"expected {want}, the policy gives {ans.value}" + (
            f" ({ans.rule})" if ans.rule else "")
    want = exp.get("verdict") or exp.get("action")
    got = ans.value
    ok = got == want or (want == "trace" and got.startswith("trace"))
    if not ok:
        return f"expected {want}, the policy gives {got}" + (f" ({ans.rule})" if ans.rule else "")
    if exp.get("rule") and exp["rule"] != ans.rule:
        return f"expected the decision by {exp['rule']}, it is made by {ans.rule}"
    return None


def run(paths: list[str], kernel: str | None = None, use_kernel: bool | None = None) -> Report:
    """All cases under `paths`. `use_kernel`: None = when root; `kernel`: a QEMU kernel."""
    start = time.monotonic()
    report = Report()
    pending: list[tuple[TestFile, Any, list[tuple[CaseResult, Vector]]]] = []
    for path in find_test_files(paths):
        tf, diags = load_test_file(path)
        report.diagnostics += diags
        if tf is None:
            continue
        subject, diags = subject_for(tf)
        report.diagnostics += diags
        if subject is None:
            continue
        vectors = []
        for case in tf.cases:
            res, vec = run_case(subject, case)
            report.results.append(res)
            if vec is not None:
                vectors.append((res, vec))
        pending.append((tf, subject, vectors))
    if use_kernel is None:
        use_kernel = kernel is not None or os.geteuid() == 0
    run_tracing(pending, report, bool(use_kernel) and kernel is None and os.geteuid() == 0)
    if use_kernel and any(v for _, _, v in pending):
        run_kernel(pending, kernel, report)
    elif any(v for _, _, v in pending):
        report.kernel_notes.append("compiled programs not run in a kernel: needs root (or --kernel VERSION)")
    report.seconds = time.monotonic() - start
    return report


def run_tracing(pending: list[tuple[TestFile, Any, list[tuple[CaseResult, Vector]]]],
                report: Report, host: bool) -> None:
    """TracingPolicy cases on the compiled side: real syscalls under the attached program
    (root on this host only; `--kernel` guests do not run them yet). Others: model-only."""
    from .tracing import TracingSubject, run_host

    for tf, subject, _ in pending:
        if not isinstance(subject, TracingSubject):
            continue
        mine = [r for r in report.results if r.case.file == str(tf.path) and r.status != "skip" and r.model]
        runnable = [(r, subject.command(r.case)) for r in mine]
        only = [r for r, argv in runnable if argv is None]
        for r in only:
            r.compiled_by = "model only (no host command issues this hook with these facts)"
        todo = [(r, argv) for r, argv in runnable if argv is not None]
        if todo and host:
            run_host(subject, todo, report.kernel_notes)
        elif todo:
            for r, _ in todo:
                r.compiled_by = "model only (compiled side needs root on the host)"


def run_case(subject: Any, case: Case) -> tuple[CaseResult, Vector | None]:
    """The model's answer, checked against the case; the emulator's where there is one."""
    from .tracing import ModelCannot

    try:
        ans = subject.answer(case)
    except Unsupported as e:
        return CaseResult(case, "error", message=str(e)), None
    except ModelCannot as e:
        return CaseResult(case, "skip", message=f"skipped: {e}"), None
    res = CaseResult(case, "pass", ans)
    why = expect_matches(case, ans)
    if why:
        res.status, res.message = "fail", why
    if isinstance(subject, SeccompSubject):
        emu = subject.emulated(case)
        res.compiled, res.compiled_by = emu.value, "emulator"
        if emu.value != ans.value:
            res.status = "fail"
            res.message = compiler_bug(ans.value, emu.value, "emulated cBPF filter")
    if case.event is not None:
        return res, None  # the compiled side runs in run_tracing_host (real syscalls)
    return res, subject.vector(case, ans)


def compiler_bug(model: str, compiled: str, by: str) -> str:
    return f"compiler bug: the reference model says {model}, the compiled program ({by}) says {compiled}"


def artifact_scripts(tf: TestFile, vectors: list[tuple[CaseResult, Vector]], out: Path,
                     ) -> tuple[dict[str, tuple[Path, str, dict[int, tuple[CaseResult, Vector]]]], list[str]]:
    """Compile the policy into `out`; one script per artifact: load + maps, then vectors.
    Returns {artifact: (dir, script, {line: (result, vector)})} and notes."""
    ctx = CompileContext(options={"inventory": str(tf.inventory)} if tf.inventory else {})
    result = compile_paths([tf.policy], ctx)
    if not result.ok:
        return {}, [f"{tf.policy}: does not compile: " + "; ".join(str(d) for d in result.diagnostics[:3])]
    notes: list[str] = []
    scripts = {}
    for _, art in result.artifacts:
        d = art.write(out)
        name = f"{art.kind}/{art.name}"
        mine = [(r, v) for r, v in vectors if v.artifact == name]
        if not mine:
            continue
        script, lines = _preamble(d)
        if script is None:
            notes.append(f"{name}: {lines} records exceed {MAX_MAP_RECORDS}: kernel vectors skipped")
            continue
        by_line = {}
        for r, v in mine:
            for text in v.lines:
                script.raw(text)
            by_line[len(script.text().splitlines())] = (r, v)
        scripts[name] = (d, script.text(), by_line)
    return scripts, notes


def _preamble(d: Path) -> tuple[KernelTestScript | None, int]:
    """Load the object and write every map's compiled contents (or install the filter)."""
    s = KernelTestScript()
    manifest = json.loads((d / "manifest.json").read_text())
    if (d / "filter.bin").exists():
        return s.seccomp("filter.bin"), 0
    s.object(manifest.get("object", "prog.bpf.o"))
    n = 0
    for m in manifest.get("maps", []):
        if not m.get("contents"):
            continue
        raw = (d / m["contents"]).read_bytes()
        step = m["key_size"] + m["value_size"]
        n += len(raw) // step
        if n > MAX_MAP_RECORDS:
            return None, n
        for off in range(0, len(raw), step):
            s.map_update(m["name"], raw[off:off + m["key_size"]], raw[off + m["key_size"]:off + step])
    return s, n


def run_kernel(pending: list[tuple[TestFile, Any, list[tuple[CaseResult, Vector]]]],
               kernel: str | None, report: Report) -> None:
    from ..matrix import guest, run_matrix
    from ..matrix.artifacts import ArtifactDir
    from ..matrix.results import parse_console

    with tempfile.TemporaryDirectory(prefix="bpfpolicy-test-") as tmp:
        arts: list[ArtifactDir] = []
        lines: dict[str, dict[int, tuple[CaseResult, Vector]]] = {}
        for i, (tf, _, vectors) in enumerate(pending):
            if not vectors:
                continue
            scripts, notes = artifact_scripts(tf, vectors, Path(tmp) / f"{i:03d}")
            report.kernel_notes += notes
            for name, (d, script, by_line) in scripts.items():
                uniq = f"{name}+{i}"
                arts.append(ArtifactDir(uniq, d, script))
                lines[uniq] = by_line
        if not arts:
            return
        if kernel is None:
            out = guest.run_on_host(guest.build_runner(), arts)
            if out.error:
                report.kernel_notes.append(f"host kernel: {out.error}")
            kr = parse_console("host", out.console, [a.name for a in arts])
            results, release = kr.results, kr.release
        else:
            mr = run_matrix([kernel], lambda _v: arts, Path(tmp) / "matrix")
            results = [r for run in mr.runs for r in run.results]
            release = mr.runs[0].release if mr.runs else kernel
            report.kernel_notes += [f"{kernel}: {run.error}" for run in mr.runs if run.error]
    _apply_kernel_results(results, lines, release or "?", report)


def _apply_kernel_results(results: list[Any], lines: dict[str, dict[int, tuple[CaseResult, Vector]]],
                          release: str, report: Report) -> None:
    """Each vector's RESULT: ok = the kernel agrees with the model; fail = compiler bug.
    A failed load or map write fails every case of that artifact (the program is unusable)."""
    for r in results:
        by_line = lines.get(r.artifact, {})
        hit = by_line.get(r.line)
        if hit is None:
            if r.status == "fail" and r.step not in ("prog-run", "syscall"):
                for res, _ in by_line.values():
                    res.status, res.message = "fail", f"kernel {release}: {r.step} failed: {r.detail}"
            elif r.status == "fail":  # an opener of a reply case disagreed
                prev = min((ln for ln in by_line if ln > r.line), default=None)
                if prev is not None:
                    res, vec = by_line[prev]
                    res.status = "fail"
                    res.message = f"compiler bug: the connection's opening packet: {r.detail}"
            continue
        res, vec = hit
        res.compiled_by = f"kernel {release}"
        if r.status == "ok":
            res.compiled = res.model.value if res.model else None
        elif r.status == "skip":
            res.compiled_by += f" (skipped: {r.detail})"
        else:
            res.compiled = r.detail
            res.status = "fail"
            res.message = compiler_bug(res.model.value if res.model else "?", r.detail, f"{vec.what}, kernel {release}")
