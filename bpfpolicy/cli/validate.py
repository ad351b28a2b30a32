"""`bpfpolicy validate PATH…`: exit 0 valid, 1 invalid, 2 usage."""

from __future__ import annotations

import sys

import click

from ..policy.validate import validate_paths
from ..resources import CODEGEN_DIR, SCHEMAS_DIR, MissingPackageData, require
from . import render


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


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(render.FORMATS), default="text", show_default=True)
@click.option("--lenient", is_flag=True, help="Drop rules that use features with no meaning on one host (warning instead of error).")
def command(paths: tuple[str, ...], fmt: str, lenient: bool) -> None:
    """Validate policy files and directories (YAML, JSON; Cilium, Tetragon, Docker/OCI seccomp)."""
    require_package_data()
    result = validate_paths(paths, lenient=lenient)
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
