"""`bpfpolicy exec --seccomp PROFILE -- CMD...`: run a command under a seccomp profile.

PROFILE is a path -- it contains a `/` (`./web.json`, `/etc/p.yaml`) -- to a profile
file (native YAML or Docker/OCI JSON, compiled on the spot) or a compiled `filter.bin`;
or a bare NAME, which is always the installed profile
`$BPFPOLICY_STATE_DIR/seccomp/<name>/filter.bin` (default state dir /var/lib/bpfpolicy),
never a file of that name in the current directory. The filter is installed with NO_NEW_PRIVS in
this process, which then execs CMD: the exit status is CMD's own.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..controller.config import DEFAULT_STATE_DIR


def state_dir() -> Path:
    return Path(os.environ.get("BPFPOLICY_STATE_DIR") or DEFAULT_STATE_DIR)


class ExecError(click.ClickException):
    """A refusal before CMD runs: `bpfpolicy exec: <message>` on stderr, exit 1."""

    def show(self, file=None) -> None:  # noqa: ANN001 (click's signature)
        click.echo(f"bpfpolicy exec: {self.message}", err=True)


def looks_like_path(profile: str) -> bool:
    """A PROFILE naming a file must say so (`./web-api`, `/etc/x.json`, `dir/p.yaml`):
    a bare word is always the installed profile of that name, never a file that happens
    to sit in the current directory."""
    return "/" in profile


def load_filter(profile: str, caps: str | None, kernel: str | None, arch: str) -> tuple[bytes, list[str]]:
    """(filter bytes, seccomp flags) for PROFILE; raises a click exception with a
    `file:line:col` message when the profile is invalid."""
    if not looks_like_path(profile):
        return _installed(profile)
    p = Path(profile)
    try:
        if not p.is_file():
            raise ExecError(f'seccomp profile "{profile}": no such file')
        if p.suffix == ".bin":
            return p.read_bytes(), _flags_beside(p)
    except PermissionError as e:
        raise ExecError(f'seccomp profile "{profile}": cannot read it ({e.strerror})') from None
    return _compile_file(p, caps, kernel, arch)


def _installed(name: str) -> tuple[bytes, list[str]]:
    base = state_dir()
    cands = (base / "seccomp" / name / "filter.bin", base / "SeccompProfile" / name / "filter.bin")
    for cand in cands:
        try:
            if cand.is_file():
                return cand.read_bytes(), _flags_beside(cand)
        except PermissionError:
            raise ExecError(f'seccomp profile "{name}": {cand} needs root or the installed profile is not '
                            f"readable by uid {os.getuid()} (run as root, or give a profile file as ./{name})"
                            ) from None
    hint = f' (a file of that name is in the current directory: write "./{name}" to use it)' \
        if Path(name).is_file() else ""
    raise ExecError(f'seccomp profile "{name}": no compiled profile of that name in {base / "seccomp"}{hint}')


def _flags_beside(filter_bin: Path) -> list[str]:
    manifest = filter_bin.parent / "manifest.json"
    try:
        return list(json.loads(manifest.read_text())["seccomp"]["flags"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _compile_file(path: Path, caps: str | None, kernel: str | None, arch: str) -> tuple[bytes, list[str]]:
    from ..kinds import CompileContext
    from ..kinds.seccomp.kind import SeccompProfileKind
    from ..policy.diagnostics import PolicyError
    from ..policy.load import LoadError, load_file
    from ..policy.validate import validate_document

    try:
        docs = load_file(path)
    except LoadError as e:
        raise click.ClickException(str(e.diagnostic)) from None
    except OSError as e:
        raise ExecError(f'seccomp profile "{path}": cannot read it ({e.strerror})') from None
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
            from ..kinds.target import parse_kernel_version

            kv = parse_kernel_version(kernel)
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
              help="Path to a profile file or filter.bin (must contain '/', e.g. ./p.json), or the NAME of an installed profile.")
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
