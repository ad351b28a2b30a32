"""Process tracking on this host: the process sensor (sched tracepoints) and a
TracingPolicy loaded together, a real process tree sh -> python3 -> openat, and the
event's process/parent blocks, exec_ids and process_exec/process_exit events checked
against the pids and binaries the test started."""

from __future__ import annotations

import base64
import socket
import subprocess
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from bpfpolicy.kinds.tracing.events import decode_event, decode_process
from bpfpolicy.kinds.tracing.process import build_sensor
from bpfpolicy.kinds.tracing.process_cache import ProcessCache, exec_id

from helpers.tracing import compile_one, manifest, write
from helpers.tracing import ring as running

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("root_required", "clang_required")]

POLICY = """\
kprobes:
- call: sys_openat
  syscall: true
  message: "watched file opened"
  tags: [observability.filesystem]
  args:
  - index: 1
    type: string
    label: pathname
  selectors:
  - matchArgs:
    - index: 1
      operator: Prefix
      values: ["{watched}"]
"""




@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run sh -> python3 -> open(watched) under sensor + policy; every decoded line."""
    tmp = tmp_path_factory.mktemp("proc")
    watched = f"/tmp/bpfpolicy-watched-{uuid.uuid4().hex[:8]}"
    Path(watched).write_text("x")
    art, diags = compile_one(write(tmp, POLICY.format(watched=watched), name="watch-open"))
    assert art is not None, diags
    code = f"import time; open(\"{watched}\").close(); time.sleep(0.5)"
    script = f"/usr/bin/python3 -c '{code}' one 'two words'; echo $$ > {tmp}/shpid"
    with ExitStack() as stack:
        sensor = stack.enter_context(running(build_sensor()))
        policy = stack.enter_context(running(art))
        sh = subprocess.Popen(["sh", "-c", script], cwd=tmp)
        procs: list[dict] = []
        while sh.poll() is None:  # decode as the stream does: while the processes live
            procs += [decode_process(r, {}) for r in sensor.poll(50)[len(procs):]]
        assert sh.returncode == 0
        procs += [decode_process(r, {}) for r in sensor.poll(300)[len(procs):]]  # the cache first
        hits = [decode_event(r, manifest(art)) for r in policy.poll(300)]
    Path(watched).unlink()
    return {"procs": procs, "hits": hits, "sh_pid": int((tmp / "shpid").read_text()), "cwd": str(tmp),
            "watched": watched}


def test_event_carries_process_and_parent_blocks(tree: dict) -> None:
    (ev,) = [e for e in tree["hits"] if e["args"][0]["value"] == tree["watched"]]
    proc, parent = ev["process"], ev["parent"]
    assert proc["binary"].endswith("python3") or "python3" in proc["binary"], proc
    assert proc["pid"] == ev["pid"] and proc["tid"] == ev["tid"]
    assert proc["arguments"].startswith("-c 'import time; open(") and proc["arguments"].endswith(" one 'two words'")
    assert proc["cwd"] == tree["cwd"] and proc["uid"] == 0
    assert parent["binary"] in ("/usr/bin/sh", "/usr/bin/dash", "/bin/sh") and parent["pid"] == tree["sh_pid"]
    assert proc["parent_exec_id"] == parent["exec_id"]
    assert "execve" in proc["flags"].split() and "clone" in proc["flags"].split()
    assert ev["message"] == "watched file opened" and ev["tags"] == ["observability.filesystem"]


def test_exec_id_is_tetragons_node_ktime_pid(tree: dict) -> None:
    (ev,) = [e for e in tree["hits"] if e["args"][0]["value"] == tree["watched"]]
    node, ktime, pid = base64.b64decode(ev["process"]["exec_id"]).decode().rsplit(":", 2)
    assert node == socket.gethostname() and int(pid) == ev["pid"] and int(ktime) > 0


def test_process_exec_and_exit_events_for_the_tree(tree: dict) -> None:
    execs = [e for e in tree["procs"] if e["event"] == "process_exec" and "python3" in e["process"]["binary"]
             and tree["watched"] in e["process"]["arguments"]]
    exits = [e for e in tree["procs"] if e["event"] == "process_exit"
             and e["process"].get("exec_id") == (execs[0]["process"]["exec_id"] if execs else None)]
    assert len(execs) == 1 and len(exits) == 1, tree["procs"]
    assert execs[0]["parent"]["pid"] == tree["sh_pid"]
    assert exits[0]["status"] == 0 and exits[0]["signal"] == ""
    sh_exec = [e for e in tree["procs"] if e["event"] == "process_exec" and e["process"]["pid"] == tree["sh_pid"]]
    assert sh_exec and sh_exec[0]["process"]["exec_id"] == execs[0]["process"]["parent_exec_id"]


def test_seeded_from_proc_and_ancestry_reaches_init() -> None:
    """Processes older than the sensor come from /proc (flag procFS), with parents."""
    cache = ProcessCache(node="n1")
    cache.seed()
    me = cache.lookup(__import__("os").getpid())
    assert me is not None and me.flags == ["procFS"] and me.exec_id == exec_id("n1", me.ktime, me.pid)
    chain = cache.ancestors(me.pid)
    assert chain and chain[-1].pid == 1, [p.pid for p in chain]

