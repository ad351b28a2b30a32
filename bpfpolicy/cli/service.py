"""`bpfpolicy install-service`: install the systemd unit for `bpfpolicy watch`.

The unit template ships in the package (bpfpolicy/cli/bpfpolicy.service, linked from
contrib/), so this works from a wheel. Its ExecStart= is rewritten to the executable that
is actually running (a venv, ~/.local, /usr/local: whatever pip installed), because a
unit naming a path nothing installed cannot start. A default config (a directory source
under /etc/bpfpolicy/policies) is written only when none exists. A unit someone edited is
never overwritten without --force: the file carries a marker with the hash of what we
wrote, and a different content means a human changed it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import click

UNIT_NAME = "bpfpolicy.service"
TEMPLATE_EXEC = "/usr/local/bin/bpfpolicy"
MARKER = "# installed by bpfpolicy install-service, content sha256:"

DEFAULT_CONFIG = """\
# /etc/bpfpolicy/config.yaml — written by `bpfpolicy install-service`; every field is
# optional (docs/operations.md). Policies are read from this directory and watched:
source: /etc/bpfpolicy/policies
# or a git source:
# source:
#   git:
#     repo: https://git.example.com/platform/host-policies.git
#     ref: main
#     pollInterval: 1m
#     path: hosts/web
bpffsRoot: /sys/fs/bpf/bpfpolicy
stateDir: /var/lib/bpfpolicy
interval: 30s
selfHeal: true
metricsAddress: 127.0.0.1:9469
"""


@dataclass(frozen=True)
class InstallPlan:
    """Every file the command would write, with its content; `action` says why."""

    unit_path: Path
    unit_text: str
    unit_action: str  # "create" | "update" | "unchanged" | "modified-locally"
    config_path: Path
    config_action: str  # "create" | "keep"
    policies_dir: Path


def running_executable() -> Path:
    """The `bpfpolicy` executable serving this process: argv[0] when it is the console
    script, else the one next to this interpreter (a venv), else the one on PATH."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "bpfpolicy" and argv0.exists():
        return argv0.resolve()
    beside = Path(sys.executable).parent / "bpfpolicy"
    if beside.exists():
        return beside.absolute()
    found = shutil.which("bpfpolicy")
    if found:
        return Path(found).resolve()
    raise click.ClickException("cannot find the bpfpolicy executable (pip install bpfpolicy first)")


def template() -> str:
    return resources.files(__package__).joinpath(UNIT_NAME).read_text()


def render_unit(executable: Path) -> str:
    """The template with ExecStart pointing at `executable`, plus the ownership marker."""
    text = template().replace(TEMPLATE_EXEC, str(executable))
    return f"{MARKER}{_digest(text)}\n{text}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _unit_action(path: Path, new_text: str) -> str:
    if not path.exists():
        return "create"
    old = path.read_text()
    if old == new_text:
        return "unchanged"
    first, _, body = old.partition("\n")
    if not first.startswith(MARKER) or first[len(MARKER):] != _digest(body):
        return "modified-locally"
    return "update"


def plan_install(prefix: Path, executable: Path) -> InstallPlan:
    unit_path = prefix / "etc/systemd/system" / UNIT_NAME
    config_path = prefix / "etc/bpfpolicy/config.yaml"
    unit_text = render_unit(executable)
    return InstallPlan(unit_path=unit_path, unit_text=unit_text,
                       unit_action=_unit_action(unit_path, unit_text),
                       config_path=config_path,
                       config_action="keep" if config_path.exists() else "create",
                       policies_dir=prefix / "etc/bpfpolicy/policies")


def write_install(plan: InstallPlan, force: bool) -> None:
    if plan.unit_action == "modified-locally" and not force:
        raise click.ClickException(
            f"{plan.unit_path} was edited after it was installed; not overwriting it "
            "(use --force, or put local changes in a drop-in: systemctl edit bpfpolicy)")
    if plan.unit_action != "unchanged":
        plan.unit_path.parent.mkdir(parents=True, exist_ok=True)
        plan.unit_path.write_text(plan.unit_text)
        plan.unit_path.chmod(0o644)
    if plan.config_action == "create":
        plan.config_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        plan.config_path.write_text(DEFAULT_CONFIG)
        plan.config_path.chmod(0o644)
    plan.policies_dir.mkdir(parents=True, exist_ok=True, mode=0o755)


def systemd_running() -> bool:
    """sd_booted(): systemd is PID 1 when /run/systemd/system exists."""
    return Path("/run/systemd/system").is_dir()


@click.command("install-service")
@click.option("--prefix", type=click.Path(file_okay=False, path_type=Path), default=Path("/"),
              show_default=True, help="Root to install under (a staging directory or an image).")
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@click.option("--force", is_flag=True, help="Overwrite a unit that was edited after installation.")
@click.option("--executable", type=click.Path(dir_okay=False, path_type=Path),
              help="The bpfpolicy executable ExecStart= runs (default: the one running now).")
def command(prefix: Path, dry_run: bool, force: bool, executable: Path | None) -> None:
    """Install the systemd unit (Type=notify, hardened) and a default config if missing."""
    exe = executable.absolute() if executable else running_executable()
    plan = plan_install(prefix, exe)
    click.echo(f"unit    {plan.unit_path}: {plan.unit_action} (ExecStart={exe} watch)")
    click.echo(f"config  {plan.config_path}: {plan.config_action}")
    if dry_run:
        click.echo("dry run: nothing written")
        return
    write_install(plan, force)
    if prefix.resolve() != Path("/"):
        click.echo(f"installed under {prefix}; run `systemctl daemon-reload` on the target")
    elif not systemd_running():
        click.echo("systemd is not running here (PID 1 is not systemd): skipped daemon-reload")
    else:
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        click.echo("systemctl daemon-reload: done; start with `systemctl enable --now bpfpolicy`")
