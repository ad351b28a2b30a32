"""`plan`'s rule-level lines for a NetworkPolicy document: `ingress[2] added`,
`egress[0] toCIDR +1 entry (10.2.0.0/16)`, `endpointSelector changed`."""

from __future__ import annotations

from typing import Any

from ..base import list_changes, set_delta, spec_of

RULE_LISTS = ("ingress", "egress", "ingressDeny", "egressDeny")


def describe_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    o, n = spec_of(old), spec_of(new)
    out: list[str] = []
    for field in RULE_LISTS:
        out += list_changes(field, o.get(field), n.get(field), inner=_rule_words)
    for key in sorted((set(o) | set(n)) - set(RULE_LISTS)):
        if o.get(key) != n.get(key):
            out.append(f"{key} changed")
    return out


def _rule_words(old: Any, new: Any) -> list[str]:
    """Peer lists of scalars (fromCIDR, toEntities, …) as +N/−M; anything else `changed`."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    words = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        scalars = all(not isinstance(x, (dict, list)) for x in (a or []) + (b or [])) \
            if isinstance(a or [], list) and isinstance(b or [], list) else False
        words += [f"{key} {w}" for w in set_delta("entry", a, b)] if scalars else [f"{key} changed"]
    return words
