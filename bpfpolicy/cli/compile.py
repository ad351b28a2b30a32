"""`bpfpolicy compile PATH… --out DIR` (or `--dry-run`): artifacts per policy."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from ..kinds import CompileContext
from ..kinds.target import format_kernel_version, parse_kernel_version, running_kernel_version
from ..policy.compile import compile_paths, write_artifacts
from ..policy.diagnostics import Diagnostic
from . import render
from .validate import STRICT_BACKEND_HELP, promote_backend_changes, require_package_data


def parse_kernel(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    version = parse_kernel_version(value)
    if version is None:
        raise click.BadParameter(f'"{value}" is not a kernel version like 6.1')
    return version


def context_options(f):  # type: ignore[no-untyped-def]
    """Options shared by every command that compiles (compile, plan, apply, kernel-test)."""
    for opt in reversed([
        click.option("--kernel", callback=parse_kernel, help="Target kernel MAJOR.MINOR (default: running kernel)."),
        click.option("--arch", default="x86_64", show_default=True, help="Target architecture."),
        click.option("--caps", help="Comma-separated capabilities for seccomp includes/excludes (default: Docker's set)."),
        click.option("--inventory", type=click.Path(exists=True, dir_okay=False), help="Endpoint inventory (YAML list or host config with `inventory:`)."),
        click.option("--revision", help="Revision stamped into artifacts (e.g. main@sha1:…)."),
        click.option("--lenient", is_flag=True, help="Drop rules with features that have no meaning on one host, with a warning."),
    ]):
        f = opt(f)
    return f


def make_context(kernel: tuple[int, int] | None, arch: str, caps: str | None,
                 inventory: str | None, revision: str | None) -> CompileContext:
    options: dict[str, object] = {}
    if caps is not None:
        options["caps"] = [c.strip() for c in caps.split(",") if c.strip()]
    if inventory:  # a list of endpoints, or a host config with `endpoints:`; the kind parses it
        options["inventory"] = inventory
    return CompileContext(kernel=kernel, arch=arch, options=options, revision=revision)


@click.command("compile")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Where artifacts go (out/<Kind>/<name>/).")
@click.option("--dry-run", is_flag=True, help="Build in a temporary directory (and run the verifier when privileged); write nothing.")
@click.option("--format", "fmt", type=click.Choice(render.FORMATS), default="text", show_default=True)
@click.option("--strict-backend", is_flag=True, help=STRICT_BACKEND_HELP)
@context_options
def command(paths: tuple[str, ...], out_dir: str | None, dry_run: bool, fmt: str, kernel: tuple[int, int] | None,
            arch: str, caps: str | None, inventory: str | None, revision: str | None, lenient: bool,
            strict_backend: bool) -> None:
    """Validate and compile policies to BPF objects / seccomp filters."""
    if not out_dir and not dry_run:
        raise click.UsageError("give --out DIR, or --dry-run")
    require_package_data(templates=True)
    ctx = make_context(kernel, arch, caps, inventory, revision)
    result = compile_paths(paths, ctx, lenient=lenient)
    diags = promote_backend_changes(list(result.diagnostics), strict_backend)
    written: list[Path] = []
    if not any(d.severity == "error" for d in diags):
        if dry_run:
            with tempfile.TemporaryDirectory(prefix="bpfpolicy-dry-run-") as tmp:
                written = write_artifacts(result, Path(tmp))
                diags += verify_in_kernel(written, [p.doc.diag((), "") for p, _ in result.artifacts], kernel)
            written = []
        else:
            written = write_artifacts(result, Path(out_dir or "out"))
    ok = not any(d.severity == "error" for d in diags)
    report(fmt, diags, result, written, ok, dry_run)
    sys.exit(0 if ok else 1)


def verify_in_kernel(artifact_dirs: list[Path], where: list[Diagnostic],
                     kernel: tuple[int, int] | None = None) -> list[Diagnostic]:
    """With privileges, load every object through the verifier (nothing attached) — only
    on the kernel it was compiled for: another kernel's verifier (and its missing hook
    types) would report rejections that say nothing about the target."""
    if os.geteuid() != 0 or not artifact_dirs:
        return []
    if kernel is not None and kernel != running_kernel_version():
        text = format_kernel_version(kernel)
        click.echo(f"note: not verified: this host runs {format_kernel_version(running_kernel_version())}; "
                   f"verification needs the target kernel: run `bpfpolicy kernel-test --kernels {text}`",
                   err=True)
        return []
    from ..codegen.verify import verify_artifact

    diags: list[Diagnostic] = []
    for artifact_dir, fallback in zip(artifact_dirs, where, strict=True):
        diags.extend(verify_artifact(artifact_dir, fallback))
    return diags


def report(fmt: str, diags: list[Diagnostic], result, written: list[Path], ok: bool, dry_run: bool) -> None:  # type: ignore[no-untyped-def]
    files = sorted({p.doc.file for p, _ in result.artifacts} | {d.file for d in diags})
    if fmt == "json":
        render.emit_json({
            "ok": ok, "dry_run": dry_run,
            "artifacts": [{"kind": a.kind, "name": a.name, "digest": a.digest, "file": p.doc.file,
                           "files": sorted(a.files), "warnings": a.warnings} for p, a in result.artifacts],
            "written": [str(w) for w in written],
            "diagnostics": [d.as_dict() for d in diags],
        })
    elif fmt == "github":
        render.emit_github(diags)
    elif fmt == "junit":
        click.echo(render.junit_xml(diags, files, "bpfpolicy.policy.compile"))
    else:
        render.emit_text(diags)
        for _policy, artifact in result.artifacts:
            for warning in artifact.warnings:
                click.echo(f"{artifact.kind}/{artifact.name}: warning: {warning}")
            where = "(dry run)" if dry_run else f"→ {Path(written[0]).parent.parent if written else ''}/{artifact.kind}/{artifact.name}"
            click.echo(f"compiled {artifact.kind}/{artifact.name} {where} digest {artifact.digest[:12]}")
        click.echo(("ok" if ok else "failed") + f": {len(result.artifacts)} artifact(s), "
                   f"{sum(d.severity == 'error' for d in diags)} error(s)", err=True)
