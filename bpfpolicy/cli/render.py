"""Every output the command line prints, in one place: diagnostics as text, json, junit
and GitHub workflow commands (with the escaping that keeps a file name from forging a
command or breaking the XML), and the rich tables of `doctor`, `kernel-test`, `plan` and
`status`. Commands parse options and call in here; nothing else in cli/ formats output.

rich is imported inside the table functions so `validate`/`compile` never pay for it.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

import click

from ..policy.diagnostics import Diagnostic

if TYPE_CHECKING:
    from rich.console import Console

    from ..controller.plan import Plan
    from ..doctor import Check
    from ..matrix import MatrixReport

FORMATS = ("text", "json", "junit", "github")


def summary(diags: list[Diagnostic], files: int, policies: int) -> str:
    errors = sum(d.severity == "error" for d in diags)
    warnings = sum(d.severity == "warning" for d in diags)
    return f"{files} file(s), {policies} valid polic{'y' if policies == 1 else 'ies'}: {errors} error(s), {warnings} warning(s)"


def emit_text(diags: Iterable[Diagnostic]) -> None:
    for d in diags:
        click.echo(str(d))


def gh_data(text: str) -> str:
    """Escape a workflow command's message (toolkit `escapeData`): a newline in a file
    name or message must not start a new command (`::add-mask::`, a forged `::error`)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def gh_property(text: str) -> str:
    """Escape a property value (toolkit `escapeProperty`): also `:` and `,`, which
    would end the property list or start another property."""
    return gh_data(text).replace(":", "%3A").replace(",", "%2C")


def github_line(d: Diagnostic) -> str:
    level = {"error": "error", "note": "notice"}.get(d.severity, "warning")
    return (f"::{level} file={gh_property(str(d.file))},line={int(d.line)},col={int(d.col)}"
            f"::{gh_data(f'{d.path}: {d.message}')}")


def emit_github(diags: Iterable[Diagnostic]) -> None:
    """GitHub Actions workflow commands: annotations on the PR diff, one line each."""
    for d in diags:
        click.echo(github_line(d))


