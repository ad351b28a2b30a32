"""Tetragon's default: every matching selector posts unless NoPost (do_actions() starts
with `post = true`; docs/upstream.md §2.3). A Sigkill-, Signal- or Override-only selector
posts an event whose Tetragon `action` is the last action run (KPROBE_ACTION_SIGKILL …);
NoPost keeps the actions and drops the event. Host rows run real processes on the syscall
tracepoint and uprobe backends; the other backends are compiled here (the posting program
and the actions word checked) and run in the 6.12 guest through the corpus matrix
(bpfpolicy/matrix/data/tetragon-corpus.yaml)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bpfpolicy.kinds import Artifact
from bpfpolicy.kinds.tracing import spec as S
from bpfpolicy.kinds.tracing.events import action_names, decode_event
from bpfpolicy.kinds.tracing.tetragon_json import to_tetragon

from helpers.tracing import (
    SIGUSR1_CHILD,
    RingReader,
    compile_one,
    features,
    guest_kernel_test,
    loaded,
    manifest,
    write,
)

KPROBES = features(btf=True, kprobes=True, kprobe_override=True, error_injection=True, trampoline=True,
                   bpf_lsm=True, syscall_tracepoints=True, send_signal=True)
TRAMPOLINE_ONLY = features(btf=True, trampoline=True, bpf_lsm=True, send_signal=True)

OPENAT = """\
kprobes:
- call: sys_openat
  syscall: true
  args: [{{index: 1, type: string, label: pathname}}]
  selectors:
  - matchArgs: [{{index: 1, operator: Prefix, values: ["{prefix}"]}}]
    matchActions: [{actions}]
"""



def mine(art: Artifact, reader: RingReader, pid: int) -> list[dict]:
    return [e for e in (decode_event(r, manifest(art)) for r in reader.poll(300)) if e["pid"] == pid]


def tetragon_action(ev: dict) -> str:
    tet = to_tetragon(ev | {"source": "kernel"}, node_name="n")
    assert tet is not None
    (body,) = [v for k, v in tet.items() if k.startswith("process_")]
    return body["action"]


def run_open(art: Artifact, path: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    with loaded(art) as (_obj, reader):
        child = subprocess.Popen([sys.executable, "-c", SIGUSR1_CHILD, path], stdout=subprocess.PIPE, text=True)
        out, _ = child.communicate(timeout=30)
        got = mine(art, reader, child.pid)
    return subprocess.CompletedProcess(child.args, child.returncode, out), got


# ------------------------------------------------------------------ host: real processes


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.parametrize("actions, killed, names, tetragon", [
    ("{action: Sigkill}", True, ["Sigkill"], "KPROBE_ACTION_SIGKILL"),
    ("{action: Signal, argSig: 10}", False, ["Signal"], "KPROBE_ACTION_SIGNAL"),
    # the last action run is what Tetragon reports (msg->action is set per action)
    ("{action: Post}, {action: Signal, argSig: 10}", False, ["Post", "Signal"], "KPROBE_ACTION_SIGNAL"),
    ("{action: Signal, argSig: 10}, {action: Post}", False, ["Signal", "Post"], "KPROBE_ACTION_POST"),
])
def test_enforcing_selector_without_post_posts_its_action(
        tmp_path: Path, actions: str, killed: bool, names: list[str], tetragon: str) -> None:
    prefix = f"/tmp/bpfpolicy-pd-{uuid.uuid4().hex[:8]}"
    art, diags = compile_one(write(tmp_path, OPENAT.format(prefix=prefix, actions=actions)))
    assert art is not None, diags
    hit, got = run_open(art, prefix + "/x")
    miss, quiet = run_open(art, "/tmp/bpfpolicy-pd-elsewhere")
    if killed:
        assert hit.returncode == -9 and hit.stdout == ""
    else:
        assert hit.returncode == 0 and hit.stdout.strip() == "SIGUSR1"
    assert miss.returncode == 0 and miss.stdout.strip() == "none" and quiet == []
    (ev,) = [e for e in got if e["args"] and e["args"][0]["value"] == prefix + "/x"]
    assert ev["action"] == names and ev["selector"] == 0
    assert tetragon_action(ev) == tetragon


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.parametrize("actions", ["{action: Sigkill}, {action: NoPost}", "{action: NoPost}, {action: Sigkill}"])
def test_nopost_keeps_the_kill_and_drops_the_event(tmp_path: Path, actions: str) -> None:
    prefix = f"/tmp/bpfpolicy-pd-{uuid.uuid4().hex[:8]}"
    art, diags = compile_one(write(tmp_path, OPENAT.format(prefix=prefix, actions=actions)))
    assert art is not None, diags
    hit, got = run_open(art, prefix + "/x")
    assert hit.returncode == -9
    assert got == []


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_return_sigkill_without_post_posts_at_the_return(tmp_path: Path) -> None:
    """matchReturnActions [Sigkill] on the sys_enter/sys_exit pair: killed, and one event
    with the return value whose action is Sigkill."""
    prefix = f"/tmp/bpfpolicy-pdr-{uuid.uuid4().hex[:8]}-"
    art, diags = compile_one(write(tmp_path, f"""\
