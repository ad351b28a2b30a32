"""Cilium fidelity in the datapath (issue 15 a, c): what passes before any verdict.

* (a) traffic inside one endpoint is never policed: on a cgroup endpoint, a packet on
  `lo` whose peer is loopback or one of the endpoint's own addresses passes, uncounted;
  the same address from another device is policed (it would be forged);
* (c) ICMP frag-needed (3/4) / ICMPv6 packet-too-big (2) pass ingress default deny while
  `allowICMPFragNeeded` is on (the default, Cilium's `allow-icmp-frag-needed`); off, they
  are judged by policy like any ICMP.
Proven on the oracle, under BPF_PROG_TEST_RUN (which runs on `lo`), with real sockets in
a cgroup, and with a real path-MTU black hole: a middlebox netns whose far link has a
smaller MTU than the endpoint's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

import pytest

from bpfpolicy.kinds import CompileContext
from bpfpolicy.kinds.netpol.lower import ALLOW, DEFAULT_DENY, PASS, SLOT_DEFAULT, SLOT_REPLY

POLICY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {name: web-in}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEntities: [world], toPorts: [{ports: [{port: "8000", protocol: TCP}]}]}]
  egress: [{toEntities: [world], toPorts: [{ports: [{port: "53", protocol: UDP}]}]}]
"""
OWN4, OWN6, WORLD4 = "10.9.0.5", "fd00:9::5", "203.0.113.9"


def _plan(tmp_path, cgroup: bool, frag_needed: bool | None = None):
    from bpfpolicy.kinds.netpol.inventory import parse_inventory
    from bpfpolicy.kinds.netpol.lower import plan_endpoint
    from bpfpolicy.kinds.netpol.rules import parse_policy
    from bpfpolicy.policy.load import load_file

    ep = {"name": "web", "labels": {"app": "web"}, "addresses": [OWN4, OWN6],
          **({"cgroup": "/sys/fs/cgroup/unified/web"} if cgroup else {"interfaces": ["eth0"]})}
    if frag_needed is not None:
        ep["allowICMPFragNeeded"] = frag_needed
    inv = parse_inventory([ep])
    f = tmp_path / "p.yaml"
    f.write_text(POLICY)
    specs = parse_policy(load_file(f)[0])
    plan = plan_endpoint(inv[0], specs, inv)
    assert plan is not None
    plan.allow_frag_needed = frag_needed is not False
    return plan


_IN, _EG = "ingress", "egress"
# (row, cgroup?, allowICMPFragNeeded, dir, peer, proto, port/type, code, on lo?, expected verdict)
ORACLE = [
    ("cg self 127.0.0.1 on lo", True, None, _IN, "127.0.0.1", 6, 9999, 0, True, (PASS, -1)),
    ("cg self 127.1.2.3 on lo", True, None, _EG, "127.1.2.3", 17, 9999, 0, True, (PASS, -1)),
    ("cg self ::1 on lo", True, None, _IN, "::1", 6, 9999, 0, True, (PASS, -1)),
    ("cg self own v4 on lo", True, None, _IN, OWN4, 6, 9999, 0, True, (PASS, -1)),
    ("cg self own v6 on lo", True, None, _EG, OWN6, 6, 9999, 0, True, (PASS, -1)),
    ("cg self own v4-mapped on lo", True, None, _IN, "::ffff:" + OWN4, 6, 9999, 0, True, (PASS, -1)),
    ("cg own address off lo: forged", True, None, _IN, OWN4, 6, 9999, 0, False,
     (DEFAULT_DENY, SLOT_DEFAULT[_IN])),
    ("cg other peer on lo", True, None, _IN, "10.9.0.6", 6, 9999, 0, True, (DEFAULT_DENY, SLOT_DEFAULT[_IN])),
    ("tc never sees lo: policed", False, None, _IN, "127.0.0.1", 6, 9999, 0, True,
     (DEFAULT_DENY, SLOT_DEFAULT[_IN])),
    ("frag-needed v4, default on", False, None, _IN, WORLD4, 1, 3, 4, False, (ALLOW, SLOT_REPLY[_IN])),
    ("packet-too-big v6, on", False, True, _IN, "2001:db8::9", 58, 2, 0, False, (ALLOW, SLOT_REPLY[_IN])),
    ("frag-needed v4, off", False, False, _IN, WORLD4, 1, 3, 4, False, (DEFAULT_DENY, SLOT_DEFAULT[_IN])),
    ("packet-too-big v6, off", True, False, _IN, "2001:db8::9", 58, 2, 0, False,
     (DEFAULT_DENY, SLOT_DEFAULT[_IN])),
    ("port unreachable 3/3 is not frag-needed", False, None, _IN, WORLD4, 1, 3, 3, False,
     (DEFAULT_DENY, SLOT_DEFAULT[_IN])),
    ("frag-needed on egress: policy", False, None, _EG, WORLD4, 1, 3, 4, False,
     (DEFAULT_DENY, SLOT_DEFAULT[_EG])),
]


