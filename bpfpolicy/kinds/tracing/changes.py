"""`plan`'s rule-level lines for a TracingPolicy document, per hook and selector:
`kprobes[0].selectors[1] changed`, `tracepoints[2] added`, `kprobes[0].args changed`."""

from __future__ import annotations

from typing import Any

from ..base import list_changes, spec_of

HOOK_LISTS = ("kprobes", "tracepoints", "uprobes", "lsmhooks", "usdts")


def describe_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    o, n = spec_of(old), spec_of(new)
    out: list[str] = []
    for field in sorted(set(HOOK_LISTS) & (set(o) | set(n))):
        out += _hooks(field, o.get(field), n.get(field))
    for key in sorted((set(o) | set(n)) - set(HOOK_LISTS)):
        if o.get(key) != n.get(key):
            out.append(f"{key} changed")
    return out


def _hooks(field: str, old: Any, new: Any) -> list[str]:
    old = old if isinstance(old, list) else []
    new = new if isinstance(new, list) else []
    out = []
    for i in range(max(len(old), len(new))):
        if i >= len(old):
            out.append(f"{field}[{i}] added")
        elif i >= len(new):
            out.append(f"{field}[{i}] removed")
        elif old[i] != new[i] and isinstance(old[i], dict) and isinstance(new[i], dict):
            a, b = old[i], new[i]
            for key in sorted(set(a) | set(b)):
                if key == "selectors":
                    out += list_changes(f"{field}[{i}].selectors", a.get(key), b.get(key))
                elif a.get(key) != b.get(key):
                    out.append(f"{field}[{i}].{key} changed")
        elif old[i] != new[i]:
            out.append(f"{field}[{i}] changed")
    return out
