"""`return: true` with Tetragon semantics (kinds/tracing/returns.py): arguments captured at
the call are kept per task and posted with the return value when the function returns;
matchReturnArgs filter on that value, matchReturnActions act then; returnCopy reads a
char_buf at the return with the return value as its size.

This host has no kprobes: a `sys_*` kprobe with `return: true` runs as the
`sys_enter_X` / `sys_exit_X` tracepoint pair, which the rows below run with real
processes. The kretprobe and fexit shapes are compiled here (their C checked) and run in
the Debian 6.12 guest (the `vm` row at the end).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bpfpolicy.kinds import Artifact
from bpfpolicy.kinds.tracing.events import decode_event
from bpfpolicy.kinds.tracing.tetragon_json import to_tetragon

from helpers.tracing import (
    RingReader,
    compile_one,
    errors,
    features,
    guest_kernel_test,
    loaded,
    manifest,
    validate,
    write,
)

ROOT = Path(__file__).resolve().parents[3]
KPROBES = features(btf=True, kprobes=True, trampoline=True, bpf_lsm=True, syscall_tracepoints=True,
                   send_signal=True)
TRAMPOLINE_ONLY = features(btf=True, trampoline=True, bpf_lsm=True, send_signal=True)

OPENAT_RET = """\
kprobes:
- call: sys_openat
  return: true
  args: [{{index: 1, type: string, label: pathname}}]
  returnArg: {{index: 0, type: int}}
  selectors:
  - matchArgs: [{{index: 1, operator: Prefix, values: [{prefix}]}}]
    matchReturnArgs: [{{index: 0, operator: LT, values: ["0"]}}]
    matchReturnActions: [{actions}]
"""


def sections(art: Artifact) -> list[str]:
    return [p["section"] for p in art.manifest["programs"]]


def events(art: Artifact, reader: RingReader, pid: int) -> list[dict]:
    return [e for e in (decode_event(r, manifest(art)) for r in reader.poll(300)) if e["pid"] == pid]


# ------------------------------------------------------------------ host: sys_enter/sys_exit pair


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_negative_return_posts_with_entry_args_and_sigkills(tmp_path: Path) -> None:
    """openat of a missing file under the prefix: the return (-ENOENT) matches LT 0, the
    event carries the pathname captured at the call and `return: -2`, and the return
    action kills the process; an existing file under the prefix returns an fd: no event,
    no kill."""
    prefix = f"/tmp/bpfpolicy-ret-{uuid.uuid4().hex[:8]}-"
    present = Path(prefix + "present")
    present.write_text("x")
    p = write(tmp_path, OPENAT_RET.format(prefix=prefix, actions="{action: Sigkill}, {action: Post}"))
    art, diags = compile_one(p)
    assert art is not None, diags
    assert sections(art) == ["tp/syscalls/sys_enter_openat", "tp/syscalls/sys_exit_openat"]
    try:
        with loaded(art) as (_obj, reader):
            ok = subprocess.Popen(["cat", str(present)], stdout=subprocess.DEVNULL)
            ok.wait()
            killed = subprocess.Popen(["cat", prefix + "missing"], stderr=subprocess.DEVNULL)
            killed.wait()
            got_ok, got_killed = events(art, reader, ok.pid), events(art, reader, killed.pid)
    finally:
        present.unlink()
    assert ok.returncode == 0 and got_ok == []
    assert killed.returncode == -9
    (ev,) = got_killed
    assert ev["return"] == -2  # -ENOENT, read at sys_exit_openat
    assert ev["args"] == [{"index": 1, "type": "string", "label": "pathname", "value": prefix + "missing"}]
    assert set(ev["action"]) == {"Post", "Sigkill"}


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_no_selector_return_hook_posts_every_call_with_its_value(tmp_path: Path) -> None:
    """sys_getppid with return: true and no selectors: one event per call, the return
    value is the parent's pid."""
    p = write(tmp_path, """\
kprobes:
- call: sys_getppid
  return: true
  returnArg: {index: 0, type: int}
""")
    art, diags = compile_one(p)
    assert art is not None, diags
    code = "import os; [os.getppid() for _ in range(3)]; print(os.getppid())"
    with loaded(art) as (_obj, reader):
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        got = [e for e in (decode_event(r, manifest(art)) for r in reader.poll(300))
               if e["comm"].startswith("python") and e["return"] == os.getpid()]
    assert int(child.stdout) == os.getpid()
    assert len(got) >= 4 and all(e["hook"] == "sys_getppid" for e in got), got


