"""Decode NetworkPolicy verdict events (ring buffer `np_events`, layout netpol_event_v1).

Pure: the controller reads raw records from the ring buffer and hands them here with the
artifact's manifest, so an event names the endpoint, policy and rule that decided it.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from .lower import ACTION_NAMES

EVENT = struct.Struct("<QIBBBBHH16s16sI")  # 56 bytes, see codegen/templates/network_policy.bpf.c.j2
PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}


def decode(raw: bytes, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """One event → {action, direction, proto, local, lport, remote, rport, slot, rule, policy}."""
    ts, slot, action, d, proto, fam, lport, rport, la, ra, _ = EVENT.unpack_from(raw)
    size = 4 if fam == 4 else 16
    out: dict[str, Any] = {
        "ts_ns": ts, "slot": slot,
        "action": ACTION_NAMES[action] if action < len(ACTION_NAMES) else str(action),
        "audited": action in (4, 5),
        "direction": "ingress" if d == 0 else "egress",
        "proto": PROTO_NAMES.get(proto, str(proto)), "lport": lport, "rport": rport,
        "local": str(ipaddress.ip_address(la[:size])), "remote": str(ipaddress.ip_address(ra[:size])),
    }
    rules = ((manifest or {}).get("counters") or {}).get("rules") or []
    if slot < len(rules):
        out["rule"] = rules[slot].get("name")
        out["policy"] = rules[slot].get("policy")
        out["where"] = rules[slot].get("where")
    if manifest:
        out["endpoint"] = (manifest.get("metadata") or {}).get("endpoint")
    return out