kprobes:
- call: sys_openat
  return: true
  args: [{{index: 1, type: string, label: pathname}}]
  returnArg: {{index: 0, type: int}}
  selectors:
  - matchArgs: [{{index: 1, operator: Prefix, values: [{prefix}]}}]
    matchReturnArgs: [{{index: 0, operator: LT, values: ["0"]}}]
    matchReturnActions: [{{action: Sigkill}}]
"""))
    assert art is not None, diags
    hit, got = run_open(art, prefix + "missing")
    assert hit.returncode == -9
    (ev,) = [e for e in got if e["args"] and e["args"][0]["value"] == prefix + "missing"]
    # the call's selector (no matchActions: Post) kept it; the return's Sigkill ran last
    assert ev["return"] == -2 and ev["action"] == ["Post", "Sigkill"]
    assert tetragon_action(ev) == "KPROBE_ACTION_SIGKILL"


UPROBE_PROG = r"""
#include <stdlib.h>
__attribute__((noinline)) int bpfpolicy_pd_target(int x) { __asm__ volatile(""); return x + 1; }
int main(int argc, char **argv) { return bpfpolicy_pd_target(argc > 1 ? atoi(argv[1]) : 0) == 0; }
"""


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_uprobe_sigkill_only_posts(tmp_path: Path) -> None:
    from bpfpolicy.kernel.attach.uprobe import attach_section

    (tmp_path / "p.c").write_text(UPROBE_PROG)
    prog = tmp_path / "pdprog"
    subprocess.run(["cc", "-O1", "-o", str(prog), str(tmp_path / "p.c")], check=True)
    art, diags = compile_one(write(tmp_path, f"""\
uprobes:
- path: {prog}
  symbols: [bpfpolicy_pd_target]
  args: [{{index: 0, type: int32}}]
  selectors:
  - matchArgs: [{{index: 0, operator: Equal, values: ['7']}}]
    matchActions: [{{action: Sigkill}}]
"""))
    assert art is not None, diags
    with loaded(art, attach=attach_section) as (_obj, reader):
        ok = subprocess.run([str(prog), "3"])
        killed = subprocess.run([str(prog), "7"])
        got = [decode_event(r, manifest(art)) for r in reader.poll(300)]
    assert ok.returncode == 0 and killed.returncode == -9
    evs = [e for e in got if e["binary"] == str(prog)]
    assert [(e["args"][0]["value"], e["action"]) for e in evs] == [(7, ["Sigkill"])], got
    assert tetragon_action(evs[0]) == "KPROBE_ACTION_SIGKILL"


# ------------------------------------------------------------------ compile: every backend

RET = "  return: true\n  returnArg: {index: 0, type: long}\n"
KERNEL_READ = """\
kprobes:
- call: kernel_read
  syscall: false
{ret}  args: [{{index: 2, type: size_t}}]
  selectors:
  - matchArgs: [{{index: 2, operator: Equal, values: ["12345"]}}]
    matchActions: [{actions}]
