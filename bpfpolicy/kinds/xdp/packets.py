"""Tiny packet builder for XDP test vectors (kernel-test.txt, BPF_PROG_TEST_RUN tests and
bench/xdp.py). Plain struct packing: compile must not depend on scapy."""

from __future__ import annotations

import socket
import struct

ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
DST_MAC = bytes.fromhex("020000000001")
SRC_MAC = bytes.fromhex("020000000002")
TCP_SYN, TCP_ACK = 0x02, 0x10


def eth(ethertype: int, vlans: tuple[int, ...] = (), outer_tpid: int = ETH_P_8021AD) -> bytes:
    """Ethernet header; `vlans` = VLAN ids outermost first (2 tags = QinQ)."""
    hdr = DST_MAC + SRC_MAC
    for i, vid in enumerate(vlans):
        tpid = outer_tpid if (len(vlans) > 1 and i == 0) else ETH_P_8021Q
        hdr += struct.pack("!H", tpid) + struct.pack("!H", vid & 0xFFF)
    return hdr + struct.pack("!H", ethertype)


def l4(proto: int, sport: int = 40000, dport: int = 80, flags: int = TCP_ACK) -> bytes:
    if proto == 6:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    if proto == 17:
        return struct.pack("!HHHH", sport, dport, 8 + 18, 0) + bytes(18)
    if proto == 132:
        return struct.pack("!HHII", sport, dport, 0, 0)
    if proto in (1, 58):
        return struct.pack("!BBHI", 8 if proto == 1 else 128, 0, 0, 0) + bytes(16)
    return bytes(16)


def ipv4(src: str, dst: str = "192.0.2.200", proto: int = 6, payload: bytes = b"",
         options: bytes = b"", frag_offset: int = 0) -> bytes:
    opts = options + bytes(-len(options) % 4)
    ihl = 5 + len(opts) // 4
    total = ihl * 4 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, total, 1, frag_offset & 0x1FFF, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + opts + payload


def ipv6(src: str, dst: str = "2001:db8:ffff::200", nexthdr: int = 6, payload: bytes = b"") -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nexthdr, 64,
                       socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)) + payload


def v6_ext(kind: int, nexthdr: int, frag_offset: int = 0) -> bytes:
    """One IPv6 extension header: 0 hop-by-hop, 43 routing, 60 dest opts (8 bytes each),
    44 fragment (offset in 8-byte units)."""
    if kind == 44:
        return struct.pack("!BBHI", nexthdr, 0, (frag_offset << 3), 7)
    return struct.pack("!BB", nexthdr, 0) + bytes(6)


def packet(src: str, proto: int = 6, dport: int = 80, flags: int = TCP_ACK,
           vlans: tuple[int, ...] = (), size: int = 0) -> bytes:
    """An Ethernet frame from `src` (v4 or v6) with a TCP/UDP/SCTP/ICMP header,
    zero-padded to `size` bytes if given."""
    payload = l4(proto, dport=dport, flags=flags)
    if ":" in src:
        frame = eth(ETH_P_IPV6, vlans) + ipv6(src, nexthdr=proto, payload=payload)
    else:
        frame = eth(ETH_P_IP, vlans) + ipv4(src, proto=proto, payload=payload)
    return frame + bytes(max(0, size - len(frame)))


def arp(sender_ip: str = "192.0.2.1", target_ip: str = "192.0.2.2") -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, SRC_MAC, socket.inet_aton(sender_ip),
                       bytes(6), socket.inet_aton(target_ip))
    return eth(ETH_P_ARP) + body
