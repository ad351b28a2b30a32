"""Tetragon's documented jq filters run unchanged (real `jq`) on our Tetragon-shaped export.

Lines are what `bpfpolicy events --follow` yields for a TracingPolicy hit and a
process_exec, with process blocks from a real ProcessCache seeded from /proc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from bpfpolicy.kinds.tracing.process_cache import ProcessCache
from bpfpolicy.kinds.tracing.tetragon_json import to_tetragon

pytestmark = pytest.mark.skipif(shutil.which("jq") is None, reason="jq not installed (Debian jq)")


def lines() -> str:
    cache = ProcessCache(node="node1")
    me = os.getpid()
    kprobe = {"time": "2025-01-01T00:00:00.123Z", "source": "kernel", "kind": "TracingPolicy",
              "policy": "TracingPolicy/file-monitoring", "section": "kprobes", "hook": "sys_openat",
              "args": [{"index": 1, "type": "string", "label": "pathname", "value": "/etc/shadow"},
                       {"index": 0, "type": "file", "value": "/etc/passwd"}],
              "action": ["Post"], "message": "sensitive file", "tags": ["observability.filesystem"],
              **cache.blocks(me)}
    tp = {"time": "2025-01-01T00:00:00.124Z", "source": "kernel", "section": "tracepoints",
          "hook": "syscalls/sys_enter_openat", "args": [], "action": ["Sigkill"],
          "policy": "TracingPolicy/tp", **cache.blocks(me)}
    exec_ = {"time": "2025-01-01T00:00:00.125Z", "source": "kernel", "event": "process_exec", **cache.blocks(me)}
    ctrl = {"time": "x", "source": "controller", "reason": "Applied"}
    out = [to_tetragon(e, node_name="node1") for e in (kprobe, tp, exec_, ctrl)]
    assert out[-1] is None
    return "".join(json.dumps(o) + "\n" for o in out if o)


# (Tetragon docs jq filter, expected output lines) — one row per documented example shape
CASES = [
    ("select(.process_exec != null) | .process_exec.process.binary", [os.path.realpath("/proc/self/exe")]),
    ('select(.process_kprobe.function_name == "__x64_sys_openat") | .process_kprobe.args[0].string_arg',
     ["/etc/shadow"]),
    (".process_kprobe.args[1].file_arg.path | select(. != null)", ["/etc/passwd"]),
    ("select(.process_kprobe != null) | .process_kprobe.action", ["KPROBE_ACTION_POST"]),
    ("select(.process_tracepoint != null) | [.process_tracepoint.subsys, .process_tracepoint.event, "
     ".process_tracepoint.action] | join(\" \")", ["syscalls sys_enter_openat KPROBE_ACTION_SIGKILL"]),
    ("select(.process_kprobe != null) | .process_kprobe.policy_name", ["file-monitoring"]),
    (".node_name", ["node1"] * 3),
    ("select(.process_kprobe != null) | .process_kprobe.process.pid", [str(os.getpid())]),
]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="function_name uses the x86_64 syscall prefix")
@pytest.mark.parametrize(("jq_filter", "expected"), CASES)
def test_tetragon_jq_examples_run_unchanged(jq_filter: str, expected: list[str]) -> None:
    got = subprocess.run(["jq", "-r", jq_filter], input=lines(), capture_output=True, text=True, check=True)
    assert got.stdout.split("\n")[:-1] == expected


def test_parent_exec_id_links_to_parent_block() -> None:
    ev = json.loads(lines().splitlines()[0])["process_kprobe"]
    assert ev["process"]["parent_exec_id"] == ev["parent"]["exec_id"]
    assert json.loads(lines().splitlines()[0])["time"].endswith(".123000000Z")
