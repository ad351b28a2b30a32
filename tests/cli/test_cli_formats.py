"""Machine-readable output for CI: json, github annotations, junit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

GOOD = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {name: good}
spec:
  interfaces: [eth0]
  deny: [{name: bogons, sources: [192.0.2.0/24]}]
"""
BAD = GOOD.replace("name: good", "name: bad").replace("192.0.2.0/24", "192.0.2.0/99")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    return tmp_path


def test_json(cli, tree: Path) -> None:
    code, out = cli("validate", "--format", "json", str(tree))
    report = json.loads(out)
    assert code == 1 and report["valid"] is False
    assert [p["name"] for p in report["policies"]] == ["good"]
    (d,) = report["diagnostics"]
    assert d["file"].endswith("bad.yaml") and d["line"] == 6 and d["severity"] == "error"
    assert d["path"].startswith("spec.deny[0].sources[0]")


def test_github_annotations(cli, tree: Path) -> None:
    code, out = cli("validate", "--format", "github", str(tree))
    assert code == 1
    (line,) = [ln for ln in out.splitlines() if ln.startswith("::error ")]
    assert line.startswith(f"::error file={tree / 'bad.yaml'},line=6,col=")
    assert "192.0.2.0/99" in line


def test_junit(cli, tree: Path) -> None:
    code, out = cli("compile", "--dry-run", "--format", "junit", str(tree))
    assert code == 1
    suite = ET.fromstring(out)
    assert suite.get("failures") == "1"
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed == [str(tree / "bad.yaml")]


def test_compile_out_writes_artifacts(cli, tmp_path: Path, clang_required: None) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    out_dir = tmp_path / "out"
    code, out = cli("compile", "--out", str(out_dir), str(tmp_path / "good.yaml"))
    assert code == 0, out
    manifest = json.loads((out_dir / "XDPBlocklist" / "good" / "manifest.json").read_text())
    assert manifest["kind"] == "XDPBlocklist" and manifest["name"] == "good"
    assert (out_dir / "XDPBlocklist" / "good" / manifest["object"]).read_bytes()[:4] == b"\x7fELF"
