"""`bpfpolicy test --init` for a TracingPolicy: per selector one event that satisfies every
matcher, and per matcher the probes at its edge — the literal, the literal with one byte
changed, a longer path for Prefix, another head and another tail for Postfix, integer
bounds ±1, the listed binary and another. Each event's expectation (selector and actions,
or no match) is the reference model's answer (`tracing.TracingSubject.answer`), so the
file passes on the day it is written and pins the policy's semantics afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..kinds.tracing.spec import HOOK_SECTIONS
from .tracing import HOST_COMMANDS, STR_OPS

# a matcher's values probed (a matchArgs list may hold hundreds of paths)
MAX_VALUES_PER_MATCHER = 3
# the binary a selector without matchBinaries (or with NotIn) is probed with: one the host
# runner can execute for the hook, so the case also runs on the compiled side
HOST_BINARY = {"sys_openat": "/usr/bin/head", "sys_mkdir": "/usr/bin/mkdir", "sys_mkdirat": "/usr/bin/mkdir"}
OTHER_BINARY = "/usr/bin/bpfpolicy-probe-other"  # "another binary": no policy lists it
# string argument given to a hook the host runner drives when no matcher names it
NEUTRAL_PATH = "/tmp/bpfpolicy-probe-neutral"
STRING_TYPES = ("string", "char_buf", "filename", "path", "file", "fd", "linux_binprm")


def _flip(s: str, at: int) -> str:
    """`s` with the byte at `at` changed (a neighbour that must not match Equal)."""
    if not s:
        return "x"
    c = s[at]
    return s[:at] + ("y" if c == "x" else "x") + s[at + 1:] if at != -1 else s[:-1] + ("y" if c == "x" else "x")


def _str_probes(op: str, v: str) -> list[tuple[str, str]]:
    """(value, why) around one string literal of a matcher."""
    base = op[3:] if op.startswith("Not") else op
    out = [(v, f"{op} literal"), (_flip(v, -1), f"{op} literal, last byte changed")]
    if base == "Prefix":
        out.append((v.rstrip("/") + "/probe-longer", f"{op} longer path"))
    if base == "Postfix":
        out += [("/probe-head" + v, f"{op} other head, same tail"),
                (_flip(v, 0), f"{op} literal, first byte changed")]
    return out


def _int(x: Any) -> int | None:
    """An integer matcher value, or None (a network/fd operand: no integer probes)."""
    try:
        return int(str(x), 0)
    except ValueError:
        return None


def _int_probes(op: str, values: list[Any]) -> list[tuple[int, str]]:
    if any(_int(x) is None for v in values for x in str(v).split(":", 1)):
        return []  # the model cannot evaluate it either: the base event already says why
    out: list[tuple[int, str]] = []
    for raw in values[:MAX_VALUES_PER_MATCHER]:
        if op in ("InRange", "NotInRange"):
            lo, hi = (int(x, 0) for x in str(raw).split(":", 1))
            out += [(lo - 1, f"{op} below {raw}"), (lo, f"{op} low end {raw}"),
                    (hi, f"{op} high end {raw}"), (hi + 1, f"{op} above {raw}")]
        elif op == "Mask":
            v = int(str(raw), 0)
            out += [(v, f"Mask all bits {raw}"), (v & -v if v else 1, f"Mask lowest bit of {raw}"), (0, "Mask no bit")]
        else:
            v = int(str(raw), 0)
            out += [(v - 1, f"{op} {raw}-1"), (v, f"{op} {raw}"), (v + 1, f"{op} {raw}+1")]
    return [(v, why) for v, why in out if v >= 0]


def _matching_value(m: dict[str, Any], is_str: bool) -> Any:
    """A value the matcher accepts, for the selector's base event (the model has the last word)."""
    op, vals = str(m["operator"]), [str(x) for x in m.get("values") or []]
    if not vals:
        return NEUTRAL_PATH if is_str else 0
    if is_str or any(_int(x) is None for v in vals for x in v.split(":", 1)):
        return "/probe-unlisted" + vals[0] if op.startswith("Not") else vals[0]
    if op in ("InRange", "NotInRange"):
        lo, hi = (int(x, 0) for x in vals[0].split(":", 1))
        return lo if op == "InRange" else hi + 1
    v = int(vals[0], 0)
    return {"NotEqual": v + 1, "NotIn": max(int(x, 0) for x in vals) + 1, "GT": v + 1, "LT": max(v - 1, 0)}.get(op, v)


