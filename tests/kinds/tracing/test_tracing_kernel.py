"""TracingPolicies on this host's kernel: real loads through the verifier, real
attachments, real ring-buffer events, a real SIGKILL.

This host has no kprobes and refuses BPF trampolines (lockdown), so these policies run
on their tracepoint backends; LSM/fentry objects are load-tested in the QEMU kernel
matrix, and the test here skips with the kernel's refusal as the reason.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bpfpolicy.kinds import Artifact
from bpfpolicy.kinds.tracing.events import decode_event

from helpers.tracing import RingReader, compile_one, loaded, manifest, write

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("root_required", "clang_required")]




def events(art: Artifact, reader: RingReader, pid: int | None = None) -> list[dict]:
    out = [decode_event(r, manifest(art)) for r in reader.poll(300)]
    return [e for e in out if pid is None or e["pid"] == pid]


def test_openat_prefix_posts_event_with_path_and_binary(tmp_path: Path) -> None:
    art, diags = compile_one(ROOT / "policies/tracing/sensitive-files.yaml")
    assert art is not None, diags
    assert art.manifest["programs"][0]["section"] == "tp/syscalls/sys_enter_openat"
    with loaded(art) as (_obj, reader):
        hit = subprocess.run(["head", "-c", "0", "/etc/shadow"], check=True)
        miss = subprocess.Popen(["head", "-c", "0", "/etc/hostname"])
        miss.wait()
        got = events(art, reader)
    del hit
    shadow = [e for e in got if e["comm"] == "head" and e["args"][0]["value"] == "/etc/shadow"]
    assert len(shadow) == 1, got
    ev = shadow[0]
    assert ev["binary"] == "/usr/bin/head" and ev["uid"] == 0
    assert ev["hook"] == "sys_openat" and ev["action"] == ["Post"] and ev["selector"] == 0
    assert ev["args"][0]["label"] == "pathname" and ev["args"][1]["label"] == "flags"
    assert not [e for e in got if e["pid"] == miss.pid], "a non-matching open must not post"


def test_sigkill_from_syscall_tracepoint_kills_the_process(tmp_path: Path) -> None:
    art, diags = compile_one(ROOT / "policies/tracing/forbidden-mkdir.yaml")
    assert art is not None, diags
    forbidden = f"/tmp/bpfpolicy-forbidden-{uuid.uuid4().hex[:8]}"
    allowed = f"/tmp/bpfpolicy-allowed-{uuid.uuid4().hex[:8]}"
    try:
        with loaded(art) as (_obj, reader):
            killed = subprocess.run(["mkdir", forbidden])
            ok = subprocess.run(["mkdir", allowed])
            got = events(art, reader)
        assert killed.returncode == -9
        assert ok.returncode == 0 and os.path.isdir(allowed)
        posted = [e for e in got if e["comm"] == "mkdir"]
        assert len(posted) == 1 and posted[0]["args"][0]["value"] == forbidden
        assert set(posted[0]["action"]) == {"Sigkill", "Post"}
    finally:
        for d in (forbidden, allowed):
            if os.path.isdir(d):
                os.rmdir(d)


def test_raw_tracepoint_resolves_exec_path_through_mounts(tmp_path: Path) -> None:
    """linux_binprm -> file -> d_path walk (Tetragon's rawtp example, unchanged)."""
    corpus = ROOT.parent / "shared/corpus/tetragon/tracingpolicy__rawtp.yaml"
    if not corpus.exists():
        pytest.skip("corpus not found")
    art, diags = compile_one(corpus)
    assert art is not None, diags
    with loaded(art) as (_obj, reader):
        proc = subprocess.Popen(["/usr/bin/true"])
        proc.wait()
        got = events(art, reader, pid=proc.pid)
    assert got and got[0]["args"][0]["value"] == "/usr/bin/true", got


def test_namespace_and_pid_selectors(tmp_path: Path) -> None:
    """matchNamespaces host_ns and matchPIDs, on sys_enter_getppid."""
    me = os.getpid()
    p = write(tmp_path, f"""\
kprobes:
- call: sys_getppid
  selectors:
  - matchPIDs:
    - {{operator: In, values: [{me}]}}
    matchNamespaces:
    - {{namespace: Pid, operator: In, values: [host_ns]}}
    - {{namespace: User, operator: In, values: [host_ns]}}
    matchActions:
    - action: Post
""")
    art, diags = compile_one(p)
    assert art is not None, diags
    with loaded(art) as (_obj, reader):
        os.getppid()
        subprocess.run(["sh", "-c", "true"], check=True)  # other pids: no events
        got = events(art, reader)
    assert [e["pid"] for e in got] == [me]


def _try_load(art: Artifact) -> None:
    from bpfpolicy.kernel import libbpf

    with libbpf.BpfObject.open_mem(art.files["prog.bpf.o"], "probe") as obj:
        try:
            obj.load()
        except libbpf.BpfLoadError as e:
            if e.errno in (errno.EPERM, errno.EINVAL, errno.ENOTSUP, 524):
                pytest.skip(f"this kernel refuses {art.manifest['programs'][0]['type']} programs "
                            f"({os.strerror(e.errno)}; lockdown / no kprobes): the QEMU kernel matrix loads them")
            raise
        for prog in art.manifest["programs"]:  # the verifier accepted it; now attach
            try:
                obj.program(prog["name"]).attach().close()
            except libbpf.BpfLoadError as e:
                if e.errno == errno.ENOENT and prog["type"] == "kprobe":
                    pytest.skip("verifier accepted the kprobe programs, but this kernel has no "
                                "kprobes (attach: ENOENT); the QEMU kernel matrix attaches them")
                raise


@pytest.mark.parametrize("example", ["deny-proc-version.yaml", "kill-forbidden-mkdir-kprobe.yaml"])
def test_lsm_and_kprobe_examples_load_where_the_kernel_allows(example: str) -> None:
    art, diags = compile_one(ROOT / "docs/examples/tracing" / example, kernel=(6, 12))
    assert art is not None, diags
    _try_load(art)


def test_connect_sockaddr_network_operators(tmp_path: Path) -> None:
    """sys_connect's sockaddr (a user pointer) matched with DAddr CIDR + DPort; Sigkill
    for one port, Post for the other, nothing for a third."""
    import socket

    servers = [socket.socket() for _ in range(3)]
    for s in servers:
        s.bind(("127.0.0.1", 0))
        s.listen()
    kill_port, post_port, other_port = (s.getsockname()[1] for s in servers)
    p = write(tmp_path, f"""\
kprobes:
- call: sys_connect
  args: [{{index: 1, type: sockaddr, label: addr}}]
  selectors:
  - matchArgs:
    - {{index: 1, operator: DAddr, values: ["127.0.0.0/8"]}}
    - {{index: 1, operator: DPort, values: ["{kill_port}"]}}
    matchActions: [{{action: Sigkill}}, {{action: Post}}]
  - matchArgs:
    - {{index: 1, operator: Family, values: [AF_INET]}}
    - {{index: 1, operator: DPort, values: ["{post_port}:{post_port}"]}}
""")
    art, diags = compile_one(p)
    assert art is not None, diags
    assert art.manifest["programs"][0]["section"] == "tp/syscalls/sys_enter_connect"
    code = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])))"
    try:
        with loaded(art) as (_obj, reader):
            killed = subprocess.run(["python3", "-c", code, str(kill_port)])
            posted = subprocess.run(["python3", "-c", code, str(post_port)])
            quiet = subprocess.run(["python3", "-c", code, str(other_port)])
            got = events(art, reader)
    finally:
        for s in servers:
            s.close()
    assert killed.returncode == -9 and posted.returncode == 0 and quiet.returncode == 0
    mine = [e for e in got if e["comm"].startswith("python")]
    assert sorted(e["selector"] for e in mine) == [0, 1], mine  # the third connect: no event
    by_sel = {e["selector"]: e for e in mine}
    addr = by_sel[1]["args"][0]["value"]
    assert addr["family"] == 2 and addr["daddr"] == "127.0.0.1" and addr["dport"] == post_port
    assert by_sel[0]["args"][0]["value"]["dport"] == kill_port
    assert set(by_sel[0]["action"]) == {"Sigkill", "Post"}