@pytest.mark.parametrize("row", ORACLE, ids=[r[0] for r in ORACLE])
def test_oracle_and_tables_agree(tmp_path, row):
    _, cg, knob, d, peer, proto, port, code, lo, want = row
    plan = _plan(tmp_path, cg, knob)
    assert plan.reference_verdict(d, peer, proto, port, code, loopback=lo) == want
    assert plan.table_verdict(d, peer, proto, port, code, loopback=lo) == want


def test_inventory_knob_is_checked():
    from bpfpolicy.kinds.netpol.inventory import InventoryError, parse_inventory

    with pytest.raises(InventoryError, match="allowICMPFragNeeded: 'yes' is not true or false"):
        parse_inventory([{"name": "web", "interfaces": ["eth0"], "allowICMPFragNeeded": "yes"}])


def _compile(tmp_path, inventory, **options):
    from bpfpolicy.kinds.netpol.kind import NetworkPolicyKind
    from bpfpolicy.policy.load import load_file
    from bpfpolicy.policy.validate import validate_documents

    f = tmp_path / "p.yaml"
    f.write_text(POLICY)
    docs = [v.doc for v in validate_documents(load_file(f)).policies]
    (art,) = NetworkPolicyKind().compile_set(docs, CompileContext(options={"inventory": inventory, **options}))
    return art


def _icmp_frame(src: str, dst: str, icmp_type: int, code: int) -> bytes:
    from bpfpolicy.kinds.netpol.packets import frame

    data = bytearray(frame(src, dst, 58 if ":" in src else 1, 0, icmp_type))
    data[14 + (40 if ":" in src else 20) + 1] = code
    return bytes(data)


# (row, cgroup?, compile option, program, frame, expected retval); test runs are on "lo"
def _testrun_rows():
    from bpfpolicy.kinds.netpol.packets import frame

    def tcp_in(src, dst):
        return frame(src, dst, 6, 40000, 9999)

    return [
        ("cg ingress from 127.0.0.1", True, {}, "netpol_cg_ingress", tcp_in("127.0.0.1", "127.0.0.1"), 1),
        ("cg ingress from ::1", True, {}, "netpol_cg_ingress", tcp_in("::1", "::1"), 1),
        ("cg ingress from own v4", True, {}, "netpol_cg_ingress", tcp_in(OWN4, OWN4), 1),
        ("cg egress to own v6", True, {}, "netpol_cg_egress", tcp_in(OWN6, OWN6), 1),
        ("cg ingress from another peer", True, {}, "netpol_cg_ingress", tcp_in("10.9.0.6", OWN4), 0),
        ("tc ingress from 127.0.0.1", False, {}, "netpol_tc_ingress", tcp_in("127.0.0.1", OWN4), 2),
        ("tc untracked frag-needed, default", False, {}, "netpol_tc_ingress", _icmp_frame(WORLD4, OWN4, 3, 4), 0),
        ("tc untracked PTB, default", False, {}, "netpol_tc_ingress", _icmp_frame("2001:db8::9", OWN6, 2, 0), 0),
        ("tc untracked frag-needed, off", False, {"allow_icmp_frag_needed": False}, "netpol_tc_ingress",
         _icmp_frame(WORLD4, OWN4, 3, 4), 2),
        ("tc untracked PTB, off", False, {"allow_icmp_frag_needed": False}, "netpol_tc_ingress",
         _icmp_frame("2001:db8::9", OWN6, 2, 0), 2),
        ("tc 3/3 untracked, default", False, {}, "netpol_tc_ingress", _icmp_frame(WORLD4, OWN4, 3, 3), 2),
    ]


