"""Artifacts do not depend on how the policy path is spelled or where the command runs
(issue: what CI compiled must match the host byte for byte). Files are recorded relative
to their policy tree; diagnostics keep the user's spelling."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KINDS = ["xdp", "seccomp", "tracing", "netpol"]


def _compile(cwd: Path, target: str, out: Path) -> dict[str, bytes]:
    inv = str(ROOT / "examples" / "host-config.yaml")
    proc = subprocess.run([sys.executable, "-m", "bpfpolicy", "compile", "--inventory", inv, "--out", str(out),
                           target], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.usefixtures("clang_required")
def test_every_artifact_file_is_identical_however_the_path_is_spelled(tmp_path: Path) -> None:
    tree = tmp_path / "pol"
    shutil.copytree(ROOT / "policies", tree, ignore=shutil.ignore_patterns("*.test.yaml"))
    spellings = [
        (tmp_path, "pol"),                      # relative
        (Path("/"), str(tree)),                 # absolute, from elsewhere
        (tree, "."),                            # from inside the tree
        (tmp_path, "pol/../pol/"),              # with .. and a trailing slash
    ]
    results = [_compile(cwd, target, tmp_path / f"out{i}") for i, (cwd, target) in enumerate(spellings)]
    assert results[0], "nothing compiled"
    for (cwd, target), files in zip(spellings[1:], results[1:], strict=True):
        assert files.keys() == results[0].keys(), target
        differing = [name for name in files if files[name] != results[0][name]]
        assert not differing, f"{target} from {cwd}: {differing}"


def test_diagnostics_keep_the_users_spelling(tmp_path: Path, cli) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {name: x}\nspec: {nope: 1}\n")
    code, out = cli("validate", str(bad))
    assert code == 1
    assert out.startswith(f"{bad}:4:"), out