def _base_event(hook: str, h: dict[str, Any], sel: dict[str, Any]) -> dict[str, Any]:
    types = {int(a["index"]): str(a.get("type", "")) for a in h.get("args") or []}
    args: dict[str, Any] = {}
    for m in sel.get("matchArgs") or []:
        idx = int(m["index"])
        args.setdefault(str(idx), _matching_value(m, types.get(idx) in STRING_TYPES))
    host = HOST_COMMANDS.get((hook, HOST_BINARY.get(hook, "").rsplit("/", 1)[-1]))
    if host is not None and not args:
        args[str(host[0])] = NEUTRAL_PATH
    ev: dict[str, Any] = {"hook": hook, "args": args, "binary": HOST_BINARY.get(hook, OTHER_BINARY)}
    for m in sel.get("matchBinaries") or []:
        vals = [str(x) for x in m.get("values") or []]
        if vals and str(m["operator"]) in ("In", "Equal", "Prefix", "Postfix"):
            ev["binary"] = vals[0]
    for m in sel.get("matchPIDs") or []:
        ev["pid"] = _matching_value(m, False)
    return ev


def _other_binary(hook: str, m: dict[str, Any]) -> str:
    """A binary the matcher does not list: one the host runner can execute if possible."""
    listed = {str(x) for x in m.get("values") or []}
    runnable = [HOST_BINARY.get(hook, OTHER_BINARY), *(f"/usr/bin/{b}" for h, b in HOST_COMMANDS if h == hook)]
    return next((b for b in runnable if b not in listed), OTHER_BINARY)


def _variants(base: dict[str, Any], h: dict[str, Any], sel: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """(event, why): the base event with one matcher's input moved to each of its edges."""
    types = {int(a["index"]): str(a.get("type", "")) for a in h.get("args") or []}
    for k, m in enumerate(sel.get("matchArgs") or []):
        idx, op, vals = int(m["index"]), str(m["operator"]), list(m.get("values") or [])
        if types.get(idx) in STRING_TYPES or isinstance(base["args"].get(str(idx)), str):
            if op not in STR_OPS:
                continue  # network / file-descriptor operators: the model cannot evaluate them
            probes: list[tuple[Any, str]] = [p for v in vals[:MAX_VALUES_PER_MATCHER] for p in _str_probes(op, str(v))]
        else:
            probes = list(_int_probes(op, vals))
        for value, why in probes:
            yield base | {"args": base["args"] | {str(idx): value}}, f"matchArgs[{k}] arg {idx} {why}"
    for k, m in enumerate(sel.get("matchBinaries") or []):
        op = str(m["operator"])
        for v in [str(x) for x in m.get("values") or []][:MAX_VALUES_PER_MATCHER]:
            yield base | {"binary": v}, f"matchBinaries[{k}] {op} listed binary"
        yield base | {"binary": _other_binary(str(base["hook"]), m)}, f"matchBinaries[{k}] {op} another binary"
    for k, m in enumerate(sel.get("matchPIDs") or []):
        for pid, why in _int_probes(str(m["operator"]), list(m.get("values") or [])):
            yield base | {"pid": pid}, f"matchPIDs[{k}] {why}"


def tracing_cases(subject: Any) -> Iterator[dict[str, Any]]:
    """Raw cases (name + event) for every selector of every hook of the policy."""
    for section in HOOK_SECTIONS:
        for i, h in enumerate(subject.spec.get(section) or []):
            hook = h.get("call") or (f"{h.get('subsystem')}/{h.get('event')}" if h.get("subsystem") else h.get("event"))
            if not hook:
                continue
            sels = h.get("selectors") or [{}]
            for j, sel in enumerate(sels):
                where = f"{section}[{i}] {hook} selectors[{j}]"
                base = _base_event(str(hook), h, sel)
                yield {"name": f"{where}: every matcher holds", "event": base}
                for ev, why in _variants(base, h, sel):
                    yield {"name": f"{where}: {why}", "event": ev}


def tracing_expect(value: str) -> dict[str, Any]:
    """The model's answer text (`selector 0: Post, Sigkill` / `no match`) as an `expect`."""
    if value == "no match":
        return {"selector": "none"}
    sel, actions = value.split(": ", 1)
    return {"selector": int(sel.split()[1]), "actions": actions.split(", ")}
