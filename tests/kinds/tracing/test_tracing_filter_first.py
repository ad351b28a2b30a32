"""Filter first, then fill (issue #14): real programs on this host's syscall tracepoints.

Each row is one behaviour: a long path no longer escapes a Postfix Sigkill, a path
longer than the program can compare fails closed, a miss posts nothing, several
matchArgs AND. Plus the shape of the generated C that makes the miss cheap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from bpfpolicy.kinds import Artifact
from bpfpolicy.kinds.tracing.events import decode_event
from bpfpolicy.kinds.tracing.order import MAX_MATCH_STRING

from helpers.tracing import compile_one, manifest, write
from helpers.tracing import ring as loaded


def openat_policy(op: str, values: list[str], action: str = "Post", extra: str = "") -> str:
    vals = "".join(f"\n        - {v!r}" for v in values)
    return f"""\
kprobes:
- call: sys_openat
  syscall: true
  args:
  - {{index: 1, type: string, label: pathname}}
  - {{index: 2, type: int, label: flags}}
  selectors:
  - matchArgs:
    - index: 1
      operator: {op}
      values:{vals}
{extra}    matchActions:
    - action: {action}
"""




def open_in_child(path: str) -> subprocess.Popen[bytes]:
    """A fresh process opens `path` (which need not exist): the kill lands on it alone."""
    p = subprocess.Popen(["cat", path], stderr=subprocess.DEVNULL)  # python would open a CA .pem
    p.wait()
    return p


def run(*argv: str) -> int:
    p = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    p.wait()
    return p.pid


def build(tmp_path: Path, spec: str) -> Artifact:
    art, diags = compile_one(write(tmp_path, spec))  # this host: syscall tracepoints
    assert art is not None, diags
    return art


def long_path(total: int, suffix: str) -> str:
    head = f"/tmp/bpfpolicy-ff-{uuid.uuid4().hex[:8]}/"
    return head + "a" * (total - len(head) - len(suffix)) + suffix


# ----------------------------------------------------------------- generated C


def test_prefix_reads_only_what_the_longest_literal_needs(tmp_path: Path) -> None:
    art = build(tmp_path, openat_policy("Prefix", ["/etc/shadow", "/etc/sudoers"]))
    src = art.files["prog.bpf.c"].decode()
    body = src.split('SEC("tp/syscalls/sys_enter_openat")')[1]
    assert "bpf_probe_read_user(tp_sbuf, 12," in body  # the 12-byte literal, raw, on the stack
    miss = body.split("tp_event_slot(")[0]
    assert "bpf_map_lookup_elem" not in miss and "_str(" not in miss.split("< 0) {")[0], "a miss touches no map"
    assert body.index("tp_prefix") < body.index("tp_event_fill(e)"), "the event is filled after the match"
    assert "tp_capture_str" not in body.split("tp_event_fill(e)")[0], "no capture before the selector"


def test_pid_filter_runs_before_the_argument_is_read(tmp_path: Path) -> None:
    extra = "    matchPIDs:\n    - {operator: In, values: [1]}\n"
    src = build(tmp_path, openat_policy("Postfix", [".pem"], extra=extra)).files["prog.bpf.c"].decode()
    body = src.split('SEC("tp/syscalls/sys_enter_openat")')[1]
    assert body.index("bpf_get_current_pid_tgid() >> 32") < body.index("bpf_probe_read_user_str")
    assert f"bpf_probe_read_user_str(sc->match, {MAX_MATCH_STRING}," in body  # Postfix: the whole string


# ----------------------------------------------------------------- behaviour (one row per case)

# (case, path length, suffix, killed, truncated)
SIGKILL_ROWS = [
    ("short .pem path is killed", 40, ".pem", True, False),
    ("277-byte .pem path is killed (escaped at 255 bytes before)", 277, ".pem", True, False),
    ("277-byte .txt path runs", 277, ".txt", False, False),
    ("path longer than MAX_MATCH_STRING fails closed", MAX_MATCH_STRING + 900, ".txt", True, True),
]


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_postfix_sigkill_on_long_paths(tmp_path: Path) -> None:
    art = build(tmp_path, openat_policy("Postfix", [".pem"], action="Sigkill\n    - action: Post"))
    with loaded(art) as reader:
        results = [(row, open_in_child(long_path(n, suffix))) for row in SIGKILL_ROWS
                   for (_, n, suffix, _, _) in [row]]
        got = [decode_event(r, manifest(art)) for r in reader.poll(300)]
    for (case, _n, _suffix, killed, _t), proc in results:
        assert (proc.returncode == -9) == killed, (case, proc.returncode)
    pids = {proc.pid for _row, proc in results}
    posted = [e for e in got if e["pid"] in pids]
    assert sorted(e["truncated"] for e in posted) == sorted(r[4] for r in SIGKILL_ROWS if r[3]), posted
    long_pem = [e for e in posted if e["args"][0]["value"].endswith("a" * 10)]  # kept 255 bytes
    assert all(set(e["action"]) == {"Sigkill", "Post"} for e in posted) and long_pem


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_miss_posts_nothing_and_a_match_posts_the_right_fields(tmp_path: Path) -> None:
    target = f"/tmp/bpfpolicy-ff-{uuid.uuid4().hex[:8]}"
    art = build(tmp_path, openat_policy("Equal", [target]))
    with loaded(art) as reader:
        miss = run("touch", target + "x")
        hit = run("touch", target)
        got = [decode_event(r, manifest(art)) for r in reader.poll(300)]
    os.unlink(target)
    os.unlink(target + "x")
    assert not [e for e in got if e["pid"] == miss], "a non-matching open must not post"
    (ev,) = [e for e in got if e["pid"] == hit]
    assert ev["tid"] == hit and ev["uid"] == 0 and ev["comm"] == "touch"
    assert ev["args"][0] == {**ev["args"][0], "label": "pathname", "value": target}
    assert ev["args"][1]["label"] == "flags" and ev["args"][1]["value"] & os.O_CREAT
    assert ev["truncated"] is False and ev["selector"] == 0 and ev["binary"] == os.path.realpath(shutil.which("touch") or "")


# (case, opener: touch = O_CREAT, cat = O_RDONLY, path matches, expect event)
AND_ROWS = [
    ("path and O_CREAT: posted", "touch", True, True),
    ("path without O_CREAT: not posted", "cat", True, False),
    ("O_CREAT on another path: not posted", "touch", False, False),
]


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_several_match_args_and(tmp_path: Path) -> None:
    base = f"/tmp/bpfpolicy-and-{uuid.uuid4().hex[:8]}"
    extra = f"    - {{index: 2, operator: Mask, values: ['{os.O_CREAT}']}}\n"
    art = build(tmp_path, openat_policy("Prefix", [base], extra=extra))
    with loaded(art) as reader:
        pids = []
        for _case, opener, matches, _ in AND_ROWS:
            path = (base if matches else "/tmp/bpfpolicy-other-" + uuid.uuid4().hex[:8]) + opener
            pids.append(run(opener, path))
        got = [decode_event(r, manifest(art)) for r in reader.poll(300)]
    subprocess.run(f"rm -f {base}* /tmp/bpfpolicy-other-*", shell=True, check=False)
    for (case, _f, _m, expect), pid in zip(AND_ROWS, pids, strict=True):
        assert bool([e for e in got if e["pid"] == pid]) == expect, (case, got)
