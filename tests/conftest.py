"""Shared test fixtures. Kernel fixtures (netns, veth) live in tests/helpers/kernel_fixtures.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"

try:  # netns/veth fixtures from the kernel layer's test helpers
    from helpers.kernel_fixtures import *  # noqa: F403
except ImportError:
    pass


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"conformance corpus not found at {CORPUS} (it sits beside the repo as ../shared)")
    return CORPUS


@pytest.fixture
def cli():
    """Run the real click CLI in-process; returns (exit_code, output)."""
    from bpfpolicy.cli import cli as group

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(group, list(args), catch_exceptions=False)
        return result.exit_code, result.output

    return run


@pytest.fixture
def root_required() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF loads, netns, cgroups)")


@pytest.fixture
def clang_required() -> None:
    if not shutil.which("clang"):
        pytest.skip("clang not installed (scripts/setup.sh installs it)")
