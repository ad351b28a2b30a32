"""Network operator values (Tetragon's SAddr/DAddr/SPort/DPort/Protocol/Family/State on
sock, skb, sockaddr and socket arguments): parsing, shared by the checker and the
lowering, and the terms the matcher templates compile to."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

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


def addr_term(field: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> dict[str, Any]:
    """(word index, mask, value) per nonzero mask word, as the BPF program loads them."""
    words, masks = _u32s(net.network_address.packed), _u32s(net.netmask.packed)
    triples = tuple((i, m, w) for i, (w, m) in enumerate(zip(words, masks, strict=True))
                    if m or net.version == 4)
    return {"form": "addr", "field": field, "v4": net.version == 4, "words": triples}


def terms(op: str, values: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """The terms (any of which matches) of one network matcher, and whether it is negated;
    `codegen/templates/tracing/match.j2` renders them over a `struct tp_sockinfo`."""
    if op in ADDR_OPS:
        field, negate = ADDR_OPS[op]
        return [addr_term(field, network(v)) for v in values], negate  # type: ignore[arg-type]
    if op in PORT_OPS:
        field, negate = PORT_OPS[op]
        out = []
        for v in values:
            lo, hi = port_range(v)  # type: ignore[misc]
            out.append({"form": "port" if lo == hi else "range", "field": field, "lo": lo, "hi": hi})
        return out, negate
    if op in PRIV_OPS:
        field, negate = PRIV_OPS[op]
        return [{"form": "priv", "field": field}], negate
    return [{"form": "named", "field": FIELD[op], "lo": named_value(op, v)} for v in values], False
