"""Tetragon's generated lists (issue #14): `generated_syscalls` (every syscall of the
target, from its BTF) and `generated_ftrace` (the target's ftrace-able functions matching
a regex). Real clang builds; the generated_syscalls policy is loaded, all its programs
attached on this host's syscall tracepoints, and a real child process of a matched binary
produces events on several different syscalls while other processes produce none."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfpolicy.kinds.tracing.events import decode_event
from bpfpolicy.kinds.tracing.lists import MAX_GENERATED_CALLS, ftrace_functions

from helpers.tracing import (
    compile_one,
    errors,
    features,
    guest_kernel_test,
    loaded,
    manifest,
    validate,
    write,
)

POLICY = """\
lists:
- name: all-syscalls
  type: generated_syscalls
kprobes:
- call: list:all-syscalls
  selectors:
  - matchBinaries: [{{operator: In, values: ["{binary}"]}}]
"""


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("loads BPF programs: needs root")


def test_generated_syscalls_hooks_every_syscall_and_posts_only_the_matched_binary(tmp_path: Path) -> None:
    _root()
    binary = tmp_path / "gen-true"
    shutil.copy("/bin/true", binary)  # a binary only this test runs
    art, diags = compile_one(write(tmp_path, POLICY.format(binary=binary)))
    assert art is not None, "\n".join(map(str, diags))
    hooks = art.manifest["events"]["hooks"]
    names = {h["name"] for h in hooks}
    # the whole syscall table the kernel has, not a handful: far more than a syscalls list's 32
    assert len(hooks) > 250 and len(hooks) == len(art.manifest["programs"]) <= MAX_GENERATED_CALLS
    assert {"sys_read", "sys_openat", "sys_execve", "sys_exit_group", "sys_mmap"} <= names
    assert all(h["path"] == "spec.kprobes[0]" for h in hooks)
    with loaded(art) as (_obj, reader):
        other = subprocess.run(["/bin/true"], check=True)  # same code, another path: not matched
        del other
        child = subprocess.Popen([str(binary)])
        child.wait(10)
        got = [decode_event(r, manifest(art)) for r in reader.poll(500)]
    ours = [e for e in got if e["pid"] == child.pid]
    # a dynamically linked /bin/true maps libc, reads, and exits: several distinct syscalls
    hooked = {e["hook"] for e in ours}
    assert {"sys_exit_group", "sys_mmap"} <= hooked and len(hooked) >= 4, hooked
    # matchBinaries still filters every generated hook: nothing from other processes
    assert all(e["binary"] == str(binary) for e in got), {(e["pid"], e["binary"]) for e in got}


def test_generated_syscalls_is_what_the_target_btf_has() -> None:
    """For another kernel (no tracefs of it here) the list is its BTF's syscalls."""
    from bpfpolicy.kinds.btf import host_btf
    from bpfpolicy.kinds.tracing.lists import generated_syscalls

    btf = host_btf()
    if btf is None:
        pytest.skip("no host BTF")
    names = generated_syscalls("x86_64", btf.funcs, "__x64_")
    assert "openat" in names and all(f"__x64_sys_{n}" in btf.funcs for n in names)
    assert generated_syscalls("x86_64", {"__x64_sys_read", "__x64_sys_dup"}, "__x64_") == ["read", "dup"]


@pytest.mark.parametrize(("lists", "call", "where", "message"), [
    ("[{name: g, type: generated_syscalls, values: [sys_dup]}]", "list:g", "spec.lists[0].values",
     "a generated_syscalls list takes no values"),
    ("[{name: f, type: generated_ftrace}]", "list:f", "spec.lists[0]",
     "a generated_ftrace list needs pattern"),
    ("[{name: f, type: generated_ftrace, pattern: '*ksys'}]", "list:f", "spec.lists[0].pattern",
     "pattern is not a regular expression"),
    ("[{name: f, type: generated_ftrace, pattern: '^ksys_', values: [ksys_read]}]", "list:f",
     "spec.lists[0].values", "a generated_ftrace list takes no values"),
])
def test_bad_generated_lists_are_located_errors(tmp_path: Path, lists: str, call: str, where: str,
                                                message: str) -> None:
    path = write(tmp_path, f"lists: {lists}\nkprobes:\n- call: {call}\n")
    errs = errors(validate(path))
    assert any(e.path == where and message in e.message for e in errs), [str(e) for e in errs]
    assert all(e.line > 0 for e in errs)


def test_inmap_over_a_generated_ftrace_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, """\
lists:
- {name: f, type: generated_ftrace, pattern: '^ksys_'}
tracepoints:
- subsystem: raw_syscalls
  event: sys_enter
  args: [{index: 4, type: int64}]
  selectors:
  - matchArgs: [{index: 0, operator: InMap, values: ["list:f"]}]
""")
    errs = errors(validate(path))
    assert any("is a generated_ftrace list" in e.message and e.path.endswith("values[0]") for e in errs), errs


def test_inmap_over_generated_syscalls_compiles_every_syscall_number(tmp_path: Path) -> None:
    path = write(tmp_path, """\
lists:
- {name: g, type: generated_syscalls}
tracepoints:
- subsystem: raw_syscalls
  event: sys_enter
  args: [{index: 4, type: int64}]
  selectors:
  - matchArgs: [{index: 0, operator: InMap, values: ["list:g"]}]
""")
    art, diags = compile_one(path)
    assert art is not None, "\n".join(map(str, diags))
    source = art.files["prog.bpf.c"].decode()
    # openat is 257 on x86_64, execve 59: both in the set the selector compares
    assert "== 257LL" in source and "== 59LL" in source


