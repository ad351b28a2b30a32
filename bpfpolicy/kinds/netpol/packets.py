"""NetworkPolicy's frames for BPF_PROG_TEST_RUN vectors (kernel-test.txt, tests, bench): the
shared builder in `kinds/vectors.py` with the kind's overrides — every frame carries the
host's MAC as source whichever way it flows, IPv4 with DF set, TCP SYN, and ICMP type/id
taken from the ports."""

from __future__ import annotations

from .. import vectors as v

STYLE = v.FrameStyle(direction=v.Direction.OUTBOUND, ipv4_flags=v.IPV4_DONT_FRAGMENT, icmp_from_ports=True,
                     sctp_tag=0x00080000)


def frame(src: str, dst: str, proto: int, sport: int, dport: int, tcp_flags: int = v.TCP_SYN) -> bytes:
    """Ethernet + IPv4/IPv6 + L4 header, for a packet `src:sport -> dst:dport`
    (ICMP: dport = ICMP type, sport = echo identifier; TCP: a SYN unless told)."""
    return v.frame(STYLE, v.Flow(src, dst, proto, sport, dport), tcp_flags=tcp_flags)
