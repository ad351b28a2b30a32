"""The Tetragon features users rely on next, run on this host (tracepoint backend for
`sys_*` kprobes, uprobes): Signal and NoPost actually acting on a real process,
message/tags in both event shapes, symbolised stack traces, fd -> path, return values
on `sys_exit_*`. One behaviour per row; docs/tracing.md "Tetragon features" cites them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bpfpolicy.kinds import Artifact
from bpfpolicy.kinds.tracing.events import decode_event
from bpfpolicy.kinds.tracing.tetragon_json import to_tetragon

from helpers.tracing import SIGUSR1_CHILD, RingReader, compile_one, loaded, manifest, write

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("root_required", "clang_required")]




def events(art: Artifact, reader: RingReader, **kw: Any) -> list[dict]:
    return [decode_event(r, manifest(art), **kw) for r in reader.poll(300)]



def openat_policy(tmp_path: Path, prefix: str, actions: str) -> Path:
    return write(tmp_path, f"""\
kprobes:
- call: sys_openat
  syscall: true
  message: "open under the watched prefix"
  tags: [bpfpolicy-test, signal]
  args: [{{index: 1, type: string}}]
  selectors:
  - matchArgs: [{{index: 1, operator: Prefix, values: ["{prefix}"]}}]
    matchActions: [{actions}]
""")


def run_child(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SIGUSR1_CHILD, path], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("actions, posted", [
    ("{action: Signal, argSig: 10}, {action: Post}", True),   # Signal delivered, event posted
    ("{action: Signal, argSig: 10}, {action: NoPost}", False),  # NoPost: no event, Signal still runs
])
def test_signal_reaches_the_process_and_nopost_suppresses_only_the_event(
        tmp_path: Path, actions: str, posted: bool) -> None:
    prefix = f"/tmp/bpfpolicy-sig-{uuid.uuid4().hex[:8]}"
    art, diags = compile_one(openat_policy(tmp_path, prefix, actions))
    assert art is not None, diags
    with loaded(art) as (_obj, reader):
        hit = run_child(prefix + "/x")
        miss = run_child("/tmp/bpfpolicy-elsewhere")
        got = events(art, reader)
    assert hit.returncode == 0 and hit.stdout.strip() == "SIGUSR1", hit
    assert miss.returncode == 0 and miss.stdout.strip() == "none", miss
    mine = [e for e in got if e["args"] and str(e["args"][0]["value"]).startswith(prefix)]
    assert len(mine) == (1 if posted else 0), got
    if posted:
        assert set(mine[0]["action"]) == {"Signal", "Post"}


def test_message_and_tags_reach_both_event_shapes(tmp_path: Path) -> None:
    prefix = f"/tmp/bpfpolicy-msg-{uuid.uuid4().hex[:8]}"
    art, diags = compile_one(openat_policy(tmp_path, prefix, "{action: Post}"))
    assert art is not None, diags
    with loaded(art) as (_obj, reader):
        run_child(prefix + "/x")
        got = [e for e in events(art, reader) if str(e["args"][0]["value"]).startswith(prefix)]
    assert len(got) == 1, got
    ours = got[0]
    assert ours["message"] == "open under the watched prefix"
    assert ours["tags"] == ["bpfpolicy-test", "signal"]
    tet = to_tetragon(ours | {"source": "kernel"}, node_name="n")
    assert tet is not None
    (body,) = [v for k, v in tet.items() if k.startswith("process_")]
    assert body["message"] == ours["message"] and body["tags"] == ours["tags"]


# Frame pointers kept, and the syscall issued inline from the leaf: the first user frame
# is then `bpfpolicy_stack_leaf` itself, its callers found by walking %rbp.
STACK_PROG = r"""
#include <stdio.h>
__attribute__((noinline)) long bpfpolicy_stack_leaf(void)
{ long r; __asm__ volatile("syscall" : "=a"(r) : "a"(110L) : "rcx", "r11", "memory"); return r; }
__attribute__((noinline)) long bpfpolicy_stack_outer(void) { return bpfpolicy_stack_leaf() + 1; }
int main(void) { long r = bpfpolicy_stack_outer(); printf("%ld\n", r); fflush(stdout); getchar(); return 0; }
"""


def stack_lookup(obj: Any) -> Any:
    from bpfpolicy.kernel import bpf
    from bpfpolicy.kinds.tracing.symbolize import STACK_DEPTH

    fd = obj.map("stacks").fd
    return lambda sid: bpf.map_lookup(fd, sid.to_bytes(4, "little"), STACK_DEPTH * 8)


def test_kernel_and_user_stacks_are_symbolised(tmp_path: Path) -> None:
    (tmp_path / "stk.c").write_text(STACK_PROG)
    prog = tmp_path / "stk"
    subprocess.run(["cc", "-O0", "-fno-omit-frame-pointer", "-o", str(prog), str(tmp_path / "stk.c")], check=True)
    art, diags = compile_one(write(tmp_path, f"""\
kprobes:
- call: sys_getppid
  syscall: true
  selectors:
  - matchBinaries: [{{operator: In, values: ["{prog}"]}}]
    matchActions: [{{action: Post, kernelStackTrace: true, userStackTrace: true}}]
