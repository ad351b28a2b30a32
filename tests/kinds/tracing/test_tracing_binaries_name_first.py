"""matchBinaries In/NotIn read the executable's file name (its length first) and walk the
full path only when the name is a listed path's (templates/tracing/match.j2). Real
processes on this host (sys_openat → tp/syscalls/sys_enter_openat): copies of `cat` at a
listed path, at another directory under the same name, and under another name; the
events' `binary` is still the full path when the name check alone decided (NotIn)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bpfpolicy.kinds.tracing.events import decode_event

from helpers.tracing import compile_one, loaded, manifest, write

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("root_required", "clang_required")]


def copies(tmp_path: Path) -> dict[str, Path]:
    cat = shutil.which("cat")
    assert cat is not None
    out = {"listed": tmp_path / "d1" / "cat", "same_name": tmp_path / "d2" / "cat",
           "other_name": tmp_path / "d1" / "tac2"}
    for p in out.values():
        p.parent.mkdir(exist_ok=True)
        shutil.copy(cat, p)
    return out


def run(tmp_path: Path, selectors: str) -> dict[str, list[dict]]:
    bins = copies(tmp_path)
    art, diags = compile_one(write(tmp_path, f"""\
kprobes:
- call: sys_openat
  syscall: true
  args: [{{index: 1, type: string}}]
  selectors:
{selectors}"""))
    assert art is not None, diags
    target = tmp_path / "file"
    target.write_text("x\n")
    got: dict[str, list[dict]] = {}
    with loaded(art) as (_obj, reader):
        pids = {}
        for k, b in bins.items():
            proc = subprocess.Popen([str(b), str(target)], stdout=subprocess.DEVNULL)
            proc.wait()
            assert proc.returncode == 0
            pids[k] = proc.pid
        evs = [decode_event(r, manifest(art)) for r in reader.poll(300)]
    for k, pid in pids.items():
        got[k] = [e for e in evs if e["pid"] == pid and e["args"] and e["args"][0]["value"] == str(target)]
    return got


def test_in_posts_only_the_listed_path(tmp_path: Path) -> None:
    got = run(tmp_path, f"  - matchBinaries: [{{operator: In, values: [{tmp_path}/d1/cat]}}]\n")
    assert [e["binary"] for e in got["listed"]] == [f"{tmp_path}/d1/cat"]
    assert got["same_name"] == [] and got["other_name"] == []


def test_notin_decided_by_the_name_still_posts_the_full_path(tmp_path: Path) -> None:
    """Selector 0 misses on the name alone; selector 1 (NotIn) matches `tac2` by its name and
    `d2/cat` by its path; the events carry full paths, not the name read for the check."""
    got = run(tmp_path, f"""\
  - matchBinaries: [{{operator: In, values: [/nonexistent/dir/tac2-not]}}]
  - matchBinaries: [{{operator: NotIn, values: [{tmp_path}/d1/cat]}}]
""")
    assert got["listed"] == []
    assert [(e["selector"], e["binary"]) for e in got["same_name"]] == [(1, f"{tmp_path}/d2/cat")]
    assert [(e["selector"], e["binary"]) for e in got["other_name"]] == [(1, f"{tmp_path}/d1/tac2")]