"""
FILE_OPEN_LSM = """\
lsmhooks:
- hook: file_open
  args: [{{index: 0, type: file}}]
  selectors:
  - matchArgs: [{{index: 0, operator: Prefix, values: [/etc/shadow]}}]
    matchActions: [{actions}]
"""
MKDIR_OVERRIDE = """\
kprobes:
- call: security_inode_mkdir
  syscall: false
  selectors:
  - matchActions: [{actions}]
"""

BACKENDS = [  # name, spec (ret, actions), features, action, program sections
    ("kprobe", KERNEL_READ, "", KPROBES, "Sigkill", ["kprobe/kernel_read"]),
    ("fentry", KERNEL_READ, "", TRAMPOLINE_ONLY, "Sigkill", ["fentry/kernel_read"]),
    ("kretprobe", KERNEL_READ, RET, KPROBES, "Sigkill", ["kprobe/kernel_read", "kretprobe/kernel_read"]),
    ("fexit", KERNEL_READ, RET, TRAMPOLINE_ONLY, "Sigkill", ["fentry/kernel_read", "fexit/kernel_read"]),
    ("lsm", FILE_OPEN_LSM, "", KPROBES, "Sigkill", ["lsm/file_open"]),
    ("override", MKDIR_OVERRIDE, "", KPROBES, "Override", None),
]


def posts(src: str) -> int:
    return src.count("tp_post(e);") + src.count("tp_ret_store(e);")


@pytest.mark.usefixtures("clang_required")
@pytest.mark.parametrize("name, spec, ret, feats, action, secs", BACKENDS, ids=[b[0] for b in BACKENDS])
def test_every_backend_posts_an_enforcing_selector_unless_nopost(
        tmp_path: Path, name: str, spec: str, ret: str, feats: dict, action: str, secs: list[str] | None) -> None:
    extra = ", argError: -1" if action == "Override" else ""
    art, diags = compile_one(write(tmp_path, spec.format(ret=ret, actions=f"{{action: {action}{extra}}}"), name="a"),
                             options={"features": feats})
    assert art is not None, diags
    if secs is not None:
        assert [p["section"] for p in art.manifest["programs"]] == secs
    src = art.files["prog.bpf.c"].decode()
    assert posts(src) >= 1, src
    word = (1 << S.ACTIONS[action]) | (S.ACTIONS[action] + 1) << S.LAST_ACTION_SHIFT
    assert f"{word:#x}" in src  # the posted event says which action ran, and that it ran last
    assert action_names(word) == [action]
    quiet, diags = compile_one(
        write(tmp_path, spec.format(ret=ret, actions=f"{{action: {action}{extra}}}, {{action: NoPost}}"),
              name="b"),
        options={"features": feats})
    assert quiet is not None, diags
    assert posts(quiet.files["prog.bpf.c"].decode()) == 0


def test_rate_limit_still_gates_the_default_and_explicit_post(tmp_path: Path) -> None:
    art, diags = compile_one(write(tmp_path, OPENAT.format(
        prefix="/tmp/x", actions="{action: Sigkill}, {action: Post, rateLimit: 1m}")),
        options={"features": features(btf=True, syscall_tracepoints=True, send_signal=True)})
    assert art is not None, diags
    src = art.files["prog.bpf.c"].decode()
    assert "if (tp_rate_ok(e, 0," in src and src.count("tp_post(e);") == 1


def test_action_word_orders_the_flat_list_last_run_last() -> None:
    post, kill = S.ACTIONS["Post"], S.ACTIONS["Sigkill"]
    both = (1 << post) | (1 << kill)
    assert action_names(both | (post + 1) << S.LAST_ACTION_SHIFT) == ["Sigkill", "Post"]
    assert action_names(both | (kill + 1) << S.LAST_ACTION_SHIFT) == ["Post", "Sigkill"]
    assert action_names(0) == ["Post"]  # a hook without selectors


# ------------------------------------------------------------------ guest: kprobe, fentry, kretprobe, fexit, LSM

GUEST_ENTRY = """\
apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata:
  name: {name}
  annotations:
    bpfpolicy.io/kernel-test: |
      exec-expect exit=0 echo x > /tmp/pd-src && mv -f /tmp/pd-src /tmp/pd-kill
      exec-expect exit=1 exec cat /tmp/pd-other
      event-expect none {hook}
      exec-expect signal=9 exec cat /tmp/pd-kill
      event-expect {want} {hook}{action}