"""))
    assert art is not None, diags
    with loaded(art) as (obj, reader):
        child = subprocess.Popen([str(prog)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline()  # the syscall ran
            got = events(art, reader, stacks=stack_lookup(obj))  # decoded while it is alive
        finally:
            child.communicate("\n", timeout=10)
    (ev,) = [e for e in got if e["pid"] == child.pid]
    user = [f.get("symbol") for f in ev["user_stack_trace"]]
    assert user[:3] == ["bpfpolicy_stack_leaf", "bpfpolicy_stack_outer", "main"], ev["user_stack_trace"]
    assert ev["user_stack_trace"][0]["module"] == str(prog)
    kernel = [f.get("symbol") or "" for f in ev["kernel_stack_trace"]]
    assert any("syscall" in k.lower() for k in kernel), kernel
    assert all(f["address"].startswith("0x") for f in ev["kernel_stack_trace"])


FD_PROG = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv)
{ char b[8]; int fd = open(argv[1], O_RDONLY); if (fd < 0) return 2; (void)!read(fd, b, sizeof b);
  printf("%d\n", fd); fflush(stdout); getchar(); return 0; }
"""


@pytest.mark.parametrize("action", ["Post", "FollowFD"])  # FollowFD: accepted, same meaning
def test_fd_argument_resolves_to_its_path_while_the_process_lives(tmp_path: Path, action: str) -> None:
    (tmp_path / "fd.c").write_text(FD_PROG)
    prog, target = tmp_path / "fdprog", tmp_path / "watched.txt"
    target.write_text("hello")
    subprocess.run(["cc", "-O1", "-o", str(prog), str(tmp_path / "fd.c")], check=True)
    extra = "{action: FollowFD, argFd: 0}, " if action == "FollowFD" else ""
    art, diags = compile_one(write(tmp_path, f"""\
kprobes:
- call: sys_read
  syscall: true
  args: [{{index: 0, type: fd}}]
  selectors:
  - matchBinaries: [{{operator: In, values: ["{prog}"]}}]
    matchActions: [{extra}{{action: Post}}]
"""))
    assert art is not None, diags
    with loaded(art) as (_obj, reader):
        child = subprocess.Popen([str(prog), str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            fd = int(child.stdout.readline())
            alive = events(art, reader)
        finally:
            child.communicate("\n", timeout=10)
    reads = [e["args"][0] for e in alive if e["pid"] == child.pid and e["args"][0].get("fd") == fd]
    assert reads and reads[0]["value"] == str(target) and reads[0]["resolved_at"] == "decode", alive
    tet = to_tetragon({"source": "kernel", "section": "kprobes", "hook": "sys_read", "args": [reads[0]]}, "n")
    assert tet is not None and tet["process_kprobe"]["args"][0]["file_arg"]["path"] == str(target)


def test_followfd_is_accepted_with_a_warning_naming_its_meaning(tmp_path: Path) -> None:
    from helpers.tracing import validate

    p = write(tmp_path, """\
kprobes:
- call: sys_read
  syscall: true
  args: [{index: 0, type: fd}]
  selectors:
  - matchActions: [{action: FollowFD, argFd: 0, argName: 1}, {action: Post}]
""")
    result = validate(p)
    assert result.ok
    (w,) = [d for d in result.diagnostics if d.severity == "warning" and "FollowFD" in d.message]
    assert w.path == "spec.kprobes[0].selectors[0].matchActions[0].action"
    assert "resolved_at: decode" in w.message


def test_sys_exit_ret_posts_failed_opens_only(tmp_path: Path) -> None:
    """The return value on the tracepoint exit backend: field 5 (ret) of sys_exit_openat,
    -ENOENT posted, a successful open not."""
    missing = f"/tmp/bpfpolicy-ret-{uuid.uuid4().hex[:8]}"
    art, diags = compile_one(write(tmp_path, f"""\
tracepoints:
- subsystem: syscalls
  event: sys_exit_openat
  args: [{{index: 5, type: int64}}]
  selectors:
  - matchPIDs: [{{operator: In, followForks: true, values: [{os.getpid()}]}}]
    matchArgs: [{{index: 0, operator: Equal, values: ["-2"]}}]
"""))
    assert art is not None, diags
    with loaded(art) as (_obj, reader):
        code = "import os, sys\ntry: os.close(os.open(sys.argv[1], os.O_RDONLY))\nexcept OSError: sys.exit(1)"
        bad, good = (subprocess.Popen([sys.executable, "-I", "-S", "-c", code, f]) for f in (missing, "/etc/hostname"))
        assert bad.wait() == 1 and good.wait() == 0
        got = events(art, reader)
    # Both runs fail the same startup opens; `bad` fails one more: `missing`.
    n_bad, n_good = (len([e for e in got if e["pid"] == p.pid]) for p in (bad, good))
    assert n_bad == n_good + 1, got
    assert all(e["args"][0]["value"] == -2 for e in got), got  # successes never posted


def test_match_return_args_refusal_names_the_way_that_works(tmp_path: Path) -> None:
    from helpers.tracing import errors, validate

    p = write(tmp_path, """\
tracepoints:
- subsystem: syscalls
  event: sys_exit_openat
  args: [{index: 5, type: int64}]
  selectors:
  - matchReturnArgs: [{index: 0, operator: Equal, values: ["-2"]}]
""")
    (d,) = errors(validate(p))
    assert d.path == "spec.tracepoints[0].selectors[0].matchReturnArgs"
    assert "matchArgs on field 5 (ret)" in d.message, d.message
