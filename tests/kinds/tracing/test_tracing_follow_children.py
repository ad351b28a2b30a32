"""matchBinaries followChildren (issue #14, Tetragon's semantics: the matching binary and
the processes it starts). Real programs on this host's getppid tracepoint: a copy of
/bin/sh (a binary only this test runs) starts a small C program — a child with another
binary — whose getppid is posted; the same program started by the test itself is not;
a grandchild (sh -> sh -> program) is; NotIn turns it round."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfpolicy.kinds.tracing.events import decode_event
from bpfpolicy.kinds.tracing.spec import FOLLOW_CHILDREN_DEPTH

from helpers.tracing import compile_one, guest_kernel_test, loaded, manifest, write

PROG = r"""
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) { long pp = syscall(SYS_getppid); printf("%d %ld\n", (int)getpid(), pp); return 0; }
"""

POLICY = """\
kprobes:
- call: sys_getppid
  syscall: true
  selectors:
  - matchBinaries: [{{operator: {op}, values: ["{sh}"], followChildren: true}}]
"""


@pytest.fixture
def tools(tmp_path: Path) -> tuple[Path, Path]:
    if os.geteuid() != 0:
        pytest.skip("loads BPF programs: needs root")
    (tmp_path / "ppid.c").write_text(PROG)
    prog = tmp_path / "fc-ppid"
    subprocess.run(["cc", "-O1", "-o", str(prog), str(tmp_path / "ppid.c")], check=True)
    sh = tmp_path / "fc-sh"
    shutil.copy("/bin/sh", sh)
    return sh, prog


def _pid(cmd: list[str]) -> int:
    """Run `cmd`; the pid the C program printed (the process that called getppid)."""
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30).stdout
    return int(out.split()[0])


def _posted(art, records: list[bytes]) -> dict[int, dict]:  # noqa: ANN001
    return {e["pid"]: e for e in (decode_event(r, manifest(art)) for r in records)}


def test_children_of_a_matched_binary_are_posted(tmp_path: Path, tools: tuple[Path, Path]) -> None:
    sh, prog = tools
    art, diags = compile_one(write(tmp_path, POLICY.format(op="In", sh=sh)))
    assert art is not None, "\n".join(map(str, diags))
    with loaded(art) as (_obj, reader):
        child = _pid([str(sh), "-c", f"{prog}; true"])  # `; true`: sh forks, not execs
        grandchild = _pid([str(sh), "-c", f"/bin/sh -c '{prog}; true'; true"])
        unrelated = _pid([str(prog)])  # the same program, started by this test
        plain_sh = _pid(["/bin/sh", "-c", f"{prog}; true"])  # /bin/sh, not the matched copy
        got = _posted(art, reader.poll(500))
    assert child in got and got[child]["binary"] == str(prog)  # the child's own binary
    assert grandchild in got
    assert unrelated not in got and plain_sh not in got
    # only our programs' calls: every posted process descends from the matched sh
    assert all(e["binary"] in (str(prog), str(sh), "/usr/bin/dash", "/bin/dash") for e in got.values()), got


def test_notin_followchildren_excludes_the_binary_and_its_children(tmp_path: Path,
                                                                 tools: tuple[Path, Path]) -> None:
    sh, prog = tools
    art, diags = compile_one(write(tmp_path, POLICY.format(op="NotIn", sh=sh)))
    assert art is not None, "\n".join(map(str, diags))
    with loaded(art) as (_obj, reader):
        child = _pid([str(sh), "-c", f"{prog}; true"])
        got: dict[int, dict] = {}
        unrelated: list[int] = []
        # NotIn posts every other process's getppid on this host too: a burst from them
        # can fill the ring, so the unrelated run is repeated until one of its events is read
        for _ in range(5):
            unrelated.append(_pid([str(prog)]))
            got |= _posted(art, reader.poll(500))
            if any(p in got for p in unrelated):
                break
    assert any(p in got for p in unrelated) and child not in got


def test_followchildren_walk_is_bounded_and_only_on_matchbinaries(tmp_path: Path) -> None:
    """The C compares at most FOLLOW_CHILDREN_DEPTH tasks; matchParentBinaries refuses it."""
    from helpers.tracing import errors, validate

    art, diags = compile_one(write(tmp_path, POLICY.format(op="In", sh="/bin/sh")))
    assert art is not None, "\n".join(map(str, diags))
    source = art.files["prog.bpf.c"].decode()
    assert f"tp_i < {FOLLOW_CHILDREN_DEPTH}; tp_i++" in source and "real_parent" in source
    path = write(tmp_path, """\
kprobes:
- call: sys_getppid
  selectors:
  - matchParentBinaries: [{operator: In, values: [/bin/sh], followChildren: true}]
""", name="parent")
    errs = errors(validate(path))
    assert any(e.path.endswith("matchParentBinaries[0].followChildren") and
               "followChildren on matchParentBinaries is not implemented" in e.message for e in errs), errs
    bad = write(tmp_path, """\
kprobes:
- call: sys_getppid
  selectors:
  - matchBinaries: [{operator: Prefix, values: [/bin/], followChildren: true}]
""", name="prefix")
    errs = errors(validate(bad))
    assert any("followChildren works only with In/NotIn" in e.message for e in errs), errs


# ------------------------------------------------------------------ guest: kprobes on 6.12

GUEST_POLICY = """\
apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata:
  name: follow-children
  annotations:
    bpfpolicy.io/kernel-test: |
      exec-expect exit=0 mkdir -p /tmp/fc && cp -f /bin/busybox /tmp/fc/sh
      exec-expect exit=137 /tmp/fc/sh -c '/bin/busybox mkdir /tmp/fc-child; exit $?'
      exec-expect exit=137 /tmp/fc/sh -c '/bin/sh -c "/bin/busybox mkdir /tmp/fc-grandchild; exit \\$?"; exit $?'
      exec-expect exit=0 /bin/sh -c '/bin/busybox mkdir /tmp/fc-other; exit $?'
spec:
  kprobes:
  - call: sys_mkdir
    syscall: true
    args: [{index: 0, type: string}]
    selectors:
    - matchArgs: [{index: 0, operator: Prefix, values: [/tmp/fc-]}]
      matchBinaries: [{operator: In, values: [/tmp/fc/sh], followChildren: true}]
      matchActions: [{action: Sigkill}]
  - call: sys_mkdirat
    syscall: true
    args: [{index: 1, type: string}]
    selectors:
    - matchArgs: [{index: 1, operator: Prefix, values: [/tmp/fc-]}]
      matchBinaries: [{operator: In, values: [/tmp/fc/sh], followChildren: true}]
      matchActions: [{action: Sigkill}]
"""


@pytest.mark.vm
def test_followchildren_sigkill_on_kprobes_in_a_612_guest(tmp_path: Path, cli) -> None:  # noqa: ANN001
    """Debian 6.12 (QEMU, kprobe backend, busybox guest): a mkdir started by a copy of
    busybox at /tmp/fc/sh (a child and a grandchild running /bin/busybox) is killed;
    the same mkdir under the ordinary /bin/sh is not."""
    import json

    results, _ = guest_kernel_test(cli, tmp_path, {"follow-children.yaml": GUEST_POLICY})
    rows = json.dumps(results)
    assert "kprobe/__x64_sys_mkdir" in rows, rows
    assert rows.count("exit=137 (want exit=137)") == 2 and "fc-other; exit $?'` exit=0 (want exit=0)" in rows, rows
