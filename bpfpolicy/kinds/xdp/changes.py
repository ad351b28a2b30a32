"""`plan`'s rule-level lines for an XDPBlocklist document: rules named by their `name`
(`deny[bogons] +1 source (203.0.113.7/32)`), so a reordering is not a change. The
contents of `sourceFiles` lists are not in the document; their edits show as the
plan's map delta."""

from __future__ import annotations

from typing import Any

from ..base import set_delta, spec_of

RULE_LISTS = ("deny", "allow")
LIST_FIELDS = (("sources", "source"), ("sourceFiles", "source file"), ("protocols", "protocol"),
               ("ports", "port"))


def describe_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    o, n = spec_of(old), spec_of(new)
    out = set_delta("interface", _ifaces(o), _ifaces(n))
    out = [f"interfaces {x}" for x in out]
    for field in RULE_LISTS:
        out += _rules(field, o.get(field), n.get(field))
    for key in sorted((set(o) | set(n)) - set(RULE_LISTS) - {"interfaces"}):
        if o.get(key) != n.get(key):
            out.append(f"{key} changed ({_short(o.get(key))} → {_short(n.get(key))})")
    return out


def _ifaces(spec: dict[str, Any]) -> list[str]:
    return [f"{i.get('name')}@{i.get('netns')}" if i.get("netns") else str(i.get("name"))
            for i in spec.get("interfaces") or [] if isinstance(i, dict)]


def _rules(field: str, old: Any, new: Any) -> list[str]:
    """Rules matched by name (index when unnamed)."""
    def by_name(rules: Any) -> dict[str, dict[str, Any]]:
        rules = rules if isinstance(rules, list) else []
        return {str(r.get("name", i)): r for i, r in enumerate(rules) if isinstance(r, dict)}

    o, n = by_name(old), by_name(new)
    out = []
    for name in [k for k in o if k not in n]:
        out.append(f"{field}[{name}] removed")
    for name, rule in n.items():
        if name not in o:
            out.append(f"{field}[{name}] added")
        elif o[name] != rule:
            words = []
            for key, noun in LIST_FIELDS:
                words += set_delta(noun, o[name].get(key), rule.get(key))
            words += [f"{k} changed" for k in sorted(set(o[name]) | set(rule))
                      if k not in dict(LIST_FIELDS) and o[name].get(k) != rule.get(k)]
            out.append(f"{field}[{name}] " + (", ".join(words) if words else "changed"))
    return out


def _short(v: Any) -> str:
    s = "unset" if v is None else str(v)
    return s if len(s) <= 40 else s[:39] + "…"