spec:
  {section}:
  - {key}: {call}
{extra}    args: [{{index: {index}, type: {type}}}]
    selectors:
    - matchArgs: [{{index: {index}, operator: Prefix, values: [/tmp/pd-kill]}}]
      {actions_key}: [{actions}]
"""


def guest_policy(name: str, section: str, call: str, actions: str, want: str = "posted",
                 ret: bool = False) -> str:
    lsm = section == "lsmhooks"
    extra = "    syscall: true\n" if not lsm else ""
    if ret:
        extra += "    return: true\n    returnArg: {index: 0, type: int}\n"
    return GUEST_ENTRY.format(
        name=name, section=section, key="hook" if lsm else "call", call=call, extra=extra,
        index=0 if lsm else 1, type="file" if lsm else "string", hook=call,
        actions_key="matchReturnActions" if ret else "matchActions", actions=actions, want=want,
        action=" action=Sigkill" if want == "posted" else "")


@pytest.mark.vm
def test_sigkill_only_posts_on_every_guest_backend(tmp_path: Path, cli) -> None:
    """Debian 6.12 (QEMU): a Sigkill-only selector kills `cat` opening /tmp/pd-kill (created by
    a rename: file_open runs only for a file that exists, and nothing may open it first) and posts
    an event saying Sigkill on kprobe, fentry, kretprobe (matchReturnActions), fexit and
    lsm/file_open; with NoPost (LSM) it kills and posts nothing."""
    kill = "{action: Sigkill}"
    policies = {
        "pd-kprobe": guest_policy("pd-kprobe", "kprobes", "sys_openat", kill),
        "pd-fentry": guest_policy("pd-fentry", "fentries", "sys_openat", kill),
        "pd-kretprobe": guest_policy("pd-kretprobe", "kprobes", "sys_openat", kill, ret=True),
        "pd-fexit": guest_policy("pd-fexit", "fentries", "sys_openat", kill, ret=True),
        "pd-lsm": guest_policy("pd-lsm", "lsmhooks", "file_open", kill),
        "pd-lsm-nopost": guest_policy("pd-lsm-nopost", "lsmhooks", "file_open",
                                      "{action: Sigkill}, {action: NoPost}", want="none"),
    }
    results, _ = guest_kernel_test(cli, tmp_path, {f"{name}.yaml": text for name, text in policies.items()})
    rows = [r for k in results["kernels"] for r in k["results"]]
    assert all(r["status"] == "ok" for r in rows), rows
    attached = {r["detail"].split(": ")[-1] for r in rows if r["step"] == "attach"}
    assert {"kprobe/__x64_sys_openat", "fentry/__x64_sys_openat", "kretprobe/__x64_sys_openat",
            "fexit/__x64_sys_openat", "lsm/file_open"} <= attached, attached
    for name in policies:
        mine = [r for r in rows if r["artifact"] == f"TracingPolicy/{name}"]
        assert [r["step"] for r in mine].count("event-expect") == 2, mine
