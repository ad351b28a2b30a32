"""Packet shapes that used to walk past an XDPBlocklist (issue #10), sent as real frames over
a veth between two network namespaces against a policy applied by `bpfpolicy apply` (the
controller path). The verdict is observed by *delivery*: a UDP listener in the receiving
namespace gets the datagram, or a SYN-ACK comes back for a TCP SYN (the kernel reassembles
fragments, strips VID-0 tags and walks extension headers on its own). Then every frame is
also test-run (BPF_PROG_TEST_RUN) against the Python reference `classify_frame`.

Sources (all on ns_b's veth, so SYN-ACKs route back):  B = port-scoped deny (tcp/udp 22,
5353),  C = listed nowhere (controls),  D = address-only deny,  E = protocol-scoped deny
(udp). IPv6 twins use the ::2/::3/::4/::5 addresses of the same pair."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from bpfpolicy.kernel.netns import VethPair, ip, socket_in_netns
from bpfpolicy.kinds.xdp.lower import MAX_IPV6_EXT_HEADERS, MAX_VLAN_DEPTH, classify_frame

from helpers.xdp import load

pytestmark = pytest.mark.kernel
REPO = Path(__file__).resolve().parents[3]
UDP_DENIED, UDP_OPEN, TCP_DENIED, TCP_OPEN = 5353, 5556, 22, 23
PACKET_OUTGOING = 4
DELIVERED, DROPPED = True, False


@dataclass
class Net:
    pair: VethPair
    mac_a: str
    mac_b: str

    def v4(self, host: str) -> str:
        return f"10.{self.pair.subnet[0]}.{self.pair.subnet[1]}.{'ABCDE'.index(host) + 1}"

    def v6(self, host: str) -> str:
        return f"fd00:{self.pair.subnet[0]:x}:{self.pair.subnet[1]:x}::{'ABCDE'.index(host) + 1}"


# --------------------------------------------------------------------------- frame builders
# Each builder: (net, row number) -> frames. UDP rows carry b"ROW<n>" as payload; TCP rows
# are SYNs from source port 40000+n, answered by a SYN-ACK to that port when delivered.


def _l2(n: Net, tags: tuple[int, ...] = ()) -> Packet:
    frame: Packet = Ether(src=n.mac_b, dst=n.mac_a)
    for tpid in tags:
        frame = frame / (Dot1AD(vlan=0) if tpid == 0x88A8 else Dot1Q(vlan=0))
    return frame


def _l3(n: Net, src: str, six: bool, exts: tuple[Packet, ...] = ()) -> Packet:
    if not six:
        return IP(src=src, dst=n.pair.ip4_a)
    hdr: Packet = IPv6(src=src, dst=n.pair.ip6_a)
    for e in exts:
        hdr = hdr / e.copy()
    return hdr


def _src(n: Net, host: str, six: bool) -> str:
    return n.v6(host) if six else n.v4(host)


def udp(host: str, dport: int, six: bool = False, tags: tuple[int, ...] = (), exts: tuple[Packet, ...] = (),
        src: Callable[[Net], str] | None = None, size: int = 0,
        ) -> Callable[[Net, int], list[bytes]]:
    def build(n: Net, row: int) -> list[bytes]:
        s = src(n) if src else _src(n, host, six)
        pkt = _l2(n, tags) / _l3(n, s, six or ":" in s, exts) / UDP(sport=30000 + row, dport=dport) / \
            Raw(b"ROW%d" % row + bytes(size))
        return [bytes(pkt)]
    return build


def syn(host: str, dport: int, six: bool = False, tags: tuple[int, ...] = ()) -> Callable[[Net, int], list[bytes]]:
    def build(n: Net, row: int) -> list[bytes]:
        return [bytes(_l2(n, tags) / _l3(n, _src(n, host, six), six) / TCP(sport=40000 + row, dport=dport, flags="S"))]
    build.tcp = True  # type: ignore[attr-defined]
    return build


def _l4_bytes(l3: Packet) -> bytes:
    """The L4 header+payload of an IP packet, checksums filled in."""
    full = l3.__class__(bytes(l3))
    return bytes(full[TCP] if TCP in full else full[UDP])


def frags(kind: str, host: str, dport: int, pieces: list[tuple[int, int]], six: bool = False,
          last_mf: bool = False) -> Callable[[Net, int], list[bytes]]:
    """`kind` "tcp" (a SYN with 24 bytes of options and payload) or "udp" (1200 bytes),
    cut into `pieces` (start, end) byte ranges of the L4 bytes, in that order; MF is set on
    every piece that does not end the datagram."""
    def build(n: Net, row: int) -> list[bytes]:
        s = _src(n, host, six)
        l4: Packet = (TCP(sport=40000 + row, dport=dport, flags="S", options=[("MSS", 1400), ("NOP", None)] * 2)
                      / Raw(bytes(16)) if kind == "tcp" else UDP(sport=30000 + row, dport=dport) / Raw(b"ROW%d" % row + bytes(1200)))
        l3 = _l3(n, s, six) / l4
        data, proto, ident = _l4_bytes(l3), (6 if kind == "tcp" else 17), 0x4000 + row
        out = []
        for start, end in pieces:
            end = min(end, len(data))
            mf = end < len(data) or last_mf
            if six:
                hdr = IPv6(src=s, dst=n.pair.ip6_a) / IPv6ExtHdrFragment(nh=proto, offset=start // 8, m=int(mf), id=ident)
            else:
                hdr = IP(src=s, dst=n.pair.ip4_a, id=ident, proto=proto, flags="MF" if mf else 0, frag=start // 8)
            out.append(bytes(_l2(n) / hdr / Raw(data[start:end])))
        return out
    build.tcp = kind == "tcp"  # type: ignore[attr-defined]
    return build


def v4_options(host: str, dport: int) -> Callable[[Net, int], list[bytes]]:
    def build(n: Net, row: int) -> list[bytes]:
        rr = IPOption(b"\x07\x0b\x04" + bytes(8))  # record route, 11 bytes (IHL 8)
        pkt = _l2(n) / IP(src=n.v4(host), dst=n.pair.ip4_a, options=[rr]) / \
            UDP(sport=30000 + row, dport=dport) / Raw(b"ROW%d" % row)
        return [bytes(pkt)]
    return build


HBH, DST, RT, FRAG = IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(type=0, segleft=0), \
    IPv6ExtHdrFragment(offset=0, m=0, id=7)
EXT7 = (HBH, DST, DST, DST, DST, DST, DST)
MIX = (HBH, RT, DST, FRAG, DST)
EXT20 = (HBH, RT, FRAG, *(DST,) * 17)
EXT_OVER = (HBH, RT, *(DST,) * (MAX_IPV6_EXT_HEADERS - 1))  # one more than the program walks
TCP_SPLIT_8 = [(0, 8), (8, 64)]       # tiny first fragment: 8 bytes of TCP, then offset 1
TCP_SPLIT_16 = [(0, 16), (16, 64)]    # tiny first fragment: 16 bytes of TCP (no flags)
TCP_NORMAL = [(0, 24), (24, 64)]      # whole TCP header in the first fragment
OFFSET_1 = [(0, 24), (8, 64)]         # second fragment at offset 1 overlaps the TCP flags
OVERLAP = [(0, 24), (16, 64), (0, 24)]  # a later fragment rewrites the first one
UDP_NORMAL = [(0, 600), (600, 2000)]
V4MAPPED = lambda n: "::ffff:" + n.v4("D")  # noqa: E731
V4MAPPED_C = lambda n: "::ffff:" + n.v4("C")  # noqa: E731
V4COMPAT = lambda n: "::" + n.v4("D")  # noqa: E731
NAT64 = lambda n: "64:ff9b::" + n.v4("D")  # noqa: E731

ROWS: list[tuple[str, Callable[[Net, int], list[bytes]], bool]] = [
    # controls: plain packets behave as the rules say
    ("C udp open (control)", udp("C", UDP_OPEN), DELIVERED),
    ("C6 udp open (control)", udp("C", UDP_OPEN, six=True), DELIVERED),
    ("B udp denied port", udp("B", UDP_DENIED), DROPPED),
    ("B6 udp denied port", udp("B", UDP_DENIED, six=True), DROPPED),
    ("B udp open port (control)", udp("B", UDP_OPEN), DELIVERED),
    ("D udp address-only deny", udp("D", UDP_OPEN), DROPPED),
    ("D6 udp address-only deny", udp("D", UDP_OPEN, six=True), DROPPED),
    ("E udp protocol deny", udp("E", UDP_OPEN), DROPPED),
    ("B syn denied port", syn("B", TCP_DENIED), DROPPED),
    ("B6 syn denied port", syn("B", TCP_DENIED, six=True), DROPPED),
    ("B syn open port (control)", syn("B", TCP_OPEN), DELIVERED),
    ("B6 syn open port (control)", syn("B", TCP_OPEN, six=True), DELIVERED),
    ("C syn port 22 (control)", syn("C", TCP_DENIED), DELIVERED),
    ("E syn: udp-only rule (control)", syn("E", TCP_OPEN), DELIVERED),
    # VLAN stacks (VID 0 priority tags; 0x88a8 outer for QinQ)
    ("D 1 tag", udp("D", UDP_OPEN, tags=(0x8100,)), DROPPED),
    ("D 2 tags", udp("D", UDP_OPEN, tags=(0x8100,) * 2), DROPPED),
    ("D 3 tags", udp("D", UDP_OPEN, tags=(0x8100,) * 3), DROPPED),
    ("D6 3 tags", udp("D", UDP_OPEN, six=True, tags=(0x8100,) * 3), DROPPED),
    ("D 5 tags", udp("D", UDP_OPEN, tags=(0x8100,) * 5), DROPPED),
    ("D QinQ 88a8+8100", udp("D", UDP_OPEN, tags=(0x88A8, 0x8100)), DROPPED),
    ("D6 QinQ 88a8+8100", udp("D", UDP_OPEN, six=True, tags=(0x88A8, 0x8100)), DROPPED),
    ("D 88a8+88a8+8100", udp("D", UDP_OPEN, tags=(0x88A8, 0x88A8, 0x8100)), DROPPED),
    ("B 3 tags denied port", udp("B", UDP_DENIED, tags=(0x8100,) * 3), DROPPED),
    ("C 1 tag (control)", udp("C", UDP_OPEN, tags=(0x8100,)), DELIVERED),
    ("C 3 tags (control)", udp("C", UDP_OPEN, tags=(0x8100,) * 3), DELIVERED),
    ("C QinQ (control)", udp("C", UDP_OPEN, tags=(0x88A8, 0x8100)), DELIVERED),
    (f"C {MAX_VLAN_DEPTH} tags: the limit (control)", udp("C", UDP_OPEN, tags=(0x8100,) * MAX_VLAN_DEPTH), DELIVERED),
    ("C 5 tags: deeper than MAX_VLAN_DEPTH", udp("C", UDP_OPEN, tags=(0x8100,) * 5), DROPPED),
    ("C6 5 tags: deeper than MAX_VLAN_DEPTH", udp("C", UDP_OPEN, six=True, tags=(0x8100,) * 5), DROPPED),
    ("D syn 3 tags", syn("D", TCP_OPEN, tags=(0x8100,) * 3), DROPPED),
    # IPv6 extension header chains (IPv4 twin: options)
    ("B6 7 ext headers denied port", udp("B", UDP_DENIED, six=True, exts=EXT7), DROPPED),
    ("E6 7 ext headers udp-only rule", udp("E", UDP_OPEN, six=True, exts=EXT7), DROPPED),
    ("B6 hbh+rt+dst+frag+dst denied port", udp("B", UDP_DENIED, six=True, exts=MIX), DROPPED),
    ("B6 7 ext headers open port (control)", udp("B", UDP_OPEN, six=True, exts=EXT7), DELIVERED),
    ("B6 mixed chain open port (control)", udp("B", UDP_OPEN, six=True, exts=MIX), DELIVERED),
    (f"B6 {MAX_IPV6_EXT_HEADERS} ext headers denied port", udp("B", UDP_DENIED, six=True, exts=(HBH,) + (DST,) * (MAX_IPV6_EXT_HEADERS - 1)), DROPPED),
    ("B6 20 ext headers open port: over the limit", udp("B", UDP_OPEN, six=True, exts=EXT20), DROPPED),
    ("B6 20 ext headers denied port", udp("B", UDP_DENIED, six=True, exts=EXT20), DROPPED),
    ("C6 limit+1 ext headers: no rule looks (control)", udp("C", UDP_OPEN, six=True, exts=EXT_OVER), DELIVERED),
    ("B6 limit+1 ext headers open port: fail closed", udp("B", UDP_OPEN, six=True, exts=EXT_OVER), DROPPED),
    ("C6 20 ext headers (the kernel drops these itself)", udp("C", UDP_OPEN, six=True, exts=EXT20), DROPPED),
    ("D6 20 ext headers address-only", udp("D", UDP_OPEN, six=True, exts=EXT20), DROPPED),
    ("B ipv4 options denied port (control)", v4_options("B", UDP_DENIED), DROPPED),
    ("B ipv4 options open port (control)", v4_options("B", UDP_OPEN), DELIVERED),
    # tiny, offset-1 and overlapping fragments (RFC 1858 / RFC 3128)
    ("B syn tiny first fragment 8B", frags("tcp", "B", TCP_DENIED, TCP_SPLIT_8), DROPPED),
    ("B syn tiny first fragment 16B", frags("tcp", "B", TCP_DENIED, TCP_SPLIT_16), DROPPED),
    ("B6 syn tiny first fragment 8B", frags("tcp", "B", TCP_DENIED, TCP_SPLIT_8, six=True), DROPPED),
    ("B6 syn tiny first fragment 16B", frags("tcp", "B", TCP_DENIED, TCP_SPLIT_16, six=True), DROPPED),
    ("B syn tiny 16B to open port: fail closed", frags("tcp", "B", TCP_OPEN, TCP_SPLIT_16), DROPPED),
    ("C syn tiny 16B: no rule looks (control)", frags("tcp", "C", TCP_DENIED, TCP_SPLIT_16), DELIVERED),
    ("B syn offset-1 overlap", frags("tcp", "B", TCP_OPEN, OFFSET_1), DROPPED),
    ("B6 syn offset-1 overlap", frags("tcp", "B", TCP_OPEN, OFFSET_1, six=True), DROPPED),
    ("B syn overlapping fragments", frags("tcp", "B", TCP_DENIED, OVERLAP), DROPPED),
    ("B6 syn overlapping fragments", frags("tcp", "B", TCP_DENIED, OVERLAP, six=True), DROPPED),
    ("B syn normal fragments open port (control)", frags("tcp", "B", TCP_OPEN, TCP_NORMAL), DELIVERED),
    ("B6 syn normal fragments open port (control)", frags("tcp", "B", TCP_OPEN, TCP_NORMAL, six=True), DELIVERED),
    ("B syn normal fragments denied port (control)", frags("tcp", "B", TCP_DENIED, TCP_NORMAL), DROPPED),
    ("B udp normal fragments open port (control)", frags("udp", "B", UDP_OPEN, UDP_NORMAL), DELIVERED),
    ("B6 udp normal fragments open port (control)", frags("udp", "B", UDP_OPEN, UDP_NORMAL, six=True), DELIVERED),
    ("B udp normal fragments denied port (control)", frags("udp", "B", UDP_DENIED, UDP_NORMAL), DROPPED),
    ("B6 udp normal fragments denied port (control)", frags("udp", "B", UDP_DENIED, UDP_NORMAL, six=True), DROPPED),
    ("D udp normal fragments address-only (control)", frags("udp", "D", UDP_OPEN, UDP_NORMAL), DROPPED),
    ("C udp normal fragments (control)", frags("udp", "C", UDP_OPEN, UDP_NORMAL), DELIVERED),
    # IPv6 sources embedding IPv4 addresses, D = an IPv4-only address deny
    ("::ffff:D udp (IPv4-mapped)", udp("D", UDP_OPEN, src=V4MAPPED), DROPPED),
    ("::ffff:C udp (IPv4-mapped, control)", udp("C", UDP_OPEN, src=V4MAPPED_C), DELIVERED),
    ("::D udp (IPv4-compatible)", udp("D", UDP_OPEN, src=V4COMPAT), DROPPED),
    ("64:ff9b::D udp (NAT64)", udp("D", UDP_OPEN, src=NAT64), DROPPED),
]


def policy(n: Net) -> str:
    return textwrap.dedent(f"""\
        apiVersion: bpfpolicy.io/v1
        kind: XDPBlocklist
        metadata: {{name: evasion}}
        spec:
          interfaces: [{{name: {n.pair.if_a}, netns: {n.pair.ns_a}}}]
          mode: generic
          deny:
            - name: address-only
              sources: [{n.v4("D")}, "{n.v6("D")}"]
            - name: ports
              sources: [{n.v4("B")}, "{n.v6("B")}"]
              protocols: [tcp, udp]
              ports: [{TCP_DENIED}, {UDP_DENIED}]
            - name: udp-only
              sources: [{n.v4("E")}, "{n.v6("E")}"]
              protocols: [udp]
        """)


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    from helpers.kernel_fixtures import require_kernel

    require_kernel()
    pair = VethPair().create()
    try:
        for host in "CDE":
            n = Net(pair, "", "")
            ip("addr", "add", f"{n.v4(host)}/24", "dev", pair.if_b, netns=pair.ns_b)
            ip("addr", "add", f"{n.v6(host)}/64", "dev", pair.if_b, "nodad", netns=pair.ns_b)
        yield Net(pair, pair.mac("a"), pair.mac("b"))
    finally:
        pair.destroy()


@pytest.fixture(scope="module")
def applied(net: Net, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The policy applied as the controller does it: `bpfpolicy apply` (compile, load, pin,
    attach), with a private bpffs root and state dir; destroyed afterwards."""
    tmp = tmp_path_factory.mktemp("evasion")
    root = Path(f"/sys/fs/bpf/bpfpolicy-test-{secrets.token_hex(4)}")
    (tmp / "config.yaml").write_text("selfHeal: false\ninterval: 1\n")
    env = {**os.environ, "BPFPOLICY_BPFFS_ROOT": str(root), "BPFPOLICY_STATE_DIR": str(tmp / "state"),
           "BPFPOLICY_CONFIG": str(tmp / "config.yaml")}
    src = tmp / "policies"
    src.mkdir()
    (src / "evasion.yaml").write_text(policy(net))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bpfpolicy", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)

    res = cli("apply", str(src))
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        yield src / "evasion.yaml"
    finally:
        cli("destroy", "--yes")
        shutil.rmtree(root, ignore_errors=True)