# XML 1.0 Char production: everything else (most C0 controls, lone surrogates, U+FFFE/F)
# cannot appear in a document, escaped or not
_XML_ILLEGAL = re.compile("[^\u0009\u000A\u000D\u0020-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def xml_text(text: str) -> str:
    """Characters illegal in XML 1.0 become U+FFFD; then the usual escapes."""
    return escape(_XML_ILLEGAL.sub("\ufffd", str(text)))


def xml_attr(text: str) -> str:
    """A quoted attribute value; newlines and tabs survive as character references."""
    return quoteattr(_XML_ILLEGAL.sub("\ufffd", str(text)), {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def junit_xml(diags: list[Diagnostic], files: Iterable[str], suite: str) -> str:
    """One testcase per file; each error is a failure of that file's case."""
    by_file: dict[str, list[Diagnostic]] = defaultdict(list)
    for d in diags:
        by_file[d.file].append(d)
    names = sorted(set(files) | set(by_file))
    failures = sum(1 for f in names if any(d.severity == "error" for d in by_file[f]))
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name={xml_attr(suite)} tests="{len(names)}" failures="{failures}" errors="0">']
    for f in names:
        errors = [d for d in by_file[f] if d.severity == "error"]
        out.append(f"  <testcase classname={xml_attr(suite)} name={xml_attr(f)}>")
        if errors:
            body = xml_text("\n".join(str(d) for d in errors))
            out.append(f"    <failure message={xml_attr(errors[0].message)}>{body}</failure>")
        warnings = [d for d in by_file[f] if d.severity == "warning"]
        if warnings:
            out.append(f"    <system-out>{xml_text(chr(10).join(str(d) for d in warnings))}</system-out>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out)


def emit_json(payload: dict[str, object]) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=True))


def doctor_table(checks: Iterable[Check]) -> None:
    """`doctor` as a table: one row per probe, yes / no / n/a."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bpfpolicy doctor")
    for col in ("area", "check", "result", "detail"):
        table.add_column(col)
    for c in checks:
        mark = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]n/a[/]"}[c.ok]
        table.add_row(c.area, c.name, mark, c.detail)
    Console(width=160).print(table)


def matrix_table(report: MatrixReport, console: object | None = None) -> None:
    """The kernel × artifact table, then every failure with its detail and log file."""
    from rich.console import Console
    from rich.table import Table

    from ..matrix import results

    con = console if isinstance(console, Console) else Console()
    if not con.is_terminal:  # logs and CI: wide enough that artifact names are not cut
        need = max([len(a) for a in report.artifacts] + [10]) + 4 + 24 * len(report.runs)
        con = Console(width=max(con.width, need))
    table = Table(title="bpfpolicy kernel-test", show_lines=True)
    table.add_column("artifact", style="bold")
    for run in report.runs:
        head = f"{run.name}\n{run.release or '?'}"
        if run.seconds:
            head += f"\n{run.accel} {run.seconds:.1f}s"
        table.add_column(head)
    for art in report.artifacts:
        row = [art]
        for run in report.runs:
            row.append(results.cell_text(results.cell([r for r in run.results if r.artifact == art])))
        table.add_row(*row)
    con.print(table)
    _matrix_problems(report, con)


def _matrix_problems(report: MatrixReport, con: Console) -> None:
    """Below the table: boot errors, failures with their verifier logs, kernel gaps, verdict."""
    for run in report.runs:
        if run.error:
            con.print(f"[bold red]{run.name}[/]: {run.error}")
    for r in report.failures:
        con.print(f"[red]FAIL[/] {r.kernel} {r.artifact}:{r.line} {r.step}: {r.detail}")
        if r.log_file:
            con.print(f"     verifier log: {r.log_file}")
    for kernel, gaps in report.gaps().items():
        if gaps:
            con.print(f"[yellow]{kernel} lacks[/]: {'; '.join(gaps)}")
    verdict = "[green]all kernels ok[/]" if report.ok else f"[red]{len(report.failures)} failure(s)[/]"
    con.print(f"{verdict} — wall {report.wall_seconds:.1f} s (fetch {report.fetch_seconds:.1f} s); "
              f"logs in {report.out_dir}")


def plan_table(plan: Plan) -> None:
    """`plan` as a table; the controller owns the layout (controller/plan.py `render`)."""
    from ..controller.plan import render

    render(plan)


def status_table(data: dict[str, object]) -> None:
    """`status` as a table; the controller owns the layout (controller/status.py `render`)."""
    from ..controller.status import render

    render(data)


def event_line(ev: dict[str, object]) -> str:
    """`events -o compact`: one human line per event. A packet verdict reads like a
    Hubble flow plus where the rule is written; a tracing event names hook, process and
    action; a controller event its reason and message."""
    from ..controller.stream import flat

    e = flat(ev)
    when = str(e.get("time") or "")[11:23]
    if e.get("source") == "controller" or ("reason" in e and "source" not in e):
        return f"{when} controller {e.get('reason')} {e.get('policy') or '-'}: {e.get('message', '')}"
    if e is not ev:  # a Tetragon-shaped line: the key names the event
        key = next(iter(ev))
        return f"{when} {e.get('policy') or '-'} {key} {e.get('action') or ''}".rstrip()
    if "rport" in e:
        arrow = "<-" if e.get("direction") == "ingress" else "->"
        rule = f" {e.get('rule')}" if e.get("rule") else ""
        where = f" ({e.get('where')})" if e.get("where") else ""
        return (f"{when} {str(e.get('action', '?')).upper()} {e.get('proto')} "
                f"{e.get('local')}:{e.get('lport')} {arrow} {e.get('remote')}:{e.get('rport')} "
                f"{e.get('policy')}{rule}{where}")
    if e.get("error"):
        return f"{when} {e.get('policy')} error: {e.get('error')}"
    act = e.get("action")
    act = ",".join(map(str, act)) if isinstance(act, list) else (act or "")
    proc = f"{e.get('comm')}[{e.get('pid')}]" if e.get("pid") is not None else ""
    return f"{when} {e.get('policy')} {e.get('hook') or e.get('event') or ''} {proc} {act}".rstrip()