def test_generated_ftrace_on_a_kernel_without_kprobes_or_trampolines_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, """\
lists:
- {name: ksys, type: generated_ftrace, pattern: '^ksys_'}
kprobes:
- call: list:ksys
""")
    art, diags = compile_one(path, options={"features": features(syscall_tracepoints=True) | {
        "kernel": "6.18", "reasons": {"kprobes": "CONFIG_KPROBES is not set",
                                      "trampoline": "kernel lockdown (integrity) is enforced"}}})
    assert art is None
    (d,) = [d for d in diags if d.severity == "error"]
    assert d.path == "spec.kprobes[0].call"
    assert path.read_text().splitlines()[d.line - 1].strip() == "- call: list:ksys"
    assert "list ksys (generated_ftrace) holds kernel functions, which only kprobes or fentry can hook" in d.message
    assert "kernel 6.18 has neither: kprobes: CONFIG_KPROBES is not set; trampolines: kernel lockdown" in d.message


def test_generated_ftrace_expands_to_matching_functions_where_kprobes_exist(tmp_path: Path) -> None:
    """A kprobe target: one kprobe per function matching the pattern (here from BTF: this
    host's available_filter_functions is not readable under lockdown)."""
    path = write(tmp_path, """\
lists:
- {name: ksys, type: generated_ftrace, pattern: '^ksys_(read|write)$'}
kprobes:
- call: list:ksys
""")
    art, diags = compile_one(path, options={"features": features(kprobes=True, syscall_tracepoints=True)
                                            | {"kernel": "6.18"}})
    assert art is not None, "\n".join(map(str, diags))
    sections = sorted(p["section"] for p in art.manifest["programs"])
    assert sections == ["kprobe/ksys_read", "kprobe/ksys_write"]


def test_ftrace_function_list_follows_tetragon_reader() -> None:
    lines = ["ksys_write", "ksys_read", "vfs_read", "ksys_read", "__ftrace_invalid_address___123",
             "ksys_dup [some_module]", "ksys_mod_only"]
    # stops at the first module function, sorted, deduplicated, a regex *search*
    assert ftrace_functions("^ksys_", lines) == ["ksys_read", "ksys_write"]
    assert ftrace_functions("read", lines) == ["ksys_read", "vfs_read"]
    assert ftrace_functions("", lines) == ["ksys_read", "ksys_write", "vfs_read"]


def test_tetragon_example_list_syscalls_generated_compiles(corpus: Path) -> None:
    art, diags = compile_one(corpus / "tetragon" / "tracingpolicy__list-syscalls-generated.yaml")
    assert art is not None, "\n".join(map(str, diags))
    assert len(art.manifest["programs"]) > 250


# ------------------------------------------------------------------ guest: kprobes on 6.12

GUEST_FTRACE = """\
apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata:
  name: gen-ftrace
  annotations:
    bpfpolicy.io/kernel-test: |
      exec-expect exit=0 sh -c 'exec mkdir /tmp/gen-ftrace-dir'
      event-expect posted vfs_mkdir
      exec-expect exit=0 sh -c 'exec true'
      event-expect none vfs_mkdir
spec:
  lists:
  - {name: mk, type: generated_ftrace, pattern: '^vfs_mkdir$|^vfs_rmdir$'}
  kprobes:
  - call: list:mk
"""


@pytest.mark.vm
def test_generated_ftrace_kprobes_post_in_a_612_guest(tmp_path: Path, cli) -> None:  # noqa: ANN001
    """Debian 6.12 (QEMU, kprobes): the list becomes kprobe/vfs_mkdir + kprobe/vfs_rmdir
    (from 6.12's BTF: its tracefs is not here), both attach, and a mkdir posts on
    vfs_mkdir while `true` posts nothing."""
    results, _ = guest_kernel_test(cli, tmp_path, {"gen-ftrace.yaml": GUEST_FTRACE})
    rows = json.dumps(results)
    for attached in ("kprobe/vfs_mkdir", "kprobe/vfs_rmdir"):
        assert attached in rows, attached
    assert re.search(r"hook=vfs_mkdir\[kprobe/vfs_mkdir\] [1-9]\d* event\(s\) from pid", rows), rows
    assert re.search(r"hook=vfs_mkdir\[kprobe/vfs_mkdir\] 0 event\(s\) from pid \d+ while line \d+ ran "
                     r"\(`sh -c 'exec true'`\)", rows), rows


def test_a_list_gets_one_backend_note_not_one_per_syscall(tmp_path: Path, cli) -> None:  # noqa: ANN001
    """validate/compile/plan say where a list's ~340 hooks run in one note (and one
    backend-change warning), naming the count and the first and last hooks."""
    path = write(tmp_path, POLICY.format(binary="/bin/true"))
    code, out = cli("validate", "--kernel", "6.12", str(path))
    assert code == 0, out
    notes = [line for line in out.splitlines() if ": note: " in line]
    assert len(notes) == 1, out
    assert re.search(r"spec\.kprobes\[0\]: note: list:all-syscalls \(\d{3} hooks: sys_read, sys_write, …, "
                     r"sys_\w+\) run as kprobe __x64_sys_\* on kernel 6\.12", notes[0]), notes[0]
