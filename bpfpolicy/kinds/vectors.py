"""Test vectors every kind shares: one Ethernet frame builder and one `kernel-test.txt` writer.

The frame builder packs Ethernet (with 802.1Q/QinQ tags), IPv4/IPv6 and a TCP, UDP, SCTP or
ICMP header with plain `struct` (compile must not depend on scapy). Checksums are left
zero: the programs never verify them and test runs never deliver. What differs between
the kinds' vectors — which end is the host, IPv4 id/flags, padding after the L4 header —
is a small `FrameStyle` table each kind supplies (`kinds/xdp/packets.py`,
`kinds/netpol/packets.py`); the styles keep every generated `kernel-test.txt` byte-identical
to what the kinds emitted before they shared this builder.

The writer speaks the per-artifact script language of kernel-tests/README.md: object,
map-update, prog-run, live, attach, seccomp, syscall and exec-expect lines.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
TCP_SYN, TCP_ACK = 0x02, 0x10
IPV4_DONT_FRAGMENT = 0x4000
TCP, UDP, SCTP, ICMP, ICMPV6 = 6, 17, 132, 1, 58
HOST_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
X32_SYSCALL_BIT = 0x40000000


class Direction(enum.Enum):
    """Which way a frame travels, relative to the host: it decides the MAC pair."""

    INBOUND = "inbound"    # peer → host: destination is the host's MAC
    OUTBOUND = "outbound"  # host → peer: source is the host's MAC

    def macs(self) -> tuple[bytes, bytes]:
        """(destination, source) MAC addresses."""
        return (HOST_MAC, PEER_MAC) if self is Direction.INBOUND else (PEER_MAC, HOST_MAC)


@dataclass(frozen=True)
class FrameStyle:
    """A kind's overrides of the shared frame layout."""

    direction: Direction
    ipv4_id: int = 0
    ipv4_flags: int = 0          # high bits of the flags/fragment-offset field (DF = 0x4000)
    udp_padding: int = 0         # zero bytes after the UDP header (counted in its length)
    icmp_padding: int = 0        # zero bytes after the 8-byte ICMP header
    icmp_from_ports: bool = False  # ICMP type = dport, echo id = sport, seq 1 (else echo request, id/seq 0)
    sctp_tag: int = 0            # verification tag of the 12-byte SCTP common header
    other_l4_bytes: int = 8      # zero bytes standing in for an L4 header of any other protocol


# --------------------------------------------------------------------------- headers


def ethernet(ethertype: int, direction: Direction = Direction.INBOUND, vlans: tuple[int, ...] = (),
             outer_tpid: int = ETH_P_8021AD) -> bytes:
    """Ethernet header; `vlans` = VLAN ids outermost first (2 tags = QinQ, outer tag `outer_tpid`)."""
    dst, src = direction.macs()
    hdr = dst + src
    for i, vid in enumerate(vlans):
        tpid = outer_tpid if (len(vlans) > 1 and i == 0) else ETH_P_8021Q
        hdr += struct.pack("!HH", tpid, vid & 0xFFF)
    return hdr + struct.pack("!H", ethertype)


def ipv4(src: str, dst: str, proto: int, payload: bytes = b"", *, ident: int = 0, frag_field: int = 0,
         options: bytes = b"") -> bytes:
    """IPv4 header (options padded to 4 bytes) + payload; `frag_field` = flags | offset."""
    opts = options + bytes(-len(options) % 4)
    ihl = 5 + len(opts) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, ihl * 4 + len(payload), ident, frag_field, 64, proto,
                      0, ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return hdr + opts + payload


def ipv6(src: str, dst: str, nexthdr: int, payload: bytes = b"") -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nexthdr, 64, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def ipv6_extension(kind: int, nexthdr: int, frag_offset: int = 0) -> bytes:
    """One IPv6 extension header: 0 hop-by-hop, 43 routing, 60 dest opts (8 bytes each),
    44 fragment (offset in 8-byte units)."""
    if kind == 44:
        return struct.pack("!BBHI", nexthdr, 0, (frag_offset << 3), 7)
    return struct.pack("!BB", nexthdr, 0) + bytes(6)


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


def udp(sport: int, dport: int, padding: int = 0) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + padding, 0) + bytes(padding)


def sctp(sport: int, dport: int, tag: int = 0) -> bytes:
    return struct.pack("!HHII", sport, dport, tag, 0)


def icmp(icmp_type: int, ident: int = 0, seq: int = 0, padding: int = 0) -> bytes:
    return struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + bytes(padding)


