"""Network operator values (Tetragon's SAddr/DAddr/SPort/DPort/Protocol/Family/State on
sock, skb, sockaddr and socket arguments): parsing, shared by the checker and the
lowering, and the straight-line C expressions they compile to."""

from __future__ import annotations

import ipaddress
import struct

FAMILIES = {"AF_UNIX": 1, "AF_LOCAL": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16,
            "AF_PACKET": 17}
PROTOCOLS = {"IPPROTO_IP": 0, "IPPROTO_ICMP": 1, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17,
             "IPPROTO_IPV6": 41, "IPPROTO_ICMPV6": 58, "IPPROTO_SCTP": 132, "IPPROTO_RAW": 255}
TCP_STATES = {"TCP_ESTABLISHED": 1, "TCP_SYN_SENT": 2, "TCP_SYN_RECV": 3, "TCP_FIN_WAIT1": 4,
              "TCP_FIN_WAIT2": 5, "TCP_TIME_WAIT": 6, "TCP_CLOSE": 7, "TCP_CLOSE_WAIT": 8,
              "TCP_LAST_ACK": 9, "TCP_LISTEN": 10, "TCP_CLOSING": 11, "TCP_NEW_SYN_RECV": 12}
ADDR_OPS = {"SAddr": ("saddr", False), "DAddr": ("daddr", False),
            "NotSAddr": ("saddr", True), "NotDAddr": ("daddr", True)}
PORT_OPS = {"SPort": ("sport", False), "DPort": ("dport", False),
            "NotSPort": ("sport", True), "NotDPort": ("dport", True)}
PRIV_OPS = {"SPortPriv": ("sport", False), "NotSportPriv": ("sport", True),
            "DPortPriv": ("dport", False), "NotDPortPriv": ("dport", True)}
NAMED = {"Family": FAMILIES, "Protocol": PROTOCOLS, "State": TCP_STATES}
FIELD = {"Family": "family", "Protocol": "protocol", "State": "state"}


def named_value(op: str, value: str) -> int | None:
    table = NAMED[op]
    if str(value).upper() in table:
        return table[str(value).upper()]
    try:
        return int(str(value), 0)
    except ValueError:
        return None


def port_range(value: str) -> tuple[int, int] | None:
    lo, sep, hi = str(value).partition(":")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        return None
    return (a, b) if 0 <= a <= b <= 65535 else None


def network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        return None


def value_error(op: str, value: str) -> str | None:
    """Why `value` is not valid for network operator `op`, or None."""
    if op in ADDR_OPS:
        return None if network(value) else f'"{value}" is not an IP address or CIDR'
    if op in PORT_OPS:
        return None if port_range(value) else f'"{value}" is not a port or MIN:MAX range (0..65535)'
    if op in NAMED and named_value(op, value) is None:
        names = ", ".join(list(NAMED[op])[:6])
        return f'"{value}" is not a number or a known {op.lower()} ({names}, ...)'
    return None


def _u32s(packed: bytes) -> list[int]:
    """Network-order bytes as the little-endian u32 words the BPF program loads."""
    return list(struct.unpack(f"<{len(packed) // 4}I", packed))


def addr_expr(si: str, field: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    if net.version == 4:
        (addr,), (mask,) = _u32s(net.network_address.packed), _u32s(net.netmask.packed)
        return f"({si}->family == 2 && ({si}->{field}[0] & {mask:#x}) == {addr:#x})"
    words, masks = _u32s(net.network_address.packed), _u32s(net.netmask.packed)
    terms = [f"({si}->{field}[{i}] & {m:#x}) == {w:#x}" for i, (w, m) in enumerate(zip(words, masks, strict=True)) if m]
    return f"({si}->family == 10" + "".join(f" && {t}" for t in terms) + ")"


def expr(si: str, op: str, values: list[str]) -> str:
    """The C condition for one network matcher over `const struct tp_sockinfo *si`."""
    if op in ADDR_OPS:
        field, negate = ADDR_OPS[op]
        anyof = " || ".join(addr_expr(si, field, network(v)) for v in values)  # type: ignore[arg-type]
    elif op in PORT_OPS:
        field, negate = PORT_OPS[op]
        terms = []
        for v in values:
            lo, hi = port_range(v)  # type: ignore[misc]
            terms.append(f"{si}->{field} == {lo}" if lo == hi else f"({si}->{field} >= {lo} && {si}->{field} <= {hi})")
        anyof = " || ".join(terms)
    elif op in PRIV_OPS:
        field, negate = PRIV_OPS[op]
        anyof = f"{si}->{field} < 1024"
    else:
        negate = False
        anyof = " || ".join(f"{si}->{FIELD[op]} == {named_value(op, v)}" for v in values)
    return f"!({anyof})" if negate else f"({anyof})"
