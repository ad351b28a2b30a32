"""Evasion shapes against a NetworkPolicy endpoint, with real packets over veth.

The peer namespace (b) writes raw Ethernet frames with an AF_PACKET socket on its veth;
the endpoint (a) has the policy on its own interface (tc) or on a cgroup its listening
sockets belong to (cgroup_skb). The verdict is asserted by delivery: a UDP listener in a
receives the datagram (or a raw ICMP socket in a sees the ICMP message). Every table row
has its IPv6 twin, and control rows that must be delivered.

Policy (issue #10): ingress from everyone, ingressDeny UDP 9001 — a deny-by-port policy,
so anything the parser cannot judge must not fall into the allow-all verdict.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

ALLOWED, DENIED = 9000, 9001
POLICY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {name: evasion}
spec:
  endpointSelector: {matchLabels: {app: srv}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - toPorts: [{ports: [{port: "9001", protocol: UDP}]}]
  egress:
  - toEntities: [all]
"""
CIDR_DENY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: mapped}}
spec:
  endpointSelector: {{matchLabels: {{app: srv}}}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromCIDR: [{peer}/32]
"""


@pytest.fixture(autouse=True)
def _needs(root_required, clang_required):
    from helpers.kernel_fixtures import require_kernel

    require_kernel()


# --------------------------------------------------------------------------- packets


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"evasion-probe") -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    hdr = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, 8 + len(hdr + payload) - 8)
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", 8 + len(payload), 17)
    c = _csum(pseudo + hdr + payload) or 0xFFFF
    return hdr[:6] + struct.pack("!H", c) + payload


def icmp(v6: bool, src: str, dst: str, typ: int, code: int, rest: bytes, body: bytes) -> bytes:
    msg = struct.pack("!BBH", typ, code, 0) + rest + body
    if v6:
        pseudo = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + \
            struct.pack("!IxxxB", len(msg), 58)
        c = _csum(pseudo + msg)
    else:
        c = _csum(msg)
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def ip4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0x1234, frag: int = 0) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0,
                    ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:] + payload


def ext(nexthdr: int, kind: int = 60) -> bytes:
    """One 8-byte extension header (Hop-by-Hop / Destination Options: PadN; Routing:
    type 0 with segments left 0, which the kernel skips)."""
    if kind == 43:
        return struct.pack("!BBBB4x", nexthdr, 0, 0, 0)
    return struct.pack("!BB", nexthdr, 0) + b"\x01\x04\0\0\0\0"


def ip6(src: str, dst: str, proto: int, payload: bytes, chain: tuple[int, ...] = ()) -> bytes:
    """IPv6 with extension headers `chain` (header type numbers, outermost first)."""
    body, nxt = payload, proto
    for kind in reversed(chain):
        body, nxt = ext(nxt, kind) + body, kind
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), nxt, 64, ipaddress.ip_address(src).packed,
                       ipaddress.ip_address(dst).packed) + body


def frag6(src: str, dst: str, proto: int, payload: bytes, off: int, more: bool, ident: int) -> bytes:
    fh = struct.pack("!BBHI", proto, 0, (off << 3) | int(more), ident)
    return ip6(src, dst, 44, fh + payload)


class Wire:
    """Frames from b's veth to a's; listeners in a."""

    def __init__(self, pair) -> None:  # noqa: ANN001
        from bpfpolicy.kernel.netns import socket_in_netns

        self.pair = pair
        self.dst_mac = bytes.fromhex(pair.mac("a").replace(":", ""))
        self.src_mac = bytes.fromhex(pair.mac("b").replace(":", ""))
        self.tx = socket_in_netns(pair.ns_b, socket.AF_PACKET, socket.SOCK_RAW)
        self.tx.bind((pair.if_b, 0))
        self.a, self.b = {4: pair.ip4_a, 6: pair.ip6_a}, {4: pair.ip4_b, 6: pair.ip6_b}

    def send(self, l3: bytes, v6: bool, vlans: tuple[int, ...] = ()) -> None:
        tags = b"".join(struct.pack("!HH", tpid, 0) for tpid in vlans)
        self.tx.send(self.dst_mac + self.src_mac + tags + (b"\x86\xdd" if v6 else b"\x08\x00") + l3)

    def close(self) -> None:
        self.tx.close()


class Listeners:
    """UDP sockets on ALLOWED/DENIED (both families) and raw ICMP sockets, in netns a.
    Created while the test process is in `cgroup` (a socket keeps the cgroup of its creator)."""

    def __init__(self, pair, cgroup: str | None = None) -> None:  # noqa: ANN001
        from bpfpolicy.kernel.netns import socket_in_netns

        self.socks: dict[tuple[str, int], socket.socket] = {}
        with _in_cgroup(cgroup):
            for fam, any_addr, v in ((socket.AF_INET, "0.0.0.0", 4), (socket.AF_INET6, "::", 6)):
                for port in (ALLOWED, DENIED):
                    s = socket_in_netns(pair.ns_a, fam, socket.SOCK_DGRAM)
                    if v == 6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.bind((any_addr, port))
                    self.socks[(f"udp{v}", port)] = s
                self.socks[(f"icmp{v}", 0)] = socket_in_netns(
                    pair.ns_a, fam, socket.SOCK_RAW, socket.IPPROTO_ICMP if v == 4 else socket.IPPROTO_ICMPV6)
        for s in self.socks.values():
            s.setblocking(False)

    def drain(self) -> None:
        for s in self.socks.values():
            with contextlib.suppress(BlockingIOError):
                while True:
                    s.recv(4096)

    def got(self, key: tuple[str, int], marker: bytes, wait: float = 0.4) -> bool:
        s, deadline = self.socks[key], time.monotonic() + wait
        while time.monotonic() < deadline:
            select.select([s], [], [], 0.05)
            try:
                if marker in s.recv(4096):
                    return True
            except BlockingIOError:
                continue
        return False

    def close(self) -> None:
        for s in self.socks.values():
            s.close()


@contextlib.contextmanager
def _in_cgroup(path: str | None):
    if not path:
        yield
        return
    with open("/proc/self/cgroup") as f:
        home = "/sys/fs/cgroup/unified" + f.read().strip().split("::", 1)[1]
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        with open(os.path.join(home, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


# --------------------------------------------------------------------------- the table

V, AD = 0x8100, 0x88A8
DO, HBH, RT = 60, 0, 43
MIXED = (HBH, DO, RT, 44, DO)  # 44: an atomic fragment header (offset 0, M=0)


def _udp_l3(w: Wire, v: int, port: int, chain: tuple[int, ...] = ()) -> bytes:
    marker = f"m{port}-{len(chain)}".encode()
    seg = udp(w.b[v], w.a[v], 40000, port, marker)
    if v == 4:
        return ip4(w.b[v], w.a[v], 17, seg)
    body, nxt = seg, 17
    for kind in reversed(chain):
        if kind == 44:
            body, nxt = struct.pack("!BBHI", nxt, 0, 0, 7) + body, 44
        else:
            body, nxt = ext(nxt, kind) + body, kind
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), nxt, 64, ipaddress.ip_address(w.b[v]).packed,
                       ipaddress.ip_address(w.a[v]).packed) + body


# (row name, family, vlan tags, ext chain, dport, delivered?, tc only)
SHAPES = [
    (f"{name} v{v}", v, tags, chain, port, ok, tc_only)
    for v in (4, 6)
    for name, tags, chain, port, ok, tc_only in [
        ("control allowed", (), (), ALLOWED, True, False),
        ("control denied", (), (), DENIED, False, False),
        ("1 VID-0 tag, denied port", (V,), (), DENIED, False, True),
        ("2 VID-0 tags, denied port", (V, V), (), DENIED, False, True),
        ("3 VID-0 tags, denied port", (V, V, V), (), DENIED, False, True),
        ("802.1ad outer + 802.1Q, denied port", (AD, V), (), DENIED, False, True),
    ]
] + [
    (f"IPv6 {name}", 6, (), chain, port, ok, False)
    for name, chain, port, ok in [
        ("5 ext headers, denied port", (DO,) * 5, DENIED, False),
        ("5 ext headers, allowed port", (DO,) * 5, ALLOWED, True),
        ("7 ext headers, denied port", (DO,) * 7, DENIED, False),
        ("7 ext headers, allowed port", (DO,) * 7, ALLOWED, True),
        ("20 ext headers, denied port", (DO,) * 20, DENIED, False),
        ("HBH+DO+RT+Frag+DO chain, denied port", MIXED, DENIED, False),
        ("HBH+DO+RT+Frag+DO chain, allowed port", MIXED, ALLOWED, True),
    ]
]




def _endpoint(tmp_path, pair, kind: str, cgroup: str | None, text: str = POLICY):  # noqa: ANN001
    from helpers.netpol import compile_text

    ep = {"name": "srv", "labels": {"app": "srv"}, "addresses": [pair.ip4_a, pair.ip6_a]}
    if kind == "tc":
        ep["interfaces"] = [{"name": pair.if_a, "netns": pair.ns_a}]
    else:
        ep["cgroup"] = cgroup
    (art,) = compile_text(tmp_path, text, [ep])
    return art


@pytest.mark.parametrize("kind", ["tc", "cgroup"])
def test_packet_shapes_table(kind, tmp_path, veth_pair, bpffs_dir, request):
    from helpers.netpol import Loaded

    pair = veth_pair
    cg = request.getfixturevalue("cgroup_dir") if kind == "cgroup" else None
    art = _endpoint(tmp_path, pair, kind, cg)
    w, lis = Wire(pair), Listeners(pair, cg)
    try:
        with Loaded(art) as ld:
            ld.attach(bpffs_dir)
            # warm up neighbour caches in both directions through the policy
            w.send(_udp_l3(w, 6, ALLOWED), True)
            lis.got(("udp6", ALLOWED), b"m")
            got = []
            for name, v, tags, chain, port, ok, tc_only in SHAPES:
                if tc_only and kind != "tc":
                    continue  # cgroup_skb sees no L2 header: nothing to tag
                lis.drain()
                w.send(_udp_l3(w, v, port, chain), v == 6, tags)
                got.append((name, lis.got((f"udp{v}", port), f"m{port}-{len(chain)}".encode()), ok))
            assert [g for g in got if g[1] != g[2]] == []
    finally:
        lis.close()
        w.close()


def _fragments(w: Wire, v: int, port: int, ident: int, shape: str) -> list[bytes]:
    marker = f"frag{port}-{shape}".encode()
    seg = udp(w.b[v], w.a[v], 40001, port, marker + b"x" * 64)
    src, dst = w.b[v], w.a[v]
    if shape == "tiny":  # TCP first fragment carrying only the ports (RFC 1858)
        tcp = struct.pack("!HHIIBBHHH", 40002, port, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
        if v == 4:
            return [ip4(src, dst, 6, tcp[:8], ident, 0x2000), ip4(src, dst, 6, tcp[8:], ident, 1)]
        return [frag6(src, dst, 6, tcp[:8], 0, True, ident), frag6(src, dst, 6, tcp[8:], 1, False, ident)]
    first, rest = seg[:24], seg[24:]
    if shape == "overlap":  # a later fragment rewrites the UDP header's port (offset 0 again)
        evil = udp(w.b[v], w.a[v], 40001, DENIED, marker + b"x" * 64)
        tail = [evil[:8]]
    else:
        tail = []
    if v == 4:
        out = [ip4(src, dst, 17, first, ident, 0x2000), ip4(src, dst, 17, rest, ident, 3)]
        return out + [ip4(src, dst, 17, t, ident, 0x2000 | 1) for t in tail]
    out = [frag6(src, dst, 17, first, 0, True, ident), frag6(src, dst, 17, rest, 3, False, ident)]
    return out + [frag6(src, dst, 17, t, 1, True, ident) for t in tail]


# (row, family, dport, shape, listener port, delivered?)
FRAGMENTS = [
    (f"{name} v{v}", v, port, shape, lport, ok)
    for v in (4, 6)
    for name, port, shape, lport, ok in [
        ("fragmented UDP to an allowed port", ALLOWED, "plain", ALLOWED, True),
        ("fragmented UDP to a denied port", DENIED, "plain", DENIED, False),
        ("overlapping fragment rewriting the port", ALLOWED, "overlap", DENIED, False),
    ]
]


def test_fragments_table_tc(tmp_path, veth_pair, bpffs_dir):
    from helpers.netpol import Loaded

    pair = veth_pair
    art = _endpoint(tmp_path, pair, "tc", None)
    w, lis = Wire(pair), Listeners(pair)
    try:
        with Loaded(art) as ld:
            ld.attach(bpffs_dir)
            w.send(_udp_l3(w, 6, ALLOWED), True)
            lis.got(("udp6", ALLOWED), b"m")
            got = []
            for n, (name, v, port, shape, lport, ok) in enumerate(FRAGMENTS):
                lis.drain()
                for f in _fragments(w, v, port, 0x4000 + n, shape):
                    w.send(f, v == 6)
                got.append((name, lis.got((f"udp{v}", lport), f"frag{port}-{shape}".encode()), ok))
            assert [g for g in got if g[1] != g[2]] == []
            # a tiny first fragment is dropped whole: counted to default deny, nothing passes
            before = ld.counters()["ingress/default-deny"][0]
            for v in (4, 6):
                for f in _fragments(w, v, ALLOWED, 0x5000 + v, "tiny"):
                    w.send(f, v == 6)
            time.sleep(0.2)
            assert ld.counters()["ingress/default-deny"][0] - before == 4  # 2 fragments x 2 families
    finally:
        lis.close()
        w.close()


def test_ipv4_mapped_source_is_the_ipv4_peer(tmp_path, veth_pair, bpffs_dir):
    """ingressDeny fromCIDR 10.x/32 also denies ::ffff:10.x (UDP delivers v4-mapped
    sources; TCP would refuse them anyway)."""
    from helpers.netpol import Loaded

    pair = veth_pair
    art = _endpoint(tmp_path, pair, "tc", None, CIDR_DENY.format(peer=pair.ip4_b))
    w, lis = Wire(pair), Listeners(pair)
    mapped = f"::ffff:{pair.ip4_b}"
    rows = [  # (row, source, delivered?)
        ("IPv4 source in the denied CIDR", pair.ip4_b, False),
        ("IPv4-mapped IPv6 form of it", mapped, False),
        ("control: the peer's own IPv6 address", pair.ip6_b, True),
    ]
    try:
        with Loaded(art) as ld:
            ld.attach(bpffs_dir)
            got = []
            for name, src, ok in rows:
                v = ipaddress.ip_address(src).version
                lis.drain()
                seg = udp(src, w.a[v], 40003, ALLOWED, name.encode())
                l3 = ip4(src, w.a[v], 17, seg) if v == 4 else ip6(src, w.a[v], 17, seg)
                w.send(l3, v == 6)
                got.append((name, lis.got((f"udp{v}", ALLOWED), name.encode()), ok))
            assert [g for g in got if g[1] != g[2]] == []
    finally:
        lis.close()
        w.close()


def test_icmp_conntrack_table_tc(tmp_path, veth_pair, bpffs_dir):
    """Endpoint a pings b (id 0x4242) and sends UDP 40100 -> b:7; only real replies and
    errors about those flows come back in: ingress ICMP is otherwise default-denied."""
    from bpfpolicy.kernel.netns import socket_in_netns

    from helpers.netpol import Loaded

    pair = veth_pair
    text = POLICY.replace("  - fromEntities: [all]\n", "  - fromEntities: [all]\n    toPorts: [{ports: [{port: \"9000\", protocol: UDP}]}]\n", 1)
    art = _endpoint(tmp_path, pair, "tc", None, text)
    w, lis = Wire(pair), Listeners(pair)
    ping_id, sport, untracked = 0x4242, 40100, 40199
    try:
        with Loaded(art) as ld:
            ld.attach(bpffs_dir)
            for v in (4, 6):
                fam = socket.AF_INET if v == 4 else socket.AF_INET6
                with socket_in_netns(pair.ns_a, fam, socket.SOCK_DGRAM) as s:
                    s.bind((w.a[v], sport))
                    s.sendto(b"tracked", (w.b[v], 7))
                proto = socket.IPPROTO_ICMP if v == 4 else socket.IPPROTO_ICMPV6
                with socket_in_netns(pair.ns_a, fam, socket.SOCK_RAW, proto) as s:
                    req = icmp(v == 6, w.a[v], w.b[v], 8 if v == 4 else 128, 0,
                               struct.pack("!HH", ping_id, 1), b"ping")
                    s.sendto(req, (w.b[v], 0))
            time.sleep(0.2)

            def quoted(v: int, port: int) -> bytes:  # what a sent: a:port -> b:7
                seg = udp(w.a[v], w.b[v], port, 7, b"tracked")
                return ip4(w.a[v], w.b[v], 17, seg) if v == 4 else ip6(w.a[v], w.b[v], 17, seg)

            echo_req, echo_rep = {4: 8, 6: 128}, {4: 0, 6: 129}
            errors = {4: [(3, 3), (11, 0), (12, 0), (4, 0)], 6: [(1, 4), (2, 0), (3, 0), (4, 0)]}
            rows = []  # (row, family, type, code, rest, body, delivered?)
            for v in (4, 6):
                rows += [
                    (f"echo request with the endpoint's ping id v{v}", v, echo_req[v], 0,
                     struct.pack("!HH", ping_id, 9), b"", False),
                    (f"echo reply to the endpoint's ping v{v}", v, echo_rep[v], 0,
                     struct.pack("!HH", ping_id, 1), b"", True),
                    (f"echo reply with another id v{v}", v, echo_rep[v], 0,
                     struct.pack("!HH", ping_id + 1, 1), b"", False),
                ]
                for typ, code in errors[v]:
                    rest = struct.pack("!I", 1280) if (v, typ) == (6, 2) else b"\0" * 4
                    rows += [
                        (f"error {typ}/{code} quoting a tracked flow v{v}", v, typ, code, rest,
                         quoted(v, sport), True),
                        (f"error {typ}/{code} quoting an untracked flow v{v}", v, typ, code, rest,
                         quoted(v, untracked), (v, typ) == (6, 2)),  # PTB: allowICMPFragNeeded (on)
                    ]
            got = []
            for n, (name, v, typ, code, rest, body, ok) in enumerate(rows):
                lis.drain()
                marker = f"icmp-row-{n:03d}".encode()
                msg = icmp(v == 6, w.b[v], w.a[v], typ, code, rest, body + marker)
                w.send(ip4(w.b[v], w.a[v], 1, msg) if v == 4 else ip6(w.b[v], w.a[v], 58, msg), v == 6)
                got.append((name, lis.got((f"icmp{v}", 0), marker), ok))
            assert [g for g in got if g[1] != g[2]] == []
    finally:
        lis.close()
        w.close()


# --------------------------------------------------------------------------- controller


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bpfpolicy", *args], env=env, capture_output=True,
                          text=True, timeout=180, cwd=Path(__file__).resolve().parents[3])


def test_interface_recreated_is_reattached_and_reported_as_drift(tmp_path, veth_pair):
    """Delete the endpoint's interface and recreate it under the same name: the tc
    attachment went with the old device. plan says reattach (drift), status says drift,
    apply puts the program back, and denied traffic is blocked again."""
    from bpfpolicy.kernel.netns import ip

    pair = veth_pair
    root = f"/sys/fs/bpf/bpfpolicy-test-{uuid.uuid4().hex[:8]}"
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "evasion.yaml").write_text(POLICY)
    (tmp_path / "config.yaml").write_text(json.dumps({
        "selfHeal": True, "interval": 1, "source": {"directory": str(pol)},
        "endpoints": [{"name": "srv", "labels": {"app": "srv"}, "addresses": [pair.ip4_a, pair.ip6_a],
                       "interfaces": [{"name": pair.if_a, "netns": pair.ns_a}]}]}))
    env = {**os.environ, "BPFPOLICY_BPFFS_ROOT": root, "BPFPOLICY_STATE_DIR": str(tmp_path / "state"),
           "BPFPOLICY_CONFIG": str(tmp_path / "config.yaml")}

    def denied_delivered() -> bool:
        w, lis = Wire(pair), Listeners(pair)
        try:
            w.send(_udp_l3(w, 4, DENIED), False)
            return lis.got(("udp4", DENIED), f"m{DENIED}-0".encode())
        finally:
            lis.close()
            w.close()

    try:
        r = _cli(env, "apply")
        assert r.returncode == 0, r.stdout + r.stderr
        assert not denied_delivered()
        # the interface goes away and comes back with the same name (new ifindex)
        ip("link", "del", pair.if_a, netns=pair.ns_a)
        ip("link", "add", pair.if_a, "type", "veth", "peer", "name", pair.if_b, "netns", pair.ns_b,
           netns=pair.ns_a)
        for ns, ifn, v4 in ((pair.ns_a, pair.if_a, pair.ip4_a), (pair.ns_b, pair.if_b, pair.ip4_b)):
            ip("addr", "add", f"{v4}/24", "dev", ifn, netns=ns)
            ip("link", "set", ifn, "up", netns=ns)
        assert denied_delivered()  # the hole the adversarial test found
        plan = _cli(env, "plan")
        assert "reattach" in plan.stdout and pair.if_a in plan.stdout, plan.stdout + plan.stderr
        status = _cli(env, "status")
        assert "Drift" in status.stdout, status.stdout + status.stderr
        r = _cli(env, "apply")
        assert r.returncode == 0, r.stdout + r.stderr
        assert not denied_delivered()
        plan = _cli(env, "plan")
        assert "reattach" not in plan.stdout, plan.stdout
    finally:
        _cli(env, "destroy", "--yes")
        subprocess.run(["rm", "-rf", root], check=False)
