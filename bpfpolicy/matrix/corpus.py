"""How many of Tetragon's example policies validate, compile for a matrix kernel, and behave
in its guest — the three numbers issue #14 asks for, from real runs:

    python -m bpfpolicy.matrix.corpus [--corpus DIR] [--kernel 6.12] [--no-boot] [--json]
    python -m bpfpolicy.matrix.corpus --files [--corpus DIR]   # the table's files (Makefile)

validate  `bpfpolicy validate` of each file on its own accepts it
compile   every policy of the file compiles for that kernel (its Debian package's BTF/config)
behave    booted in that kernel's guest (`bpfpolicy kernel-test --kernels K`) with the checks of
          `data/tetragon-corpus.yaml`: loads, attaches, and every exec-expect/event-expect
          passes (a file without checks there is not counted as behaving)

The guest run goes through the CLI in a subprocess (this layer does not import cli/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .tracing import corpus_table

# a checkout of Tetragon's examples/tracingpolicy/ (not shipped: the files are Tetragon's)
DEFAULT_CORPUS = os.environ.get("BPFPOLICY_TETRAGON_CORPUS")


@dataclass
class FileResult:
    file: str
    names: list[str] = field(default_factory=list)  # <Kind>/<name> of its policies
    validates: bool = False
    compiles: bool = False
    checked: bool = False   # data/tetragon-corpus.yaml has checks for it
    behaves: bool = False
    differs: str = ""       # the table's note where bpfpolicy behaves unlike Tetragon
    why: str = ""           # first diagnostic / failing step


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.glob("*.y*ml") if p.is_file())


def table_files(corpus: Path) -> list[Path]:
    """The corpus files the table has checks for (present in `corpus`)."""
    return [corpus / name for name in corpus_table() if (corpus / name).is_file()]


def static_counts(files: list[Path], version: tuple[int, int]) -> list[FileResult]:
    """Validate each file on its own, compile its policies for `version` (no kernel needed)."""
    from ..kinds import CompileContext
    from ..policy.compile import compile_policy
    from ..policy.validate import validate_paths

    table = corpus_table()
    out = []
    ctx = CompileContext(kernel=version, arch="x86_64")
    for f in files:
        r = FileResult(f.name, checked=f.name in table, differs=str(getattr(table.get(f.name), "differs", "")))
        v = validate_paths([f])
        r.validates = v.ok and bool(v.policies)
        if not r.validates:
            errors = [d for d in v.diagnostics if d.severity == "error"] or v.diagnostics
            r.why = str(errors[0]) if errors else "no policy in the file"
            out.append(r)
            continue
        r.names = [f"{p.ident.kind.kind}/{p.name}" for p in v.policies]
        errors = []
        for p in v.policies:
            artifact, diags = compile_policy(p, ctx)
            errors += [str(d) for d in diags if d.severity == "error"] + ([] if artifact else ["no artifact"])
        r.compiles = not errors
        r.why = errors[0] if errors else ""
        out.append(r)
    return out


def boot_counts(results: list[FileResult], corpus: Path, kernel: str, out_dir: Path) -> float:
    """Run the compiled, checked files in `kernel`'s guest; mark which behave. Seconds taken."""
    run = [r for r in results if r.compiles and r.checked]
    if not run:
        return 0.0
    start = time.monotonic()
    cmd = [sys.executable, "-m", "bpfpolicy", "kernel-test", "--kernels", kernel, "--format", "json",
           "--out", str(out_dir), *[str(corpus / r.file) for r in run]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        data = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        raise SystemExit(f"kernel-test gave no JSON (exit {proc.returncode}):\n{proc.stderr[-3000:]}") from None
    for r in run:
        cells = [data["table"].get(n, {}).get(kernel) for n in r.names]
        fails = [f"{n}: {c}" for n, c in zip(r.names, cells, strict=True)
                 if not c or any(c[cat]["fail"] for cat in ("load", "attach", "behaviour", "live"))]
        ran = sum(c["behaviour"]["ok"] for c in cells if c)
        r.behaves = not fails and ran > 0
        if not r.behaves:
            r.why = fails[0] if fails else "no behaviour check ran (skipped)"
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bpfpolicy.matrix.corpus", description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path(DEFAULT_CORPUS) if DEFAULT_CORPUS else None,
                    help="a directory of Tetragon's example TracingPolicies (or BPFPOLICY_TETRAGON_CORPUS)")
    ap.add_argument("--kernel", default="6.12")
    ap.add_argument("--no-boot", action="store_true", help="validate and compile only")
    ap.add_argument("--files", action="store_true", help="print the table's corpus files and exit")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.corpus is None or not args.corpus.is_dir():
        where = f"no Tetragon corpus at {args.corpus}" if args.corpus else "no Tetragon corpus given"
        print(f"{where}: pass --corpus DIR (a checkout of Tetragon's examples/tracingpolicy/) "
              "or set BPFPOLICY_TETRAGON_CORPUS", file=sys.stderr)
        return 2
    if args.files:
        print(" ".join(str(p) for p in table_files(args.corpus)))
        return 0
    from . import kernels

    spec = kernels.KERNELS[args.kernel]
    hit = kernels.cached(spec)
    version = hit.version if hit else tuple(int(x) for x in args.kernel.split("."))  # type: ignore[assignment]
    start = time.monotonic()
    results = static_counts(corpus_files(args.corpus), version)  # type: ignore[arg-type]
    static_s = time.monotonic() - start
    boot_s = 0.0
    if not args.no_boot:
        with tempfile.TemporaryDirectory(prefix="bpfpolicy-corpus-") as tmp:
            boot_s = boot_counts(results, args.corpus, args.kernel, Path(tmp))
    summary = {"corpus": len(results), "validate": sum(r.validates for r in results),
               f"compile_{args.kernel}": sum(r.compiles for r in results),
               "checked": sum(r.checked for r in results),
               f"behave_{args.kernel}": None if args.no_boot else sum(r.behaves for r in results),
               "behave_differs_from_tetragon": sum(r.behaves and bool(r.differs) for r in results),
               "static_seconds": round(static_s, 1), "boot_seconds": round(boot_s, 1)}
    if args.json:
        print(json.dumps({"summary": summary, "files": [asdict(r) for r in results]}, indent=2))
        return 0
    for r in results:
        marks = "".join(("V" if r.validates else "-", "C" if r.compiles else "-",
                         ("B" if r.behaves else ("x" if r.checked and not args.no_boot else "-"))))
        print(f"{marks} {r.file}" + (f"  ({r.why[:140]})" if r.why and not r.behaves else ""))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
