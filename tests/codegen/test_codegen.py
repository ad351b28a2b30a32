"""Policy strings cannot inject C; build errors point at the policy rule; the cache works."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfpolicy.codegen.build import build_bpf, explain_clang_failure
from bpfpolicy.codegen.render import c_comment, c_ident, c_string, policy_marker, resolve_markers
from bpfpolicy.policy.diagnostics import BuildError

NASTY = [
    'x"; } int evil(void) { return 1; } char y[] = "',
    "*/ #include </etc/passwd> /*",
    "line\nbreak\r\n\\",
    "??=define trigraph??/",
    "\u00e9\u4e2d\U0001f600",
    "\\x41\\101\x00",
]


def rodata(obj: bytes, tmp_path: Path) -> bytes:
    o = tmp_path / "x.o"
    o.write_bytes(obj)
    out = tmp_path / "rodata.bin"
    objcopy = shutil.which("llvm-objcopy") or "llvm-objcopy"
    subprocess.run([objcopy, "-O", "binary", "--only-section=.rodata", str(o), str(out)], check=True)
    return out.read_bytes()


@pytest.mark.parametrize("text", NASTY)
def test_c_string_round_trips_through_clang(text: str, tmp_path: Path, clang_required: None) -> None:
    src = f"/* {c_comment(text)} */\nconst volatile char s[] = {c_string(text)};\n"
    result = build_bpf(src, name="esc", use_cache=False)
    assert rodata(result.object, tmp_path).rstrip(b"\0") == text.encode().rstrip(b"\0")


def test_c_ident_is_valid_and_distinct() -> None:
    names = ["allow-ssh", "allow_ssh", "9lives", "", "a" * 300, "x;y", "x;y "]
    idents = [c_ident(n) for n in names]
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,80}", i) for i in idents)
    assert len(set(idents)) == len(idents)


def test_c_comment_cannot_close_the_comment() -> None:
    assert "*/" not in c_comment("a */ b /* c")
    assert "\n" not in c_comment("a\nb")


def test_build_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clang_required: None) -> None:
    monkeypatch.setenv("BPFPOLICY_CACHE", str(tmp_path))
    src = "int x = 42;\n"
    first = build_bpf(src, name="cache")
    second = build_bpf(src, name="cache")
    assert (first.cached, second.cached) == (False, True)
    assert first.object == second.object
    assert len(list((tmp_path / "objects").rglob("*.o"))) == 1


def test_clang_error_is_attributed_to_the_policy_rule(clang_required: None) -> None:
    marker = policy_marker("edge.yaml:12:7", "spec.deny[2]")
    src = resolve_markers(f"int ok = 1;\n/* {marker} */\nint bad = undefined_symbol;\n")
    with pytest.raises(BuildError) as e:
        build_bpf(src, name="bad", use_cache=False)
    assert str(e.value).startswith("edge.yaml:12:7: spec.deny[2]: generated C failed to compile:")
    assert "undefined_symbol" in str(e.value)


def test_unmarked_clang_error_names_the_generated_line() -> None:
    msg = explain_clang_failure("a\nb\n", "/tmp/x.c:2:1: error: boom\n")
    assert msg == "generated C line 2 failed to compile: boom"