# A child that waits for a line on stdin (so the policy, keyed on its pid, is attached
# first), then reads a file of known contents with os.read (one read(2) of 4096) and the
# end of the file (read returns 0).
READER = r"""
import os, sys
sys.stdin.readline()
fd = os.open(sys.argv[1], os.O_RDONLY)
data = os.read(fd, 4096)
assert os.read(fd, 4096) == b""
print(len(data))
"""


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.parametrize("size", [37, 256, 3000])
def test_return_copy_reads_the_buffer_read_filled(tmp_path: Path, size: int) -> None:
    """read(2)'s buffer with returnCopy: empty at the call, copied at sys_exit_read with
    the returned byte count as its size; matchReturnArgs GT 0 leaves out the EOF read."""
    content = bytes((i * 7 + 1) % 251 for i in range(size))
    data = tmp_path / "known.bin"
    data.write_bytes(content)
    child = subprocess.Popen([sys.executable, "-c", READER, str(data)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        p = write(tmp_path, f"""\
kprobes:
- call: sys_read
  return: true
  args:
  - {{index: 0, type: fd, label: fd}}
  - {{index: 1, type: char_buf, label: buf, returnCopy: true}}
  returnArg: {{index: 0, type: long}}
  selectors:
  - matchPIDs: [{{operator: In, values: [{child.pid}]}}]
    matchReturnArgs: [{{index: 0, operator: GT, values: ["0"]}}]
""")
        art, diags = compile_one(p)
        assert art is not None, diags
        with loaded(art) as (_obj, reader):
            out, _ = child.communicate("go\n", timeout=30)
            got = events(art, reader, child.pid)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0 and int(out) == size
    (ev,) = got  # the EOF read (0) fails GT 0
    assert ev["return"] == size
    fd, buf = ev["args"]
    assert fd["label"] == "fd" and fd["value"] >= 3
    kept = min(size, 256)  # bytes kept in an event (spec.CAPTURE_STRING)
    assert buf["size"] == size and bytes.fromhex(buf["value"]) == content[:kept]
    kprobe = to_tetragon(ev)["process_kprobe"]  # Tetragon's shape: returnArg long -> long_arg
    assert kprobe["return"] == {"long_arg": size} and kprobe["function_name"] == "__x64_sys_read"


# ------------------------------------------------------------------ compile: kretprobe, fexit


def test_kprobes_get_a_kretprobe_and_keep_the_entry_per_task(tmp_path: Path) -> None:
    p = write(tmp_path, OPENAT_RET.format(prefix="/tmp/x", actions="{action: Sigkill}"))
    art, diags = compile_one(p, options={"features": KPROBES})
    assert art is not None, diags
    assert sections(art) == ["kprobe/__x64_sys_openat", "kretprobe/__x64_sys_openat"]
    src = art.files["prog.bpf.c"].decode()
    entry, ret = src.split('SEC("kretprobe/__x64_sys_openat")')
    assert "tp_ret_store(e);" in entry and "bpf_send_signal" not in entry.split('SEC("kprobe/')[1]
    assert "e->ret = (long)PT_REGS_RC(ctx);" in ret
    assert "if (!((__s64)(int)e->ret < 0LL))" in ret and "bpf_send_signal(9);" in ret
    assert "bpf_map_delete_elem(&tp_ret_map, &tp_id);" in ret
    assert {"name": "tp_ret_map", "type": "lru_hash"} in art.manifest["maps"]


def test_security_enforcement_stays_at_lsm_and_return_goes_to_kretprobe(tmp_path: Path) -> None:
    """Override at the call (lsm/file_open); the kprobe keeps the event, the kretprobe posts."""
    p = write(tmp_path, """\
kprobes:
- call: security_file_open
  syscall: false
  return: true
  args: [{index: 0, type: file}]
  returnArg: {index: 0, type: int}
  selectors:
  - matchArgs: [{index: 0, operator: Prefix, values: [/etc/]}]
    matchActions: [{action: Override, argError: -1}, {action: Post}]
""")
    art, diags = compile_one(p, options={"features": KPROBES})
    assert art is not None, diags
    assert sections(art) == ["lsm/file_open", "kprobe/security_file_open", "kretprobe/security_file_open"]
    src = art.files["prog.bpf.c"].decode()
    kprobe_half = src.split('SEC("kprobe/security_file_open")')[1].split("SEC(")[0]
    assert "tp_ret_store(e);" in kprobe_half and "bpf_override_return" not in kprobe_half


def test_fexit_matches_the_return_value_in_one_program(tmp_path: Path) -> None:
    """Without kprobes (trampolines only) a kernel function's return: true is one fexit
    program: matchReturnArgs ANDed after the entry matchers, returnCopy read there."""
    p = write(tmp_path, """\
kprobes:
- call: kernel_read
  syscall: false
  return: true
  args:
  - {index: 1, type: char_buf, returnCopy: true}
  returnArg: {index: 0, type: long}
  selectors:
  - matchReturnArgs: [{index: 0, operator: InRange, values: ["1:64"]}]
    matchReturnActions: [{action: Post}]
""")
    art, diags = compile_one(p, options={"features": TRAMPOLINE_ONLY})
    assert art is not None, diags
    assert sections(art) == ["fexit/kernel_read"]
    src = art.files["prog.bpf.c"].decode()
    assert "e->ret = (long)ctx[4];" in src  # kernel_read(file, buf, count, pos): 4 parameters
    assert "((__s64)(long long)e->ret >= 1LL && (__s64)(long long)e->ret <= 64LL)" in src
    assert "tp_capture_bytes(e, 0, (const void *)ctx[1], e->ret > 0 ? (__u64)e->ret : 0, false);" in src


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(("spec", "where", "needle"), [
    ("kprobes:\n- call: sys_openat\n  selectors:\n  - matchReturnArgs: [{index: 0, operator: LT, values: ['0']}]\n",
     "matchReturnArgs", "needs return: true"),
    ("kprobes:\n- call: sys_openat\n  return: true\n  returnArg: {index: 0, type: int}\n  selectors:\n"
     "  - matchReturnArgs: [{index: 1, operator: LT, values: ['0']}]\n", "index: 1", "is not the return value"),
    ("kprobes:\n- call: sys_openat\n  return: true\n  returnArg: {index: 0, type: int}\n  selectors:\n"
     "  - matchReturnArgs: [{index: 0, operator: Prefix, values: ['/x']}]\n", "operator: Prefix",
     "does not apply to the integer return value"),
    ("kprobes:\n- call: sys_openat\n  return: true\n  returnArg: {index: 0, type: int}\n  selectors:\n"
     "  - matchReturnActions: [{action: Override, argError: -1}]\n", "action: Override",
     "the function has already returned"),
    ("kprobes:\n- call: sys_read\n  args: [{index: 1, type: char_buf, returnCopy: true}]\n",
     "returnCopy", "needs return: true"),
    ("kprobes:\n- call: sys_read\n  return: true\n  returnArg: {index: 0, type: long}\n"
     "  args: [{index: 1, type: string, returnCopy: true}]\n", "returnCopy", "applies to char_buf"),
])
def test_return_misuse_is_located(tmp_path: Path, spec: str, where: str, needle: str) -> None:
    p = write(tmp_path, spec)
    errs = errors(validate(p))
    assert errs, "expected a located error"
    d = errs[0]
    text = p.read_text().splitlines()
    assert needle in d.message, d
    assert where in text[d.line - 1], (d, text[d.line - 1])


# ------------------------------------------------------------------ guest: kretprobe, fexit

GUEST_POLICY = """\
apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata:
  name: {name}
  annotations:
    bpfpolicy.io/kernel-test: |
      exec-expect exit=0 echo x > /tmp/ret-present
      exec-expect exit=0 exec cat /tmp/ret-present
      event-expect none sys_openat
      exec-expect signal=9 exec cat /tmp/ret-missing
      event-expect posted sys_openat action=Sigkill
      exec-expect exit=1 exec cat /tmp/other-missing
      event-expect none sys_openat
spec:
  {section}:
  - call: {call}
    syscall: {syscall}
    return: true
    args: [{{index: 1, type: string}}]
    returnArg: {{index: 0, type: int}}
    selectors:
    - matchArgs: [{{index: 1, operator: Prefix, values: [/tmp/ret-]}}]
      matchReturnArgs: [{{index: 0, operator: LT, values: ["0"]}}]
      matchReturnActions: [{{action: Sigkill}}, {{action: Post}}]
"""


# read(2) of exactly 7 bytes by busybox (dd; busybox cat uses sendfile): the kretprobe on
# sys_read matches the 64-bit return value, with a returnCopy + maxData buffer kept from the
# call (its verifier load is part of the proof), and kills.
GUEST_READ = """\
apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata:
  name: ret-readcopy
  annotations:
    bpfpolicy.io/kernel-test: |
      exec-expect exit=0 sh -c 'echo hello > /tmp/rc; dd if=/tmp/rc of=/dev/null bs=64 2>/dev/null; exit $?'
      exec-expect exit=137 sh -c 'printf 1234567 > /tmp/rc7; dd if=/tmp/rc7 of=/dev/null bs=64 2>/dev/null; exit $?'
spec:
  kprobes:
  - call: sys_read
    return: true
    args: [{index: 1, type: char_buf, returnCopy: true, maxData: true}]
    returnArg: {index: 0, type: long}
    selectors:
    - matchBinaries: [{operator: In, values: [/bin/busybox]}]
      matchReturnArgs: [{index: 0, operator: Equal, values: ["7"]}]
      matchReturnActions: [{action: Post}, {action: Sigkill}]
"""


@pytest.mark.vm
def test_kretprobe_and_fexit_return_sigkill_in_a_612_guest(tmp_path: Path, cli) -> None:
    """Debian 6.12 (QEMU): a kretprobe on sys_openat (kprobes section) and an fexit on it
    (fentries section) kill `cat` when opening a missing /tmp/ret-* file fails (negative
    return), not when it succeeds, and not for a missing file outside the prefix."""
    results, _ = guest_kernel_test(cli, tmp_path, {
        "kretprobe.yaml": GUEST_POLICY.format(name="ret-kretprobe", section="kprobes", call="sys_openat",
                                              syscall="true"),
        "fexit.yaml": GUEST_POLICY.format(name="ret-fexit", section="fentries", call="sys_openat",
                                          syscall="true"),
        "readcopy.yaml": GUEST_READ})
    rows = [r for k in results["kernels"] for r in k["results"]]
    assert all(r["status"] == "ok" for r in rows), rows
    attached = {r["detail"].split(": ")[-1] for r in rows if r["step"] == "attach"}
    assert {"kprobe/__x64_sys_openat", "kretprobe/__x64_sys_openat", "fexit/__x64_sys_openat",
            "kretprobe/__x64_sys_read"} <= attached, attached
    for name in ("TracingPolicy/ret-kretprobe", "TracingPolicy/ret-fexit"):
        mine = [r for r in rows if r["artifact"] == name]
        # killed on the failed open, the event posted by that pid; none for the other two
        assert [r["step"] for r in mine].count("event-expect") == 3, mine
        assert any(r["step"] == "exec-expect" and "ret-missing" in r["detail"] for r in mine), mine
    assert any(r["artifact"] == "TracingPolicy/ret-readcopy" and "exit=137 (want exit=137)" in r["detail"]
               for r in rows), rows


def test_return_with_override_remapped_to_lsm_is_refused_at_return(tmp_path: Path) -> None:
    """Debian 6.12 enforces Override on openat at lsm/file_open (no syscall override): the
    LSM hook's arguments are not the syscall's, so return: true there is refused, located."""
    p = write(tmp_path, """\
kprobes:
- call: sys_openat
  return: true
  args: [{index: 1, type: string}]
  returnArg: {index: 0, type: int}
  selectors:
  - matchArgs: [{index: 1, operator: Prefix, values: [/etc/shadow]}]
    matchActions: [{action: Override, argError: -1}]
""")
    art, diags = compile_one(p, kernel=(6, 12))
    assert art is None
    (d,) = [d for d in diags if d.severity == "error"]
    assert d.path == "spec.kprobes[0].return" and "enforces it at lsm/file_open" in d.message
