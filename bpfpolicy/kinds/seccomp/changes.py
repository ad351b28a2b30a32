"""`plan`'s rule-level lines for a SeccompProfile document: `syscalls[3] +2 names
(openat2, statx)`, `syscalls[1] action SCMP_ACT_ALLOW → SCMP_ACT_ERRNO`,
`defaultAction changed (…)`."""

from __future__ import annotations

from typing import Any

from ..base import list_changes, set_delta, spec_of


def describe_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    o, n = spec_of(old), spec_of(new)
    out = list_changes("syscalls", o.get("syscalls"), n.get("syscalls"), inner=_rule_words)
    for key in sorted((set(o) | set(n)) - {"syscalls"}):
        if o.get(key) != n.get(key):
            out.append(f"{key} changed ({o.get(key, 'unset')} → {n.get(key, 'unset')})")
    return out


def _rule_words(old: Any, new: Any) -> list[str]:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    words = set_delta("name", old.get("names"), new.get("names"))
    for key in sorted((set(old) | set(new)) - {"names"}):
        if old.get(key) != new.get(key):
            words.append(f"{key} {old.get(key, 'unset')} → {new.get(key, 'unset')}"
                         if key in ("action", "errnoRet") else f"{key} changed")
    return words
