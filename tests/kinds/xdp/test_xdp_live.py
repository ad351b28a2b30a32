"""XDPBlocklist attached to a real veth inside a network namespace, with real packets:
UDP sockets through the kernel stack, and raw frames (spoofed sources, VLAN tags, ARP,
a SYN flood) sent from the peer namespace and counted at the receiving interface with an
AF_PACKET socket (which sees only what XDP passed)."""

from __future__ import annotations

import errno
import socket
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpfpolicy.kernel import bpf, xdp
from bpfpolicy.kernel.netns import VethPair, in_netns, socket_in_netns
from bpfpolicy.kinds.xdp import packets as pk
from bpfpolicy.policy.compile import compile_paths

from helpers.xdp import Loaded, load

pytestmark = pytest.mark.kernel
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def policy(pair: VethPair, mode: str = "generic", extra: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: bpfpolicy.io/v1
        kind: XDPBlocklist
        metadata: {{name: live}}
        spec:
          interfaces: [{{name: {pair.if_a}, netns: {pair.ns_a}}}]
          mode: {mode}
          deny:
            - name: blocked
              sources: [203.0.113.0/24, 198.51.100.7, "2001:db8:bad::/48"]
            - name: peer-udp
              sources: [{pair.ip4_b}/32, "{pair.ip6_b}/128"]
              protocols: [udp]
              ports: [5555]
          allow:
            - name: exception
              sources: [203.0.113.10]
          rateLimit: {{synPerSecond: 1, burst: 4}}
        """) + extra


def compile_for(tmp_path: Path, text: str) -> object:
    p = tmp_path / "live.yaml"
    p.write_text(text)
    res = compile_paths([p])
    assert res.ok, [str(d) for d in res.diagnostics]
    return res.artifacts[0][1]


@pytest.fixture
def attached(veth_pair: VethPair, tmp_path: Path) -> Iterator[tuple[VethPair, Loaded]]:
    art = compile_for(tmp_path, policy(veth_pair))
    L = load(art)
    try:
        att = art.manifest["attachments"][0]
        assert L.attach(att["interface"], att["netns"], att["mode"]) == "generic"
        with in_netns(veth_pair.ns_a), open("/proc/sys/net/ipv4/conf/all/rp_filter", "w") as f:
            f.write("0")
        yield veth_pair, L
    finally:
        L.close()


def frame(pair: VethPair, src: str, marker: bytes, proto: int = 17, dport: int = 7000,
          flags: int = pk.TCP_ACK, vlans: tuple[int, ...] = (), size: int = 0) -> bytes:
    body = pk.packet(src, proto, dport, flags=flags, vlans=vlans)
    data = bytes.fromhex(pair.mac("a").replace(":", "")) + bytes.fromhex(pair.mac("b").replace(":", "")) + body[12:]
    data += marker
    return data + bytes(max(0, size - len(data)))


def capture(pair: VethPair, send: Callable[[socket.socket], None], marker: bytes, wait: float = 0.4) -> list[bytes]:
    """Frames carrying `marker` that reached interface a (after XDP)."""
    rx = socket_in_netns(pair.ns_a, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    tx = socket_in_netns(pair.ns_b, socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        rx.bind((pair.if_a, 0))
        tx.bind((pair.if_b, 0))
        rx.settimeout(0.05)
        send(tx)
        got: list[bytes] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data, addr = rx.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] != PACKET_OUTGOING and marker in data:
                got.append(data)
        return got
    finally:
        rx.close()
        tx.close()


def count_arrivals(pair: VethPair, frames: list[bytes], marker: bytes) -> int:
    return len(capture(pair, lambda tx: [tx.send(f) for f in frames], marker))


def test_udp_sockets_through_the_stack(attached: tuple[VethPair, Loaded]) -> None:
    pair, L = attached
    for fam, dst, src_any in ((socket.AF_INET, pair.ip4_a, "0.0.0.0"), (socket.AF_INET6, pair.ip6_a, "::")):
        rx_blocked = socket_in_netns(pair.ns_a, fam, socket.SOCK_DGRAM)
        rx_open = socket_in_netns(pair.ns_a, fam, socket.SOCK_DGRAM)
        tx = socket_in_netns(pair.ns_b, fam, socket.SOCK_DGRAM)
        try:
            rx_blocked.bind((src_any, 5555))
            rx_open.bind((src_any, 5556))
            for s in (rx_blocked, rx_open):
                s.settimeout(1.0)
            for _ in range(3):
                tx.sendto(b"blocked", (dst, 5555))
                tx.sendto(b"open", (dst, 5556))
            assert rx_open.recv(100) == b"open"
            rx_blocked.settimeout(0.3)
            with pytest.raises(TimeoutError):
                rx_blocked.recv(100)
        finally:
            for s in (rx_blocked, rx_open, tx):
                s.close()
    assert L.counters()["peer-udp"][0] >= 6


def test_spoofed_sources_vlan_and_arp(attached: tuple[VethPair, Loaded]) -> None:
    pair, _ = attached
    cases = [  # (source, vlans, arrives?)
        ("203.0.113.5", (), False), ("203.0.113.5", (100,), False), ("203.0.113.5", (100, 200), False),
        ("203.0.113.10", (), True), ("203.0.113.10", (100, 200), True),   # allow exception
        ("198.51.100.7", (), False), ("198.51.100.8", (), True),
        ("2001:db8:bad:7::1", (), False), ("2001:db8:bad:7::1", (300,), False), ("2001:db8:600d::1", (), True),
    ]
    for i, (src, vlans, arrives) in enumerate(cases):
        marker = f"MARK{i:04d}".encode()
        n = count_arrivals(pair, [frame(pair, src, marker, vlans=vlans) for _ in range(3)], marker)
        assert n == (3 if arrives else 0), (src, vlans, n)
    marker = b"ARPMARK1"
    arp = bytes.fromhex(pair.mac("a").replace(":", "")) + pk.arp("203.0.113.5")[6:] + marker
    assert count_arrivals(pair, [arp], marker) == 1


def test_counters_exact_live(attached: tuple[VethPair, Loaded]) -> None:
    pair, L = attached
    marker = b"COUNTME1"
    frames = [frame(pair, "203.0.113.77", marker, size=120) for _ in range(25)]
    before = L.counters()["blocked"]
    assert count_arrivals(pair, frames, marker) == 0
    after = L.counters()["blocked"]
    assert (after[0] - before[0], after[1] - before[1]) == (25, 25 * 120)


def test_syn_flood_is_throttled_per_source(attached: tuple[VethPair, Loaded]) -> None:
    pair, L = attached
    marker = b"SYNFLOOD"
    flood = [frame(pair, "192.0.2.50", marker + b"A", proto=6, dport=80, flags=pk.TCP_SYN) for _ in range(40)]
    calm = [frame(pair, "192.0.2.60", marker + b"B", proto=6, dport=80, flags=pk.TCP_SYN) for _ in range(4)]
    got = capture(pair, lambda tx: [tx.send(f) for f in flood + calm], marker)
    from_a = sum(1 for f in got if marker + b"A" in f)
    from_b = sum(1 for f in got if marker + b"B" in f)
    assert 4 <= from_a <= 5, from_a  # the burst (plus at most one refill)
    assert from_b == 4
    assert L.counters()["rateLimit"][0] == 40 - from_a


def test_native_attach_and_atomic_replace(veth_pair: VethPair, tmp_path: Path) -> None:
    pair = veth_pair
    first = load(compile_for(tmp_path, policy(pair, mode="auto")))
    second = load(compile_for(tmp_path, policy(pair, mode="auto").replace("ports: [5555]", "ports: [5555, 6000]")
                              .replace("rateLimit: {synPerSecond: 1, burst: 4}", "")))
    try:
        mode = xdp.attach(pair.if_a, first.prog_fd, "auto", pair.ns_a)
        state = xdp.query(pair.if_a, pair.ns_a)
        first_id = int(bpf.prog_info(first.prog_fd)["id"])
        assert mode == "native" and state.mode == "native" and state.prog_id == first_id
        with pytest.raises(OSError) as busy:
            xdp.attach(pair.if_a, second.prog_fd, "auto", pair.ns_a)  # no silent overwrite
        assert busy.value.errno in (errno.EBUSY, errno.EEXIST)
        xdp.attach(pair.if_a, second.prog_fd, netns=pair.ns_a, expected_prog_id=first_id)
        second_id = int(bpf.prog_info(second.prog_fd)["id"])
        assert xdp.query(pair.if_a, pair.ns_a).prog_id == second_id
        with pytest.raises(OSError) as stale:  # compare-and-swap against a stale id
            xdp.attach(pair.if_a, first.prog_fd, netns=pair.ns_a, expected_prog_id=first_id)
        assert stale.value.errno == errno.EEXIST
        marker = b"NATIVE01"
        assert count_arrivals(pair, [frame(pair, "203.0.113.5", marker)], marker) == 0
        marker = b"NATIVE02"
        assert count_arrivals(pair, [frame(pair, "192.0.2.99", marker)], marker) == 1
        assert xdp.detach(pair.if_a, pair.ns_a, expected_prog_id=second_id)
        assert xdp.query(pair.if_a, pair.ns_a).prog_id is None
    finally:
        xdp.detach(pair.if_a, pair.ns_a)
        first.close()
        second.close()
