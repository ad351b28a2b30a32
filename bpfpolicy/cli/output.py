"""Rendering diagnostics for humans and machines (text, json, junit, github)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

import click

from ..errors import Diagnostic

FORMATS = ("text", "json", "junit", "github")


def summary(diags: list[Diagnostic], files: int, policies: int) -> str:
    errors = sum(d.severity == "error" for d in diags)
    warnings = len(diags) - errors
    return f"{files} file(s), {policies} valid polic{'y' if policies == 1 else 'ies'}: {errors} error(s), {warnings} warning(s)"


def emit_text(diags: Iterable[Diagnostic]) -> None:
    for d in diags:
        click.echo(str(d))


def emit_github(diags: Iterable[Diagnostic]) -> None:
    """GitHub Actions workflow commands: annotations on the PR diff."""
    for d in diags:
        level = "error" if d.severity == "error" else "warning"
        msg = f"{d.path}: {d.message}".replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        click.echo(f"::{level} file={d.file},line={d.line},col={d.col}::{msg}")


def junit_xml(diags: list[Diagnostic], files: Iterable[str], suite: str) -> str:
    """One testcase per file; each error is a failure of that file's case."""
    by_file: dict[str, list[Diagnostic]] = defaultdict(list)
    for d in diags:
        by_file[d.file].append(d)
    names = sorted(set(files) | set(by_file))
    failures = sum(1 for f in names if any(d.severity == "error" for d in by_file[f]))
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name={quoteattr(suite)} tests="{len(names)}" failures="{failures}" errors="0">']
    for f in names:
        errors = [d for d in by_file[f] if d.severity == "error"]
        out.append(f"  <testcase classname={quoteattr(suite)} name={quoteattr(f)}>")
        if errors:
            body = escape("\n".join(str(d) for d in errors))
            out.append(f"    <failure message={quoteattr(errors[0].message)}>{body}</failure>")
        warnings = [d for d in by_file[f] if d.severity == "warning"]
        if warnings:
            out.append(f"    <system-out>{escape(chr(10).join(str(d) for d in warnings))}</system-out>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out)


def emit_json(payload: dict[str, object]) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=True))