def test_follow_forks_matches_descendants_only(tmp_path: Path) -> None:
    """matchPIDs In [this test's pid]: with followForks a child's getppid posts, without
    it the child does not. isNamespacePID: host processes have nspid 0 (Tetragon)."""
    me = os.getpid()
    seen = {}
    for follow in (True, False):
        p = write(tmp_path, f"""\
kprobes:
- call: sys_getppid
  selectors:
  - matchPIDs: [{{operator: In, followForks: {str(follow).lower()}, values: [{me}]}}]
  - matchPIDs: [{{operator: In, isNamespacePID: true, values: [0]}}]
    matchActions: [{{action: NoPost}}]
""", name=f"follow-{follow}".lower())
        art, diags = compile_one(p)
        assert art is not None, diags
        with loaded(art) as (_obj, reader):
            child = subprocess.run(["python3", "-c", "import os; os.getppid()"], check=True)
            del child
            got = events(art, reader)
        assert all(e["selector"] == 0 for e in got)  # the NoPost selector posts nothing
        seen[follow] = [e for e in got if e["pid"] != me and e["comm"].startswith("python")]
    assert len(seen[True]) == 1 and seen[False] == []


def test_inmap_over_a_syscall_list_on_raw_syscalls() -> None:
    """Tetragon's list-syscalls-tracepoint example, unchanged: raw_syscalls/sys_enter with
    InMap list:dups (sys_dup, sys_dup2 -> 32, 33 on x86_64; Python dup() is fcntl)."""
    corpus = ROOT.parent / "shared/corpus/tetragon/tracingpolicy__list-syscalls-tracepoint.yaml"
    if not corpus.exists():
        pytest.skip("corpus not found")
    art, diags = compile_one(corpus)
    assert art is not None, diags
    with loaded(art) as (_obj, reader):
        # the real interpreter (not a shell shim, which dup2s itself), and only its events:
        # the hook sees every process on the host
        proc = subprocess.Popen([sys.executable, "-c", "import os; os.dup2(1, 7); os.getppid()"])
        assert proc.wait() == 0
        got = [e for e in events(art, reader) if e["pid"] == proc.pid]
    assert [e["args"][0]["value"] for e in got] == [33], got  # dup2; getppid is not in the list


def test_post_with_stack_traces(tmp_path: Path) -> None:
    p = write(tmp_path, f"""\
kprobes:
- call: sys_getppid
  selectors:
  - matchPIDs: [{{operator: In, values: [{os.getpid()}]}}]
    matchActions: [{{action: Post, kernelStackTrace: true, userStackTrace: true}}]
""")
    art, diags = compile_one(p)
    assert art is not None, diags
    assert {"name": "stacks", "type": "stack_trace"} in art.manifest["maps"]
    with loaded(art) as (obj, reader):
        os.getppid()
        got = events(art, reader)
        assert obj.map("stacks").fd >= 0
    assert len(got) == 1 and got[0]["kernel_stack_id"] >= 0 and "user_stack_id" in got[0], got
