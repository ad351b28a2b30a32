"""`bpfpolicy test [PATH…]`: policy unit tests, each case against the reference model and
the compiled program (exit 0 all pass, 1 a case failed, 2 usage); `bpfpolicy explain
FILE CASE`: the chain of rules one case went through."""

from __future__ import annotations

import sys

import click

from ..policy.diagnostics import Diagnostic
from . import render


def _as_diag(r: object, severity: str = "error") -> Diagnostic:
    file, line, col = r.case.where.rsplit(":", 2)  # type: ignore[attr-defined]
    return Diagnostic(file, int(line), int(col), f"spec.cases[{r.case.index}]",  # type: ignore[attr-defined]
                      f"{r.case.name}: {r.message}", severity)  # type: ignore[arg-type,attr-defined]


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(render.FORMATS), default="text", show_default=True)
@click.option("--kernel", default=None, help="Run the compiled side in this QEMU kernel (e.g. 6.12) instead of the host.")
@click.option("--no-kernel", is_flag=True, help="Reference model (and seccomp emulator) only.")
@click.option("--init", "init", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Write a starter POLICY.test.yaml beside this policy (boundary cases of every rule).")
@click.option("--inventory", type=click.Path(exists=True, dir_okay=False), default=None,
              help="--init of a NetworkPolicy: the endpoint inventory (host config).")
@click.option("--force", is_flag=True, help="--init: overwrite an existing test file.")
def command(paths: tuple[str, ...], fmt: str, kernel: str | None, no_kernel: bool,
            init: str | None, inventory: str | None, force: bool) -> None:
    """Run *.test.yaml policy tests two ways: reference model and compiled program."""
    from ..policytest.runner import run

    if init is not None:
        _init(init, inventory, force)
    if not paths:
        raise click.UsageError("give test files or directories (PATH…)")
    report = run(list(paths), kernel=kernel, use_kernel=False if no_kernel else None)
    failed = [r for r in report.results if r.status not in ("pass", "skip")]
    skipped = [r for r in report.results if r.status == "skip"]  # the model cannot evaluate it: said, not failed
    diags = report.diagnostics + [_as_diag(r) for r in failed] + [_as_diag(r, "warning") for r in skipped]
    if fmt == "json":
        render.emit_json({"ok": report.ok, "seconds": round(report.seconds, 3), "notes": report.kernel_notes,
                          "diagnostics": [d.as_dict() for d in report.diagnostics],
                          "cases": [r.as_dict() for r in report.results]})
    elif fmt == "github":
        render.emit_github(diags)
    elif fmt == "junit":
        click.echo(render.junit_xml(diags, sorted({r.case.file for r in report.results}), "bpfpolicy.test"))
    else:
        render.emit_text(diags)
        for note in report.kernel_notes:
            click.echo(f"note: {note}", err=True)
        by = sorted({r.compiled_by.split(" (")[0] for r in report.results if r.compiled_by})
        click.echo(f"{len(report.results)} case(s): {len(report.results) - len(failed) - len(skipped)} passed, "
                   f"{len(failed)} failed, {len(skipped)} skipped; compiled side: {', '.join(by) or 'not run'} "
                   f"({report.seconds:.1f} s)", err=True)
    sys.exit(0 if report.ok else 1)


def _init(policy: str, inventory: str | None, force: bool) -> None:
    """Write the starter file (refusing to overwrite one without --force); exit 0/1."""
    from pathlib import Path

    from ..policytest.init import default_output, generate

    out = default_output(Path(policy))
    if out.exists() and not force:
        click.echo(f"{out}: exists; not overwritten (use --force)", err=True)
        sys.exit(1)
    gen, diags = generate(Path(policy), out, Path(inventory) if inventory else None)
    if gen is None:
        render.emit_text(diags)
        sys.exit(1)
    out.write_text(gen.text)
    for note in gen.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{out}: {gen.cases} case(s)")
    sys.exit(0)


@click.command("explain")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("case")
def explain(file: str, case: str) -> None:
    """The rules one case (index or name) went through, and why each matched or not."""
    from pathlib import Path

    from ..policytest.model import load_test_file
    from ..policytest.runner import subject_for

    tf, diags = load_test_file(Path(file))
    if tf is not None:
        subject, diags = subject_for(tf)
    if diags or tf is None:
        render.emit_text(diags)
        sys.exit(1)
    chosen = [c for c in tf.cases if str(c.index) == case or c.name == case]
    if not chosen:
        raise click.UsageError(f"no case {case!r} in {file} (cases 0..{len(tf.cases) - 1})")
    c = chosen[0]
    ans = subject.answer(c)
    click.echo(f"{c.where}: {c.name}")
    for step in ans.chain:
        click.echo(f"  {step}")
    click.echo(f"=> {ans.value}" + (f" ({ans.rule})" if ans.rule else ""))


commands = [command, explain]
