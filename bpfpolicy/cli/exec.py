"""`bpfpolicy exec --seccomp PROFILE -- CMD...`: run a command under a seccomp profile.

PROFILE is a profile file (native YAML or Docker/OCI JSON, compiled on the spot), a
compiled `filter.bin`, or a name looked up as `$BPFPOLICY_STATE_DIR/seccomp/<name>/filter.bin`
(default state dir /var/lib/bpfpolicy). The filter is installed with NO_NEW_PRIVS in
this process, which then execs CMD: the exit status is CMD's own.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

DEFAULT_STATE_DIR = "/var/lib/bpfpolicy"


def state_dir() -> Path:
    return Path(os.environ.get("BPFPOLICY_STATE_DIR") or DEFAULT_STATE_DIR)


def load_filter(profile: str, caps: str | None, kernel: str | None, arch: str) -> tuple[bytes, list[str]]:
    """(filter bytes, seccomp flags) for PROFILE; raises click.ClickException with a
    `file:line:col` message when the profile is invalid."""
    p = Path(profile)
    if p.is_file():
        if p.suffix == ".bin":
            return p.read_bytes(), _flags_beside(p)
        return _compile_file(p, caps, kernel, arch)
    if "/" not in profile:
        for cand in (state_dir() / "seccomp" / profile / "filter.bin",
                     state_dir() / "SeccompProfile" / profile / "filter.bin"):
            if cand.is_file():
                return cand.read_bytes(), _flags_beside(cand)
    raise click.ClickException(
        f'seccomp profile "{profile}": no such file, and no compiled profile of that name in '
        f"{state_dir() / 'seccomp'}")


def _flags_beside(filter_bin: Path) -> list[str]:
    manifest = filter_bin.parent / "manifest.json"
    try:
        return list(json.loads(manifest.read_text())["seccomp"]["flags"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _compile_file(path: Path, caps: str | None, kernel: str | None, arch: str) -> tuple[bytes, list[str]]:
    from ..errors import PolicyError
    from ..kinds import CompileContext
    from ..kinds.seccomp_profile import SeccompProfileKind
    from ..load import LoadError, load_file
    from ..validate import validate_document

    try:
        docs = load_file(path)
    except LoadError as e:
        raise click.ClickException(str(e.diagnostic)) from None
    for doc in docs:
        validated, diags = validate_document(doc)
        for d in diags:
            if d.severity == "warning":
                click.echo(str(d), err=True)
        if validated is None:
            raise click.ClickException("\n".join(str(d) for d in diags if d.severity == "error") or "invalid profile")
        if validated.ident.kind is not SeccompProfileKind:
            continue
        kv = None
        if kernel:
            from ..seccomp.resolve import parse_kernel

            kv = parse_kernel(kernel)
            if kv is None:
                raise click.BadParameter(f'"{kernel}" is not a kernel version like 6.1', param_hint="--kernel")
        options = {"caps": [c.strip() for c in caps.split(",") if c.strip()]} if caps is not None else {}
        try:
            artifact = SeccompProfileKind().compile(doc, CompileContext(kernel=kv, arch=arch, options=options))
        except PolicyError as e:
            raise click.ClickException(str(e)) from None
        return artifact.files["filter.bin"], list(artifact.manifest["seccomp"]["flags"])
    raise click.ClickException(f"{path}: no SeccompProfile in this file")


@click.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--seccomp", "profile", required=True, metavar="PROFILE",
              help="Profile file (YAML/JSON), compiled filter.bin, or a name in the state dir.")
@click.option("--caps", help="Comma-separated capabilities for includes/excludes (default: Docker's set).")
@click.option("--kernel", help="Kernel MAJOR.MINOR for minKernel (default: running kernel).")
@click.option("--arch", default=os.uname().machine, show_default=True, help="Native architecture.")
@click.option("--flag", "extra_flags", multiple=True, help="Extra seccomp flag (TSYNC, LOG, SPEC_ALLOW).")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(profile: str, caps: str | None, kernel: str | None, arch: str,
                 extra_flags: tuple[str, ...], cmd: tuple[str, ...]) -> None:
    """Run CMD under a seccomp profile (NO_NEW_PRIVS + seccomp(2)); exits with CMD's status."""
    from ..kernel import seccomp as kseccomp

    filt, flags = load_filter(profile, caps, kernel, arch)
    argv = list(cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise click.UsageError("no command given after --")
    try:
        kseccomp.install(filt, [*flags, *extra_flags])
    except (OSError, ValueError) as e:
        raise click.ClickException(f"installing the seccomp filter failed: {e}") from None
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        # like env(1)/exec: 127 not found, 126 found but not runnable
        click.echo(f"bpfpolicy exec: {argv[0]}: {e.strerror}", err=True)
        sys.exit(127 if isinstance(e, FileNotFoundError) else 126)


command = exec_command