@pytest.mark.kernel
def test_prog_test_run_rows(tmp_path, root_required, clang_required):
    from helpers.kernel_fixtures import require_kernel
    from helpers.netpol import Loaded

    require_kernel()
    got, want = [], []
    for name, cg, opts, prog, data, expect in _testrun_rows():
        inv = [{"name": "web", "labels": {"app": "web"}, "addresses": [OWN4, OWN6],
                **({"cgroup": "/sys/fs/cgroup/unified/web"} if cg else {"interfaces": ["eth0"]})}]
        with Loaded(_compile(tmp_path, inv, **opts)) as ld:
            got.append((name, ld.run(prog, data)))
            if cg and expect == 1:  # inside the endpoint: no verdict, nothing counted
                assert all(v[0] == 0 for v in ld.counters().values()), name
        want.append((name, expect))
    assert got == want


# --------------------------------------------------------------------- (a) live, cgroup

SELF_CHILD = r"""
import json, os, socket, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
sys.path.insert(0, sys.argv[3])
from netpol_probe import enter_netns, tcp
enter_netns(sys.argv[2])
lis = []
for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    for port in (8000, 8001):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port)); s.listen(64); lis.append(s)
print(json.dumps([tcp(h, 8001) for h in json.loads(sys.argv[4])]), flush=True)
sys.stdin.read()  # keep listening (the peer probes now) until the parent closes stdin
"""


