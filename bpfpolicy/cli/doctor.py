"""`bpfpolicy doctor`: what this host supports, by actually trying."""

from __future__ import annotations

import json
import sys

import click

from . import render


@click.command("doctor")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(fmt: str) -> None:
    """Probe the kernel and toolchain: BTF, lockdown, program and attach types that load, tcx, clang, bpftool."""
    from ..doctor import run_all

    checks = run_all()
    essential = {("tools", "clang"), ("mounts", "bpffs"), ("load", "xdp"), ("load", "tc (sched_cls)")}
    healthy = all(c.ok for c in checks if (c.area, c.name) in essential)
    if fmt == "json":
        click.echo(json.dumps({"ok": healthy, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        render.doctor_table(checks)
    sys.exit(0 if healthy else 1)
