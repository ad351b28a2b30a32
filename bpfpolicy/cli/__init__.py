"""The `bpfpolicy` command line. Each command lives in its own module in this package
and is registered here by name; a module exposes `command` or a list `commands`."""

from __future__ import annotations

import importlib

import click

from .. import __version__

# One entry per command module (later issues add theirs here).
COMMAND_MODULES = ["validate", "compile", "doctor", "exec", "controller", "kernel_test", "service"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bpfpolicy")
def cli() -> None:
    """Policy-as-code for the Linux kernel: validate, compile and reconcile eBPF/seccomp policies."""


def _register() -> None:
    for name in COMMAND_MODULES:
        qualified = f"{__name__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as e:
            if e.name == qualified:  # not written yet: the command is absent, not stubbed
                continue
            raise
        for cmd in getattr(module, "commands", None) or [getattr(module, "command", None)]:
            if cmd is not None:
                cli.add_command(cmd)


_register()


def main() -> None:
    cli(prog_name="bpfpolicy")
