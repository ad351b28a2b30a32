"""The `bpfpolicy` command line: parsing only. Each command lives in its own module
and is registered here by name (a module exposes `command` or a list `commands`);
every line a command prints goes through `render`.

    validate     `validate PATH…` (exit 0 valid, 1 invalid, 2 usage or broken install)
    compile      `compile PATH… --out DIR | --dry-run`; shared compile options
    doctor       `doctor`: what this host supports, by trying
    exec         `exec --seccomp PROFILE -- CMD…`: run a command under a profile
    controller   plan, apply, watch, status, destroy, events, suspend, resume
    kernel_test  `kernel-test`: the QEMU kernel matrix
    service      `install-service`: the systemd unit for `watch`
    render       every output: text/json/junit/github diagnostics and the rich tables
"""

from __future__ import annotations

import importlib

import click

from .. import __version__

# One entry per command module (later issues add theirs here).
COMMAND_MODULES = ["validate", "compile", "doctor", "exec", "controller", "kernel_test", "service", "test"]


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
