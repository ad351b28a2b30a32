"""Parse the runner's console output and summarise it per kernel × artifact.

The runner's protocol (kernel-tests/README.md):
    RESULT <artifact> <lineno> <step> ok|fail|skip <detail>
    VERIFIER-LOG-BEGIN <artifact> <lineno> <prog> … VERIFIER-LOG-END <artifact> <lineno>
    BEGIN <artifact> / END <artifact>, KT-KERNEL <uname -r>, KT-LSM <lsm list>, KT-DONE
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

RESULT_RE = re.compile(r"RESULT (\S+) (\d+) (\S+) (ok|fail|skip) ?(.*)$")
LOG_BEGIN_RE = re.compile(r"VERIFIER-LOG-BEGIN (\S+) (\d+) (\S+)")
LOG_END_RE = re.compile(r"VERIFIER-LOG-END (\S+) (\d+)")
STEP_RE = re.compile(r"^STEP (\S+) (\d+)$")
BEGIN_RE = re.compile(r"^BEGIN (\S+)$")
END_RE = re.compile(r"^END (\S+)$")

# Which column of the table a step counts towards.
CATEGORY = {"compile": "load", "object": "load", "seccomp": "load", "map-update": "load", "script": "load",
            "attach": "attach", "prog-run": "behaviour", "syscall": "behaviour",
            "exec-expect": "behaviour", "event-expect": "behaviour", "runner": "load", "boot": "load", "live": "live"}
CATEGORIES = ("load", "attach", "behaviour", "live")
# Cell labels: live traffic (real frames over a veth through the attached program) is
# spelled out, since "L" is load.
LABELS = {"load": "L", "attach": "A", "behaviour": "B", "live": "live"}


@dataclass
class StepResult:
    kernel: str
    artifact: str
    line: int
    step: str
    status: str  # ok | fail | skip
    detail: str
    log: str | None = None  # verifier log (failed loads)
    log_file: str | None = None

    @property
    def category(self) -> str:
        return CATEGORY.get(self.step, "load")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class KernelRun:
    name: str  # 5.10 | 6.1 | 6.12 | 7 | host
    release: str = ""
    package: str = ""
    accel: str = ""
    seconds: float = 0.0
    lsm: str = ""
    error: str | None = None
    results: list[StepResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["results"] = [r.as_dict() for r in self.results]
        return d


def parse_console(kernel: str, text: str, expected: list[str]) -> KernelRun:
    """Results, verifier logs and the kernel release out of a serial console capture.
    Artifacts that never reported (guest crashed, runner died) become failures."""
    run = KernelRun(kernel)
    begun: set[str] = set()
    at_line: dict[str, int] = {}
    ended: set[str] = set()
    by_key: dict[tuple[str, int], StepResult] = {}
    log_key: tuple[str, int] | None = None
    log_lines: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if log_key is not None:
            m = LOG_END_RE.search(line)
            if m and (m[1], int(m[2])) == log_key:
                if log_key in by_key:
                    by_key[log_key].log = "\n".join(log_lines) + "\n"
                log_key, log_lines = None, []
            else:
                log_lines.append(line)
            continue
        if m := RESULT_RE.search(line):
            r = StepResult(kernel, m[1], int(m[2]), m[3], m[4], m[5].strip())
            run.results.append(r)
            by_key[(r.artifact, r.line)] = r
        elif m := LOG_BEGIN_RE.search(line):
            log_key = (m[1], int(m[2]))
        elif m := STEP_RE.match(line):
            at_line[m[1]] = int(m[2])
        elif m := BEGIN_RE.match(line):
            begun.add(m[1])
        elif m := END_RE.match(line):
            ended.add(m[1])
        elif line.startswith("KT-KERNEL "):
            run.release = line.split(None, 1)[1].strip()
        elif line.startswith("KT-LSM"):
            run.lsm = line[len("KT-LSM"):].strip()
    for name in expected:
        if name not in begun and not any(r.artifact == name for r in run.results):
            run.results.append(StepResult(kernel, name, 0, "runner", "fail",
                                          "no results: the runner never ran this artifact"))
        elif name in begun and name not in ended:
            where = f" at line {at_line[name]}" if name in at_line else ""
            stopped = [r for r in run.results if r.artifact == name and r.step == "runner"]
            for r in stopped:  # "timed out after 90 s" -> "... at line 2"
                r.detail += where
            if not stopped:
                run.results.append(StepResult(kernel, name, at_line.get(name, 0), "runner", "fail",
                                              f"the runner stopped mid-script{where} (crash or guest panic)"))
    return run


def cell(results: list[StepResult]) -> dict[str, dict[str, int]]:
    """Per category: counts of ok/fail/skip."""
    out = {c: {"ok": 0, "fail": 0, "skip": 0} for c in CATEGORIES}
    for r in results:
        out[r.category][r.status] += 1
    return out


def cell_text(counts: dict[str, dict[str, int]], markup: bool = True) -> str:
    """Compact cell: `L ok  A ok  B 3/3  live 3/3`, `L FAIL`, `A skip` (L=load, A=attach,
    B=behaviour by BPF_PROG_TEST_RUN / syscalls, live=real packets through the attached program)."""
    parts = []
    for cat in CATEGORIES:
        c = counts[cat]
        total = c["ok"] + c["fail"] + c["skip"]
        if not total:
            continue
        label = LABELS[cat]
        if c["fail"]:
            text, style = f"{label} FAIL" + (f" {c['ok']}/{total}" if total > 1 else ""), "bold red"
        elif c["ok"] == total:
            text, style = f"{label} ok" if total == 1 else f"{label} {total}/{total}", "green"
        elif c["ok"]:
            text, style = f"{label} {c['ok']}/{total}+{c['skip']}skip", "yellow"
        else:
            text, style = f"{label} skip", "yellow"
        parts.append(f"[{style}]{text}[/]" if markup else text)
    return "  ".join(parts) if parts else "-"