@pytest.mark.kernel
def test_endpoint_reaches_itself_a_peer_does_not(tmp_path, veth_pair, root_required, clang_required):
    """A cgroup endpoint (its sockets in netns b) under ingress default deny (TCP 8000
    only): connecting to itself on 8001 works over 127.0.0.1, ::1 and its own v4/v6
    addresses; a peer (netns a, not in the cgroup) gets 8000 and not 8001."""
    from kinds.netpol.test_netpol_kernel import PROBE, probe

    from helpers.netpol import Loaded

    root = "/sys/fs/cgroup/unified"
    if not os.path.exists(os.path.join(root, "cgroup.procs")):
        pytest.skip(f"no cgroup v2 hierarchy at {root}")
    cg = os.path.join(root, f"bpfpolicy-self-{secrets.token_hex(5)}")
    os.mkdir(cg)
    p = veth_pair
    inv = [{"name": "web", "labels": {"app": "web"}, "cgroup": cg, "addresses": [p.ip4_b, p.ip6_b]}]
    selves = ["127.0.0.1", "::1", p.ip4_b, p.ip6_b]
    child = None
    try:
        with Loaded(_compile(tmp_path, inv)) as ld:
            ld.attach("")
            import json

            child = subprocess.Popen(
                [sys.executable, "-c", SELF_CHILD, cg, p.ns_b, os.path.dirname(PROBE), json.dumps(selves)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = child.stdout.readline()  # type: ignore[union-attr]
            assert json.loads(line) == [True, True, True, True]
            assert ld.counters()["ingress/default-deny"][0] == 0  # the self traffic was not judged
            assert probe(p.ns_a, [["tcp", p.ip4_b, 8000], ["tcp", p.ip4_b, 8001],
                                  ["tcp", p.ip6_b, 8001]]) == [True, False, False]
            assert ld.counters()["ingress/default-deny"][0] >= 2
            ld.detach()
    finally:
        if child is not None:
            child.stdin.close()  # type: ignore[union-attr]
            child.wait(10)
        with contextlib.suppress(OSError):
            os.rmdir(cg)


# --------------------------------------------------------------------- (c) live, path MTU

class MtuPath:
    """client (c) -- middlebox (m) -- endpoint (e): m's interface towards c has MTU 1280,
    every other end 1500, so c advertises a 1460-byte MSS and e's full-sized segments
    need m's frag-needed / packet-too-big to get through."""

    def __init__(self) -> None:
        from bpfpolicy.kernel.netns import unique_name

        tag = secrets.token_hex(3)
        self.ns = {k: unique_name(f"bpm{k}-", 14) for k in "cme"}
        self.x = secrets.randbelow(200) + 20
        self.ifs = {k: f"pm{k}{tag}" for k in ("e0", "m0", "m1", "c0")}
        self.ip = {"e": (f"10.{self.x}.1.2", f"fd{self.x:02x}:1::2"), "m0": (f"10.{self.x}.1.1", f"fd{self.x:02x}:1::1"),
                   "m1": (f"10.{self.x}.2.1", f"fd{self.x:02x}:2::1"), "c": (f"10.{self.x}.2.2", f"fd{self.x:02x}:2::2")}

    def create(self) -> MtuPath:
        from bpfpolicy.kernel.netns import create_netns, ip

        for n in self.ns.values():  # no DAD: a tentative link-local would stall IPv6 for ~2 s
            create_netns(n)
            subprocess.run(["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0",
                            "net.ipv6.conf.all.accept_dad=0"], check=True)
        e, m, c = self.ns["e"], self.ns["m"], self.ns["c"]
        ip("link", "add", self.ifs["e0"], "type", "veth", "peer", "name", self.ifs["m0"], "netns", m, netns=e)
        ip("link", "add", self.ifs["m1"], "type", "veth", "peer", "name", self.ifs["c0"], "netns", c, netns=m)
        ip("link", "set", self.ifs["m1"], "mtu", "1280", netns=m)
        for ns, ifn, key in ((e, "e0", "e"), (m, "m0", "m0"), (m, "m1", "m1"), (c, "c0", "c")):
            ip("addr", "add", f"{self.ip[key][0]}/24", "dev", self.ifs[ifn], netns=ns)
            ip("addr", "add", f"{self.ip[key][1]}/64", "dev", self.ifs[ifn], "nodad", netns=ns)
            ip("link", "set", self.ifs[ifn], "up", netns=ns)
        for ns, via in ((e, "m0"), (c, "m1")):
            ip("route", "add", "default", "via", self.ip[via][0], netns=ns)
            ip("-6", "route", "add", "default", "via", self.ip[via][1], netns=ns)
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            subprocess.run(["ip", "netns", "exec", m, "sysctl", "-qw", key], check=True)
        return self

    def destroy(self) -> None:
        from bpfpolicy.kernel.netns import delete_netns

        for n in self.ns.values():
            delete_netns(n)


PAYLOAD = 256 * 1024  # ~180 full-sized segments: nothing gets through a black hole


def transfer(path: MtuPath, family: int, bound: float) -> int:
    """The endpoint sends PAYLOAD bytes to the client's connection; bytes received by
    the client within `bound` seconds."""
    from bpfpolicy.kernel.netns import socket_in_netns

    v = 0 if family == 4 else 1
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    srv = socket_in_netns(path.ns["e"], fam, socket.SOCK_STREAM)
    srv.bind((path.ip["e"][v], 8000))
    srv.listen(1)

    conns: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = srv.accept()
            conns.append(conn)
            conn.settimeout(bound + 2)
            conn.sendall(b"x" * PAYLOAD)  # a black hole: blocks until the conn is shut below

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    got = 0
    with socket_in_netns(path.ns["c"], fam, socket.SOCK_STREAM) as cli:
        cli.settimeout(2)
        cli.connect((path.ip["e"][v], 8000))
        deadline = time.monotonic() + bound
        while got < PAYLOAD and time.monotonic() < deadline:
            cli.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = cli.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            got += len(chunk)
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
    t.join(bound + 5)
    for sock in [*conns, srv]:
        sock.close()
    return got


@pytest.mark.kernel
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("knob", [True, False], ids=["frag-needed-on", "frag-needed-off"])
def test_path_mtu_discovery_through_default_deny(tmp_path, bpffs_dir, root_required, clang_required, family, knob):
    """With the knob on (the default) the transfer completes: m's frag-needed/PTB reaches
    e and e lowers its path MTU. Off, the ICMP is dropped (counted to ingress/default-deny,
    an event says so) and the transfer stalls: a black hole, not slowness."""
    from helpers.netpol import Loaded

    path = MtuPath()
    try:
        path.create()
        inv = [{"name": "web", "labels": {"app": "web"}, "addresses": list(path.ip["e"]),
                "interfaces": [{"name": path.ifs["e0"], "netns": path.ns["e"]}]}]
        with Loaded(_compile(tmp_path, inv, allow_icmp_frag_needed=knob)) as ld:
            ld.attach(bpffs_dir)
            got = transfer(path, family, bound=20.0 if knob else 4.0)
            c, events = ld.counters(), ld.events()
            ld.detach()
        icmp = "ICMP" if family == 4 else "ICMPv6"
        if knob:
            assert got == PAYLOAD
            assert c["ingress/reply"][0] >= 1  # the frag-needed / PTB, passed before policy
            assert not [e for e in events if e["proto"] == icmp and e["remote"] == path.ip["m0"][family // 6]]
        else:
            assert got < PAYLOAD
            assert c["ingress/default-deny"][0] >= 1
            assert [e for e in events if e["proto"] == icmp and e["action"] == "default-deny"
                    and e["remote"] == path.ip["m0"][family // 6]]
    finally:
        path.destroy()
