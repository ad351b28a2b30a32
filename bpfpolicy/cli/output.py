"""Rendering diagnostics for humans and machines (text, json, junit, github)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

import click

from ..policy.diagnostics import Diagnostic

FORMATS = ("text", "json", "junit", "github")


def summary(diags: list[Diagnostic], files: int, policies: int) -> str:
    errors = sum(d.severity == "error" for d in diags)
    warnings = len(diags) - errors
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
    level = "error" if d.severity == "error" else "warning"
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
