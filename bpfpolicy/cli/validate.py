"""`bpfpolicy validate PATH…`: exit 0 valid, 1 invalid, 2 usage."""

from __future__ import annotations

import dataclasses
import sys

import click

from ..kinds import CompileContext
from ..kinds.target import is_backend_change, parse_kernel_version
from ..policy.diagnostics import Diagnostic
from ..policy.validate import ValidationResult, validate_paths
from ..resources import CODEGEN_DIR, SCHEMAS_DIR, MissingPackageData, require
from . import render


def _kernel(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    version = parse_kernel_version(value)
    if version is None:
        raise click.BadParameter(f'"{value}" is not a kernel version like 6.1')
    return version


def require_package_data(*, templates: bool = False) -> None:
    """A package installed without its schemas (or templates) is broken: exit 2 naming
    what is missing, rather than validate without schema checks or die in codegen with
    a TemplateNotFound traceback."""
    try:
        require(SCHEMAS_DIR, "JSON schemas (package data bpfpolicy/schemas)")
        if templates:
            require(CODEGEN_DIR, "C templates (package data bpfpolicy/codegen/templates)")
    except MissingPackageData as e:
        click.echo(f"bpfpolicy: error: {e}", err=True)
        sys.exit(2)


STRICT_BACKEND_HELP = "Make a hook that runs on another backend than it asks for (kprobe → tracepoint, → LSM, …) an error."


def promote_backend_changes(diags: list[Diagnostic], strict: bool) -> list[Diagnostic]:
    """--strict-backend: the backend-change warnings become errors (exit 1)."""
    if not strict:
        return diags
    return [dataclasses.replace(d, severity="error") if d.severity == "warning" and is_backend_change(d.message)
            else d for d in diags]


def backend_notes(result: ValidationResult, kernel: tuple[int, int] | None, arch: str) -> list[Diagnostic]:
    """Per hook, where it runs on the target, for the kinds that choose a backend."""
    out: list[Diagnostic] = []
    for p in result.policies:
        describe = getattr(p.ident.kind(), "backend_diagnostics", None)
        if describe is not None:
            out += describe(p.model, CompileContext(kernel=kernel, arch=arch))
    return out


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(render.FORMATS), default="text", show_default=True)
@click.option("--lenient", is_flag=True, help="Drop rules that use features with no meaning on one host (warning instead of error).")
@click.option("--kernel", callback=lambda _c, _p, v: _kernel(v), help="Say what runs where on this kernel MAJOR.MINOR (default: running kernel).")
@click.option("--arch", default="x86_64", show_default=True, help="Target architecture.")
@click.option("--strict-backend", is_flag=True, help=STRICT_BACKEND_HELP)
def command(paths: tuple[str, ...], fmt: str, lenient: bool, kernel: tuple[int, int] | None, arch: str,
            strict_backend: bool) -> None:
    """Validate policy files and directories (YAML, JSON; Cilium, Tetragon, Docker/OCI seccomp)."""
    require_package_data()
    result = validate_paths(paths, lenient=lenient)
    if result.ok:
        result.diagnostics = promote_backend_changes(
            result.diagnostics + backend_notes(result, kernel, arch), strict_backend)
    files = sorted({p.doc.file for p in result.policies} | {d.file for d in result.diagnostics})
    if fmt == "json":
        render.emit_json({
            "valid": result.ok,
            "files": result.files,
            "policies": [{"file": p.doc.file, "kind": p.ident.kind.kind, "format": p.ident.label,
                          "name": p.name} for p in result.policies],
            "diagnostics": [d.as_dict() for d in result.diagnostics],
        })
    elif fmt == "github":
        render.emit_github(result.diagnostics)
    elif fmt == "junit":
        click.echo(render.junit_xml(result.diagnostics, files, "bpfpolicy.policy.validate"))
    else:
        render.emit_text(result.diagnostics)
        click.echo(render.summary(result.diagnostics, result.files, len(result.policies)), err=True)
    sys.exit(0 if result.ok else 1)
