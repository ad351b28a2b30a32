"""TracingPolicy behaviour in the matrix: the Tetragon corpus table and the process sensor.

    corpus_checks   the lines `data/tetragon-corpus.yaml` keeps for a Tetragon example
                    file (matched by file name and metadata.name), host or guest
    annotate        append them to a compiled artifact's kernel-test.txt
    sensor_script   the kernel-test.txt of the process sensor: its three sched programs
                    attached, an exec in the guest, `process_exec`/`process_exit`/
                    `process_fork` events of that exec's pid in its ring buffer

`cli/kernel_test.py` calls these while compiling policy paths per target kernel; the
event-expect lines are resolved against each artifact's manifest by `expect.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..resources import MATRIX_DATA_DIR

CORPUS_TABLE = MATRIX_DATA_DIR / "tetragon-corpus.yaml"
SCRIPT = "kernel-test.txt"


@dataclass(frozen=True)
class CorpusCheck:
    file: str    # corpus file name (<subdir>__<file>.yaml)
    policy: str  # its metadata.name: the table applies only to that policy
    what: str
    host: bool   # run on the host member too
    lines: tuple[str, ...]
    differs: str = ""  # where the check is bpfpolicy's documented behaviour, not Tetragon's


def corpus_table(path: Path = CORPUS_TABLE) -> dict[str, CorpusCheck]:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    return {name: CorpusCheck(name, str(e["policy"]), str(e.get("what", "")), bool(e.get("host", True)),
                              tuple(ln.strip() for ln in str(e.get("check", "")).splitlines() if ln.strip()),
                              str(e.get("differs", "")))
            for name, e in data.items()}


def corpus_checks(policy_file: str | Path, policy_name: str, host: bool) -> list[str]:
    """Lines for this policy file on this member (empty when the table has none, or the
    entry is guest-only and this is the host)."""
    entry = corpus_table().get(Path(policy_file).name)
    if entry is None or entry.policy != policy_name:
        return []
    if host and not entry.host:
        return [f"# {entry.file}: guest-only checks left out on the host ({entry.what})"]
    return [f"# behaviour from bpfpolicy/matrix/data/tetragon-corpus.yaml: {entry.what}", *entry.lines]


def annotate(artifact_dir: Path, policy_file: str | Path, policy_name: str, host: bool) -> bool:
    """Append the table's lines for this policy to the artifact's kernel-test.txt; True
    when there were any to append."""
    lines = corpus_checks(policy_file, policy_name, host)
    script = artifact_dir / SCRIPT
    if not lines or not script.is_file():
        return False
    text = script.read_text()
    script.write_text(text + ("" if text.endswith("\n") or not text else "\n") + "\n".join(lines) + "\n")
    return True


def sensor_script(programs: list[str]) -> str:
    """The process sensor's checks: an exec (the runner's own fork + exec of /bin/sh, then
    `exec /bin/sh` again) must post process_fork, process_exec with that path, and
    process_exit, all for the command's pid."""
    lines = ["# TracingPolicy/bpfpolicy-process-sensor: sched_process_exec/exit + raw sched_process_fork",
             "object prog.bpf.o"]
    lines += [f"attach {p} auto" for p in programs]
    lines += ["exec-expect exit=3 exec /bin/sh -c 'exit 3'",
              "event-expect posted process_fork",
              "event-expect posted process_exec path=/bin/sh",
              "event-expect posted process_exit",
              "event-expect none process_exec path=/bin/kt-never-run"]
    return "\n".join(lines) + "\n"


def add_sensor_script(artifact_dir: Path) -> None:
    """Give a written sensor artifact (no kernel-test.txt of its own) the sensor checks."""
    import json

    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    programs = [str(p["name"]) for p in manifest.get("programs", [])]
    (artifact_dir / SCRIPT).write_text(sensor_script(programs))


def sensor_artifacts(tracing: list, ctx: object, dest: Path) -> list:
    """The process sensor, compiled for this target kernel beside its TracingPolicies
    (`compile_all` adds it to a tree's artifacts; the matrix compiles policy by policy),
    written to `dest` with `sensor_script`. `tracing`: the validated TracingPolicies."""
    from ..kinds.tracing.process import SENSOR_NAME
    from .artifacts import compile_failure, discover

    if not tracing:
        return []
    first = tracing[0]
    compiled = first.ident.kind().compile_all([first.model], ctx)
    for _model, art in compiled.artifacts:
        if art.name == SENSOR_NAME:
            written = art.write(dest)
            add_sensor_script(written)
            return discover(written)[0]
    errors = "; ".join(str(d) for d in compiled.diagnostics if d.severity == "error")
    return [compile_failure(f"TracingPolicy/{SENSOR_NAME}", errors or "the process sensor was not built")]
