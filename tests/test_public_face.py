"""`bpfpolicy` is the public face: every name in `__all__` resolves, the pipeline runs
through it, and importing it stays cheap (the heavy parts load on first use)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bpfpolicy

POLICIES = Path(__file__).resolve().parent.parent / "policies"


def test_every_public_name_resolves() -> None:
    for name in bpfpolicy.__all__:
        assert getattr(bpfpolicy, name) is not None, name
    assert set(bpfpolicy.__all__) <= set(dir(bpfpolicy))


def test_importing_the_package_loads_nothing_heavy() -> None:
    probe = ("import sys, bpfpolicy; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "{'bpfpolicy', 'jsonschema', 'jinja2', 'yaml', 'pyroute2', 'rich', 'numpy'}))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "['bpfpolicy']"


def test_the_pipeline_through_the_public_face() -> None:
    docs, problems = bpfpolicy.load([POLICIES])
    assert docs and not problems
    assert bpfpolicy.validate([POLICIES]).ok
    result = bpfpolicy.compile([POLICIES / "xdp"])
    assert result.ok and result.artifacts
    assert issubclass(bpfpolicy.PolicyError, Exception)
    assert isinstance(result.diagnostics, list)