def _listeners(n: Net) -> tuple[list[socket.socket], list[socket.socket]]:
    udps, tcps = [], []
    for port in (UDP_DENIED, UDP_OPEN):
        s = socket_in_netns(n.pair.ns_a, socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        s.setblocking(False)
        udps.append(s)
    for port in (TCP_DENIED, TCP_OPEN):
        s = socket_in_netns(n.pair.ns_a, socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(512)
        tcps.append(s)
    return udps, tcps


def _synack_port(data: bytes) -> int | None:
    """Destination port of a SYN-ACK in an Ethernet frame (None otherwise)."""
    eth = Ether(data)
    if TCP in eth and (int(eth[TCP].flags) & 0x12) == 0x12:
        return int(eth[TCP].dport)
    return None


def test_evasion_shapes_by_delivery(net: Net, applied: Path) -> None:
    udps, tcps = _listeners(net)
    rx = socket_in_netns(net.pair.ns_b, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    tx = socket_in_netns(net.pair.ns_b, socket.AF_PACKET, socket.SOCK_RAW, 0)
    got_udp: set[bytes] = set()
    synacks: set[int] = set()
    try:
        rx.bind((net.pair.if_b, 0))
        rx.setblocking(False)
        tx.bind((net.pair.if_b, 0))
        for row, (_, build, _) in enumerate(ROWS):
            for f in build(net, row):
                tx.send(f)
            time.sleep(0.002)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            busy = False
            for s in udps:
                try:
                    got_udp.add(s.recv(4096)[:12].split(b"\0")[0])
                    busy = True
                except BlockingIOError:
                    pass
            try:
                data, addr = rx.recvfrom(65535)
                busy = True
                if addr[2] != PACKET_OUTGOING and (p := _synack_port(data)) is not None:
                    synacks.add(p)
            except BlockingIOError:
                pass
            if not busy:
                time.sleep(0.01)
    finally:
        for s in (*udps, *tcps, rx, tx):
            s.close()
    wrong = []
    for row, (name, build, want) in enumerate(ROWS):
        delivered = (40000 + row) in synacks if getattr(build, "tcp", False) else b"ROW%d" % row in got_udp
        if delivered != want:
            wrong.append(f"{name}: {'delivered' if delivered else 'dropped'}, want {'delivered' if want else 'dropped'}")
    assert not wrong, "\n".join(wrong)


def test_evasion_shapes_match_reference(net: Net, tmp_path: Path) -> None:
    """The same frames through BPF_PROG_TEST_RUN agree with the Python reference frame by
    frame, and every fail-closed drop is charged to the failClosed counter."""
    from bpfpolicy.kinds.xdp.kind import XDPBlocklistKind
    from bpfpolicy.kinds.xdp.lower import lower
    from bpfpolicy.policy.compile import compile_paths
    from bpfpolicy.policy.load import load_file

    p = tmp_path / "evasion.yaml"
    p.write_text(policy(net))
    res = compile_paths([p])
    assert res.ok, [str(d) for d in res.diagnostics]
    art = res.artifacts[0][1]
    low = lower(XDPBlocklistKind().rules(load_file(p)[0]), None)
    L = load(art)
    try:
        fail_closed = 0
        for row, (name, build, _) in enumerate(ROWS):
            for i, f in enumerate(build(net, row)):
                want, index = classify_frame(low, f)
                got = L.run(f).retval
                assert got == (1 if want == "drop" else 2), (name, i, f.hex())
                fail_closed += index == len(low.rules) + 1
        assert fail_closed >= 10
        assert L.counters()["failClosed"] == (fail_closed, L.counters()["failClosed"][1])
    finally:
        L.close()