def _icmp_for(style: FrameStyle, proto: int, sport: int, dport: int) -> bytes:
    if style.icmp_from_ports:
        return icmp(dport, sport, 1, style.icmp_padding)
    return icmp(8 if proto == ICMP else 128, padding=style.icmp_padding)


def transport(style: FrameStyle, proto: int, sport: int, dport: int, tcp_flags: int) -> bytes:
    """The L4 header of `proto` (ICMP: see FrameStyle.icmp_from_ports)."""
    if proto == TCP:
        return tcp(sport, dport, tcp_flags)
    if proto == UDP:
        return udp(sport, dport, style.udp_padding)
    if proto == SCTP:
        return sctp(sport, dport, style.sctp_tag)
    if proto in (ICMP, ICMPV6):
        return _icmp_for(style, proto, sport, dport)
    return bytes(style.other_l4_bytes)


@dataclass(frozen=True)
class Flow:
    """One packet's addressing: `src:sport → dst:dport` over `proto`."""

    src: str
    dst: str
    proto: int
    sport: int
    dport: int


def frame(style: FrameStyle, flow: Flow, *, tcp_flags: int = TCP_SYN, vlans: tuple[int, ...] = (),
          size: int = 0) -> bytes:
    """Ethernet + IPv4/IPv6 + L4 header for `flow`, zero-padded to `size` bytes if given."""
    l4 = transport(style, flow.proto, flow.sport, flow.dport, tcp_flags)
    if ipaddress.ip_address(flow.src).version == 6:
        data = ethernet(ETH_P_IPV6, style.direction, vlans) + ipv6(flow.src, flow.dst, flow.proto, l4)
    else:
        data = ethernet(ETH_P_IP, style.direction, vlans) + ipv4(
            flow.src, flow.dst, flow.proto, l4, ident=style.ipv4_id, frag_field=style.ipv4_flags)
    return data + bytes(max(0, size - len(data)))


def arp(sender_ip: str, target_ip: str, direction: Direction = Direction.INBOUND) -> bytes:
    """An ARP request from the frame's source MAC."""
    _, src_mac = direction.macs()
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, src_mac, ipaddress.IPv4Address(sender_ip).packed,
                       bytes(6), ipaddress.IPv4Address(target_ip).packed)
    return ethernet(ETH_P_ARP, direction) + body


# --------------------------------------------------------------------------- kernel-test.txt


class KernelTestScript:
    """Builds one artifact's `kernel-test.txt` (kernel-tests/README.md), a directive a line."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def comment(self, text: str) -> KernelTestScript:
        """A whole-line comment (newlines folded: a comment is one line of the script)."""
        self._lines.append(f"# {text}".replace("\n", " "))
        return self

    def object(self, file: str = "prog.bpf.o") -> KernelTestScript:
        self._lines.append(f"object {file}")
        return self

    def map_update(self, map_name: str, key: bytes, value: bytes) -> KernelTestScript:
        self._lines.append(f"map-update {map_name} {key.hex()} {value.hex()}")
        return self

    def prog_run(self, prog: str, expect_retval: int, data: bytes) -> KernelTestScript:
        self._lines.append(f"prog-run {prog} {expect_retval} {data.hex()}")
        return self

    def live(self, prog: str, expect_retval: int, data: bytes, direction: str = "") -> KernelTestScript:
        """The prog-run vector as a real frame over a veth pair through the attached program."""
        self._lines.append(f"live {prog} {expect_retval} {data.hex()} {direction}".rstrip())
        return self

    def attach(self, prog: str, target: str = "auto") -> KernelTestScript:
        self._lines.append(f"attach {prog} {target}")
        return self

    def seccomp(self, file: str = "filter.bin") -> KernelTestScript:
        self._lines.append(f"seccomp {file}")
        return self

    def syscall(self, nr: int, expect: str, args: tuple[int, ...] = ()) -> KernelTestScript:
        """`syscall` line: x32 numbers and arguments above 9 in hex, the rest decimal."""
        number = f"{nr:#x}" if nr >= X32_SYSCALL_BIT else str(nr)
        argtxt = " ".join(f"{a:#x}" if a > 9 else str(a) for a in args)
        self._lines.append(f"syscall {number} {expect} {argtxt}".rstrip())
        return self

    def exec_expect(self, expect: str, command: str) -> KernelTestScript:
        self._lines.append(f"exec-expect {expect} {command}".rstrip())
        return self

    def raw(self, directive: str) -> KernelTestScript:
        """A directive given verbatim (a policy's own `exec-expect …` annotation line)."""
        self._lines.append(directive)
        return self

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
