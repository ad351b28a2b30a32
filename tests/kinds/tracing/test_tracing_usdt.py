"""TracingPolicy `usdts` on this host: a `<sys/sdt.h>` probe (Debian systemtap-sdt-dev) in
a C program built here, attached as a uprobe at its note's address; arguments from the
note's register spec, matchArgs on them, and the validation rows."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bpfpolicy.kinds.tracing.usdt import arg_registers, find_note

from helpers.tracing import compile_one, errors, validate, write

PROG = r"""
#include <stdlib.h>
#include <sys/sdt.h>
__attribute__((noinline)) void hit(int x, long y) { DTRACE_PROBE2(bpfpolicy, hit, x, y); }
int main(int argc, char **argv) { for (int i = 1; i < argc; i++) hit(i, atol(argv[i])); return 0; }
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path("/usr/include/x86_64-linux-gnu/sys/sdt.h").exists() and not Path("/usr/include/sys/sdt.h").exists():
        pytest.skip("<sys/sdt.h> missing: apt install systemtap-sdt-dev (scripts/setup.sh)")
    d = tmp_path_factory.mktemp("usdt")
    (d / "prog.c").write_text(PROG)
    subprocess.run(["cc", "-O2", "-o", str(d / "prog"), str(d / "prog.c")], check=True)
    return d / "prog"


def test_note_is_read_from_the_binary(prog: Path) -> None:
    note = find_note(str(prog), "bpfpolicy", "hit")
    assert note is not None and note.offset > 0 and note.semaphore == 0
    assert arg_registers(note.args) == [0, 1], note.args  # x in %edi, y in %rsi


@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.kernel
def test_usdt_posts_matching_probe_hits_with_args(tmp_path: Path, prog: Path) -> None:
    from test_tracing_uprobe import run_events

    path = write(tmp_path, f"usdts:\n- path: {prog}\n  provider: bpfpolicy\n  name: hit\n"
                 "  args: [{index: 0, type: int32}, {index: 1, type: int64}]\n  selectors:\n"
                 "  - {matchArgs: [{index: 1, operator: GT, values: ['100']}], matchActions: [{action: Post}]}\n")
    art, diags = compile_one(path)
    assert art is not None, diags
    assert art.manifest["programs"][0]["section"].startswith(f"uprobe/{prog}:+0x")
    proc, got = run_events(art, [str(prog), "5", "500", "7", "900"])
    assert proc.returncode == 0
    assert [(e["args"][0]["value"], e["args"][1]["value"]) for e in got if e["binary"] == str(prog)] == \
        [(2, 500), (4, 900)]


BAD = [
    ("noprobe", "provider: bpfpolicy\n  name: missing", "name", "no USDT probe bpfpolicy:missing"),
    ("relative", "provider: bpfpolicy\n  name: hit", "path", "is not an absolute path"),
]


@pytest.mark.parametrize(("name", "body", "where", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_usdt_is_refused_at_its_line(tmp_path: Path, prog: Path, name: str, body: str,
                                         where: str, message: str) -> None:
    binary = "bin/prog" if name == "relative" else str(prog)
    path = write(tmp_path, f"usdts:\n- path: {binary}\n  {body}\n", name=name)
    errs = errors(validate(path))
    assert errs and message in errs[0].message and errs[0].line > 0, errs
    assert errs[0].path.endswith(where)
