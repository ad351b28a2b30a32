"""Filter first, then fill: plan one program so the selector runs on the cheapest data.

The kernel runs a hooked program on every call of the hook (1e6 openat = 1e6 runs), and
almost every call matches nothing. So the generated program (1) tests PID, namespace and
capability matchers before it reads any argument, (2) compares a plain `char *` argument
by reading only as many bytes as the longest Prefix/Equal literal needs (Postfix reads
the whole string, up to MAX_MATCH_STRING, to compare the real tail), (3) walks paths and
the executable only for the matchers that need them, and (4) builds the event — ktime,
pid, uid, comm, captured arguments — only when a selector that posts has matched.
"""

from __future__ import annotations

from dataclasses import replace

from .ir import Capture, IntMatch, Matcher, Program, StringMatch

# PATH_MAX: the longest string the program compares (a user path the kernel accepts is at
# most PATH_MAX - 1 bytes). A string that fills the whole buffer cannot be compared to
# its end; the matcher then fails closed (counts as a match, the event says `truncated`).
MAX_MATCH_STRING = 4096
# Bytes beyond the longest Prefix/Equal literal: one to tell "exactly as long" from
# "longer", one for the NUL bpf_probe_read_*_str writes.
EQUAL_SLACK = 2

__all__ = ["EQUAL_SLACK", "MAX_MATCH_STRING", "plan"]


def direct(c: Capture) -> bool:
    """A capture whose raw value the matcher can read itself (no resolve, no walk)."""
    return c.resolve is None and c.how in ("int", "str") and c.read.source != "none"


def plan(p: Program, literal_len: dict[str, tuple[str, int]]) -> None:
    """Rewrite p's selectors for filter-first and split its captures into early (a
    matcher compares the event copy: paths, sockets, data_loc strings) and late (filled
    only for a posted event). `literal_len`: helper name -> (operator, byte length)."""
    by_slot = {c.slot: c for c in p.captures}
    early: set[int] = set()
    for s in p.selectors:
        out = []
        for m in s.matchers:
            m = _direct(m, by_slot, literal_len)
            slot = _arg_slot(m)
            if slot is not None and _is_copy(m):
                early.add(slot)
            out.append(m)
        s.matchers = sorted(out, key=_cost)
    _share_reads(p)
    p.early = [c for c in p.captures if c.slot in early]
    p.late = [c for c in p.captures if c.slot not in early]


def _share_reads(p: Program) -> None:
    """One user/kernel read per argument per run: every direct matcher on an argument
    reads the same bytes (the largest need of any of them), so the generated program
    reads it once, at the first matcher that runs, and later matchers and selectors
    compare the same buffer. Each read is a helper call (~100 ns on the bench host, most
    of a miss), so three selectors on one path cost one read, not three."""
    need: dict[int, int] = {}
    for s in p.selectors:
        for m in s.matchers:
            if isinstance(m, StringMatch) and m.direct is not None:
                need[m.slot] = max(need.get(m.slot, 0), m.need)
    for s in p.selectors:
        s.matchers = [replace(m, need=need[m.slot]) if isinstance(m, StringMatch) and m.direct is not None
                      else m for m in s.matchers]


def _direct(m: Matcher, by_slot: dict[int, Capture], literal_len: dict[str, tuple[str, int]]) -> Matcher:
    if isinstance(m, IntMatch) and m.value.source == "arg":
        c = by_slot.get(m.value.slot)
        if c is not None and direct(c) and c.how == "int":
            return replace(m, value=replace(m.value, direct=c))
    if isinstance(m, StringMatch):
        m = replace(m, tail=any(literal_len[n][0] == "Postfix" for n in m.literals))
    if isinstance(m, StringMatch) and m.buffer == "arg":
        c = by_slot.get(m.slot)
        if c is not None and direct(c) and c.how == "str":
            ops = [literal_len[n] for n in m.literals]
            if any(op == "Postfix" for op, _ in ops):
                need = MAX_MATCH_STRING
            else:
                need = min(MAX_MATCH_STRING, max((n for _, n in ops), default=0) + EQUAL_SLACK)
            return replace(m, direct=c, need=need)
    return m


def _arg_slot(m: Matcher) -> int | None:
    if isinstance(m, IntMatch):
        return m.value.slot if m.value.source == "arg" else None
    if isinstance(m, StringMatch):
        return m.slot if m.buffer == "arg" else None
    return getattr(m, "slot", None)  # NetMatch


def _is_copy(m: Matcher) -> bool:
    """True when the matcher compares the event's copy of the argument."""
    if isinstance(m, IntMatch):
        return m.value.direct is None
    if isinstance(m, StringMatch):
        return m.direct is None
    return True


def _cost(m: Matcher) -> int:
    """Rough cost rank: registers and task fields, then a direct argument read, then a
    full string / path walk, then the executable's path walk."""
    if isinstance(m, IntMatch):
        return 0 if m.value.source != "arg" or m.value.direct is not None else 2
    if m.node == "caps":
        return 0
    if isinstance(m, StringMatch):
        if m.buffer == "binary":
            return 5
        if m.buffer == "parent":
            return 6
        if m.direct is not None:
            return 3 if m.need < MAX_MATCH_STRING else 4
        return 2
    if m.node == "pid_tree":
        return 4
    return 2
