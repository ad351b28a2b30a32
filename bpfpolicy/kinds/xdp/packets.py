"""XDP's frames for test vectors (kernel-test.txt, BPF_PROG_TEST_RUN tests and bench/xdp.py):
the shared builder in `kinds/vectors.py` with XDP's overrides — frames arrive at the host
from a peer, IPv4 id 1, an echo request for ICMP, padding after UDP/ICMP."""

from __future__ import annotations

from .. import vectors as v
from ..vectors import ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, TCP_ACK, TCP_SYN

__all__ = ["ETH_P_8021AD", "ETH_P_8021Q", "ETH_P_ARP", "ETH_P_IP", "ETH_P_IPV6", "TCP_ACK", "TCP_SYN",
           "STYLE", "arp", "eth", "ipv4", "ipv6", "l4", "packet", "v6_ext"]

STYLE = v.FrameStyle(direction=v.Direction.INBOUND, ipv4_id=1, udp_padding=18, icmp_padding=16,
                     other_l4_bytes=16)
LOCAL_V4, LOCAL_V6, SPORT = "192.0.2.200", "2001:db8:ffff::200", 40000


def eth(ethertype: int, vlans: tuple[int, ...] = (), outer_tpid: int = ETH_P_8021AD) -> bytes:
    """Ethernet header of a frame arriving at the host; `vlans` outermost first (2 = QinQ)."""
    return v.ethernet(ethertype, STYLE.direction, vlans, outer_tpid)


def l4(proto: int, sport: int = SPORT, dport: int = 80, flags: int = TCP_ACK) -> bytes:
    return v.transport(STYLE, proto, sport, dport, flags)


def ipv4(src: str, dst: str = LOCAL_V4, proto: int = 6, payload: bytes = b"",
         options: bytes = b"", frag_offset: int = 0) -> bytes:
    return v.ipv4(src, dst, proto, payload, ident=STYLE.ipv4_id, frag_field=frag_offset & 0x1FFF, options=options)


def ipv6(src: str, dst: str = LOCAL_V6, nexthdr: int = 6, payload: bytes = b"") -> bytes:
    return v.ipv6(src, dst, nexthdr, payload)


v6_ext = v.ipv6_extension


def packet(src: str, proto: int = 6, dport: int = 80, flags: int = TCP_ACK,
           vlans: tuple[int, ...] = (), size: int = 0) -> bytes:
    """An Ethernet frame from `src` (v4 or v6) with a TCP/UDP/SCTP/ICMP header,
    zero-padded to `size` bytes if given."""
    dst = LOCAL_V6 if ":" in src else LOCAL_V4
    return v.frame(STYLE, v.Flow(src, dst, proto, SPORT, dport), tcp_flags=flags, vlans=vlans, size=size)


def arp(sender_ip: str = "192.0.2.1", target_ip: str = "192.0.2.2") -> bytes:
    return v.arp(sender_ip, target_ip, STYLE.direction)
