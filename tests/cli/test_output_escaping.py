"""CI output cannot be forged by a file name (issue #11): GitHub workflow commands escape
data and properties, JUnit is well-formed XML whatever the name holds."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BAD = "apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {name: t}\nspec:\n  interfaces: [lo]\n" \
      "  deny:\n    - sources: [not-an-address]\n"

# file names a repository can hold: each must give exactly one annotation per diagnostic
NAMES = [
    "x\n::add-mask::hunter2.yaml",
    "x\n::error file=README.md,line=1::forged.yaml",
    "100%25,col=9:evil.yaml",
    "a,b:c%0Ad.yaml",
    "ctl\x01\x08\x0b\x1b.yaml",
    "cr\rlf.yaml",
]


def _unescape(v: str) -> str:
    return v.replace("%0A", "\n").replace("%0D", "\r").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bpfpolicy", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO, errors="surrogateescape")


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_github_one_annotation_per_diagnostic(tmp_path: Path, name: str) -> None:
    f = tmp_path / name
    f.write_text(BAD)
    proc = _cli("validate", "--format", "github", str(f))
    assert proc.returncode == 1
    lines = proc.stdout.split("\n")
    assert lines[-1] == "" and len(lines) == 2, proc.stdout  # one line, one annotation
    line = lines[0]
    head, sep, message = line.partition("::")[2].partition("::")
    assert sep and head.startswith("error file=")
    props = dict(p.split("=", 1) for p in head[len("error "):].split(","))
    assert set(props) == {"file", "line", "col"}  # `,` and `:` in the name cannot add one
    assert _unescape(props["file"]) == str(f)
    assert props["line"] == "7" and "\r" not in line
    assert "is not a valid" in _unescape(message)


def test_github_escapes_message_and_properties() -> None:
    from bpfpolicy.cli.render import github_line
    from bpfpolicy.policy.diagnostics import Diagnostic

    d = Diagnostic("a,b:c\n::x%.yaml", 3, 4, "spec", "bad\n::add-mask::s3cret 100%\r")
    assert github_line(d) == ("::error file=a%2Cb%3Ac%0A%3A%3Ax%25.yaml,line=3,col=4"
                              "::spec: bad%0A::add-mask::s3cret 100%25%0D")


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_junit_parses(tmp_path: Path, name: str) -> None:
    f = tmp_path / name
    f.write_text(BAD)
    proc = _cli("validate", "--format", "junit", str(f))
    assert proc.returncode == 1
    suite = ET.fromstring(proc.stdout.encode("utf-8", "surrogateescape"))
    cases = suite.findall("testcase")
    assert suite.get("failures") == "1" and len(cases) == 1
    expected = "".join(c if c in "\t\n\r" or ord(c) >= 0x20 else "\ufffd" for c in str(f))
    assert cases[0].get("name") == expected
    assert "is not a valid" in cases[0].find("failure").get("message")


def test_junit_strips_xml_illegal_characters() -> None:
    from bpfpolicy.cli.render import junit_xml
    from bpfpolicy.policy.diagnostics import Diagnostic

    diags = [Diagnostic("a\x00b\x1f<c>&\"'.yaml", 1, 1, "$", "msg \x07 ]]> </failure> \ud800 \ufffe end")]
    root = ET.fromstring(junit_xml(diags, [], "s\x0c\nuite"))
    case = root.find("testcase")
    assert case.get("name") == "a\ufffdb\ufffd<c>&\"'.yaml"
    assert root.get("name") == "s\ufffd\nuite"
    fail = case.find("failure")
    assert fail.get("message") == "msg \ufffd ]]> </failure> \ufffd \ufffd end"
    assert fail.text.endswith("msg \ufffd ]]> </failure> \ufffd \ufffd end")
