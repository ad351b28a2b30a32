"""Raw Ethernet frames for BPF_PROG_TEST_RUN vectors (kernel-test.txt, tests, bench).

Checksums are left zero: the programs never verify them and test runs never deliver.
"""

from __future__ import annotations

import ipaddress
import struct

ETH_SRC = bytes.fromhex("020000000001")
ETH_DST = bytes.fromhex("020000000002")


def l4_header(proto: int, sport: int, dport: int) -> bytes:
    if proto == 6:
        return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    if proto in (17, 132):
        return struct.pack(">HHHH", sport, dport, 8, 0) + (b"\0" * 4 if proto == 132 else b"")
    if proto in (1, 58):  # dport = ICMP type, sport = echo identifier
        return struct.pack(">BBHHH", dport, 0, 0, sport, 1)
    return b"\0" * 8


def frame(src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    """Ethernet + IPv4/IPv6 + L4 header, for a packet `src:sport -> dst:dport`."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    l4 = l4_header(proto, sport, dport)
    if s.version == 4:
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, s.packed, d.packed)
        return ETH_DST + ETH_SRC + b"\x08\x00" + ip + l4
    ip6 = struct.pack(">IHBB16s16s", 6 << 28, len(l4), proto, 64, s.packed, d.packed)
    return ETH_DST + ETH_SRC + b"\x86\xdd" + ip6 + l4
