"""Incremental lowering: a few changed /32s patch the previous lowering (docs/xdp.md).

A one-line edit to a 1M-line list used to re-lower everything (~0.5 s: sorting 1M
addresses, rebuilding 16M tbl24 slots and every bucket). Here the previous lowering of
the same policy (same rule shape) is kept in memory — `bpfpolicy watch` is one
long-running process — and a change that only adds/removes IPv4 /32 entries rewrites
just the affected records: the tbl24 group of each touched /24 (its "longer entries"
flag) and the v4_buckets bucket each address hashes to. Everything else falls back to
`lower()`, whose result is the reference: a patched lowering is byte-identical to it
(tests/kinds/xdp/test_xdp_incremental.py).

Fallbacks (full lowering): first compile, rule shape changed, IPv6 or non-/32 changes,
/25-/31 prefixes present, more than PATCH_MAX changed entries, a bucket that spills
(> 8 addresses), the bucket count or the set of distinct rule masks changing. Each
fallback is logged (logger `bpfpolicy.kinds.xdp`, with the reason) so a slow cycle says
why it was slow.

A patched lowering also says *which* records changed (`MapPatch` per map: the previous
contents object, the records written, the keys removed); `compile_model` hands them to
the controller in `Artifact.patches`, which writes just those records when the previous
contents are exactly what it applied (docs/controller.md). An edit that changes nothing
(a comment, a duplicate line) returns the previous lowering's contents objects as they
are, so nothing downstream re-hashes or re-diffs them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...artifact import MapPatch
from .lower import (
    BUCKET_SLOTS,
    TBL24_GROUP,
    TBL24_MORE,
    Lowered,
    Rule,
    bucket_of,
    capacity,
    lower,
)

# beyond this many changed /32s the per-address scans cost more than a full lowering
PATCH_MAX = 64
# policies whose last lowering is kept (each holds its 1M-entry arrays: ~20 MB)
STATE_MAX = 8


@dataclass
class _State:
    shape: tuple[Any, ...]
    rules: list[Rule]
    low: Lowered
    t24: np.ndarray | None  # per-/24 masks of prefixes <= /24
    ea: np.ndarray  # sorted /32s
    em: np.ndarray  # their masks
    others: np.ndarray  # masks used outside v4 /32s (tbl24, IPv6): they keep their ids
    bk: np.ndarray | None = None  # v4_buckets index of each of `ea` (built at the first patch)
    pending: Callable[[], Lowered] | None = None  # splices `low`'s records (a deferred patch)


@dataclass
class Incremental:
    """What `lower_incremental` returns. `patches`: the records that changed since the
    policy's previous lowering ({}: none did), None after a full lowering. With
    `defer=True` the patched maps' records are not spliced yet: `low` still holds the
    previous records for the maps in `pending` (map -> its record count after the patch),
    and `finish()` returns the complete lowering (byte-identical to `lower()`)."""

    low: Lowered
    patches: dict[str, MapPatch] | None
    pending: dict[str, int] = field(default_factory=dict)
    finish: Callable[[], Lowered] | None = None

    def complete(self) -> Lowered:
        return self.finish() if self.finish is not None else self.low


_states: dict[str, _State] = {}
log = logging.getLogger("bpfpolicy.kinds.xdp")


def _shape(rules: list[Rule], rate: dict[str, int] | None) -> tuple[Any, ...]:
    return (tuple((r.name, r.action, tuple(sorted(r.protocols or ())), r.protocols is None,
                   tuple(r.ports or ()), r.ports is None, r.path) for r in rules), tuple(sorted((rate or {}).items())))


def lower_incremental(key: str, rules: list[Rule], rate: dict[str, int] | None, *,
                      defer: bool = False) -> Incremental:
    """The lowering of `rules` for the policy `key`, patched from its previous one when
    only a few IPv4 /32s changed (see `Incremental`)."""
    shape = _shape(rules, rate)
    st = _states.get(key)
    if st is not None and st.pending is not None:
        st.pending()  # a deferred patch nobody finished: splice it first
    why = "first lowering of this policy in this process"
    if st is not None and st.shape == shape:
        patched = _patch(st, rules)
        if not isinstance(patched, str):
            if not defer and patched.finish is not None:
                return Incremental(patched.finish(), patched.patches)
            return patched
        why = patched
    elif st is not None:
        why = "rule shape changed"
    log.info("%s: full lowering (%s)", key, why)
    keep: dict[str, Any] = {}
    low = lower(rules, rate, keep)
    v4 = keep["v4"]
    if low.features["v4"] == "dir24" and v4.exact_addr is not None:
        if len(_states) >= STATE_MAX:
            _states.clear()
        others = np.unique(np.concatenate([p.astype(np.uint64) for p in keep["others"]] or [np.zeros(0, np.uint64)]))
        _states[key] = _State(shape, rules, low, v4.tbl24_slots, v4.exact_addr, v4.exact_mask, others)
    else:
        _states.pop(key, None)
    return Incremental(low, None)


def _diff(old: tuple[np.ndarray, ...], new: tuple[np.ndarray, ...]) -> tuple[int, int, int]:
    """Positional diff of parallel arrays (entry i = (old[0][i], old[1][i], …)):
    (prefix, old_end, new_end) of the differing middle. Compared column by column, no
    combined keys built (1M entries: two 4 MB compares, not three 8 MB arrays)."""
    lo, ln = len(old[0]), len(new[0])
    m = min(lo, ln)
    head = np.zeros(m, dtype=bool)
    for a, b in zip(old, new, strict=True):
        head |= a[:m] != b[:m]
    p = int(np.argmax(head)) if head.any() else m
    tail = m - p
    s = tail
    if tail:
        back = np.zeros(tail, dtype=bool)
        for a, b in zip(old, new, strict=True):
            back |= a[lo - tail:][::-1] != b[ln - tail:][::-1]
        s = int(np.argmax(back)) if back.any() else tail
    return p, lo - s, ln - s


def _changed(st: _State, rules: list[Rule]) -> set[int] | str:
    """The /32 addresses whose membership may have changed, or why it is not patchable."""
    touched: set[int] = set()
    for old, new in zip(st.rules, rules, strict=True):
        o, n = old.sources, new.sources
        if o is n:
            continue
        if not (np.array_equal(o.v6_hi, n.v6_hi) and np.array_equal(o.v6_lo, n.v6_lo)
                and np.array_equal(o.v6_plen, n.v6_plen)):
            return "IPv6 entries changed"
        p, oe, ne = _diff((o.v4_addr, o.v4_plen), (n.v4_addr, n.v4_plen))
        if (oe - p) + (ne - p) > PATCH_MAX:
            return f"more than {PATCH_MAX} entries changed"
        if np.any(o.v4_plen[p:oe] != 32) or np.any(n.v4_plen[p:ne] != 32):
            return "a changed entry is a prefix, not a /32"
        touched.update(int(x) for x in np.concatenate([o.v4_addr[p:oe], n.v4_addr[p:ne]]))
        if len(touched) > PATCH_MAX:
            return f"more than {PATCH_MAX} entries changed"
    return touched


Step = tuple[int, bool, bytes | None]  # (record position in the base, key present there, new record or None)


def _plan_upsert(records: bytes, vsize: int, changes: dict[int, bytes | None]
                 ) -> tuple[list[Step], bytes, bytes, int]:
    """`changes` (array index -> new value, or None to drop the record) against ARRAY-map
    records sorted by little-endian u32 key bytes: (splice steps, the records written,
    the keys dropped that were present, the record count after)."""
    n = 4 + vsize
    keys = np.frombuffer(records, dtype=">u4")[::n // 4]
    order = sorted(changes, key=lambda i: int.from_bytes(i.to_bytes(4, "little"), "big"))
    wanted = np.array([int.from_bytes(i.to_bytes(4, "little"), "big") for i in order], dtype=np.uint32)
    # one search for every change (a strided big-endian view would be converted per call)
    at = np.searchsorted(keys, wanted) if len(keys) else np.zeros(len(order), dtype=np.int64)
    steps: list[Step] = []
    written: list[bytes] = []
    dropped: list[bytes] = []
    count = len(keys)
    for idx, want, pos in zip(order, wanted, at, strict=True):
        kb = idx.to_bytes(4, "little")
        pos = int(pos)
        present = pos < len(keys) and int(keys[pos]) == int(want)
        value = changes[idx]
        rec = kb + value if value is not None else None
        if rec is not None:
            written.append(rec)
            count += 0 if present else 1
        elif present:
            dropped.append(kb)
            count -= 1
        steps.append((pos, present, rec))
    return steps, b"".join(written), b"".join(dropped), count


def _splice(records: bytes, vsize: int, steps: list[Step]) -> bytes:
    """The records with the planned steps applied (one copy: memoryview slices, one join)."""
    n = 4 + vsize
    view = memoryview(records)
    parts: list[bytes | memoryview] = []
    at = 0
    for pos, present, rec in steps:
        parts.append(view[at * n:pos * n])
        if rec is not None:
            parts.append(rec)
        at = pos + 1 if present else pos
    parts.append(view[at * n:])
    return b"".join(parts)


def _upsert(records: bytes, vsize: int, changes: dict[int, bytes | None]) -> tuple[bytes, bytes, bytes]:
    """(new records, records written, keys dropped): `_plan_upsert` then `_splice`."""
    steps, written, dropped, _ = _plan_upsert(records, vsize, changes)
    return _splice(records, vsize, steps), written, dropped


def _patch(st: _State, rules: list[Rule]) -> Incremental | str:
    """The patched lowering (splice deferred to `finish`) and its map patches, or why a
    full lowering is needed."""
    low = st.low
    if low.features["v4"] != "dir24" or "v4_buckets" not in low.maps:
        return "no IPv4 DIR-24-8 layout to patch"
    touched = _changed(st, rules)
    if isinstance(touched, str):
        return touched
    if not touched:  # nothing that reaches a map changed: same contents objects
        new = dataclasses.replace(low, rules=rules)
        st.rules, st.low = rules, new
        return Incremental(new, {})
    nbuckets = low.maps["v4_buckets"].max_entries
    bits = nbuckets.bit_length() - 1
    if st.bk is None:
        st.bk = bucket_of(st.ea, bits).astype(np.uint32)
    mdt = st.em.dtype
    uniq = low.ruleset_masks[1:]
    ea, em, bk = st.ea, st.em, st.bk
    lost: list[int] = []
    for a in sorted(touched):
        mask = 0
        for r in rules:
            s = r.sources
            if np.any((s.v4_addr == a) & (s.v4_plen == 32)):
                mask |= r.bit
        pos = int(np.searchsorted(ea, a))
        present = pos < len(ea) and int(ea[pos]) == a
        if mask and st.t24 is not None:
            mask |= int(st.t24[a >> 8])
        if present:
            lost.append(int(em[pos]))
        if mask:
            if not np.any(uniq == mask):
                return "a new combination of rules (ruleset ids would shift)"
            if present:
                em = em.copy() if em is st.em else em
                em[pos] = mask
            else:
                ea, em = np.insert(ea, pos, np.uint32(a)), np.insert(em, pos, mdt.type(mask))
                bk = np.insert(bk, pos, np.uint32(bucket_of(np.array([a], dtype=np.uint32), bits)[0]))
        elif present:
            ea, em, bk = np.delete(ea, pos), np.delete(em, pos), np.delete(bk, pos)
    for m in set(lost):
        if not np.any(em == m) and not np.any(st.others == m):
            return "a combination of rules disappeared (ruleset ids would shift)"
    if capacity(len(ea) // 2, floor=1024) != nbuckets:
        return "the bucket count changes"
    bucket_changes: dict[int, bytes | None] = {}
    for b in {int(x) for x in bucket_of(np.array(sorted(touched), dtype=np.uint32), bits)}:
        lo = np.flatnonzero(bk == b)
        if len(lo) > BUCKET_SLOTS:
            return "a bucket spills (the v4_exact overflow map would change)"
        old_n = int(np.count_nonzero(st.bk == b))
        if old_n > BUCKET_SLOTS:
            return "a bucket spilled (the v4_exact overflow map would change)"
        val = np.zeros(64, dtype=np.uint8)
        val.view("<u4")[:len(lo)] = ea[lo].astype(np.uint32).byteswap()
        val.view("<u2")[16:16 + len(lo)] = (np.searchsorted(uniq, em[lo].astype(np.uint64)) + 1).astype(np.uint16)
        bucket_changes[b] = val.tobytes() if len(lo) else None
    group_changes: dict[int, bytes | None] = {}
    for top in sorted({a >> 8 for a in touched}):
        g = top // TBL24_GROUP
        base = g * TBL24_GROUP
        slots = np.zeros(TBL24_GROUP, dtype=np.uint16)
        if st.t24 is not None:
            seg = st.t24[base * 1:(base + TBL24_GROUP)]
            nz = seg != 0
            slots[nz] = (np.searchsorted(uniq, seg[nz].astype(np.uint64)) + 1).astype(np.uint16)
        lo_i = np.searchsorted(ea, np.uint32(base << 8))
        hi_i = np.searchsorted(ea, np.uint32(((base + TBL24_GROUP) << 8) - 1), side="right")
        more = np.unique((ea[lo_i:hi_i] >> np.uint32(8)).astype(np.int64) - base)
        slots[more] |= np.uint16(TBL24_MORE)
        group_changes[g] = slots.astype("<u2").tobytes() if slots.any() else None
    patches: dict[str, MapPatch] = {}
    planned: dict[str, tuple[bytes, int, list[Step]]] = {}
    pending: dict[str, int] = {}
    for name, vsize, changes in (("v4_buckets", 64, bucket_changes), ("v4_tbl24", 2 * TBL24_GROUP, group_changes)):
        if not changes:
            continue
        base = low.maps[name].records or b""
        steps, written, dropped, count = _plan_upsert(base, vsize, changes)
        patches[name] = MapPatch(base, written, dropped)
        planned[name] = (base, vsize, steps)
        pending[name] = count

    done: list[Lowered] = []

    def finish() -> Lowered:
        """Splice the planned records (once; later calls return the same lowering)."""
        if not done:
            maps = dict(low.maps)
            for name, (base, vsize, steps) in planned.items():
                maps[name] = dataclasses.replace(maps[name], records=_splice(base, vsize, steps))
            done.append(dataclasses.replace(low, rules=rules, maps=maps))
            if st.pending is finish:
                st.low, st.pending = done[0], None
        return done[0]

    st.rules, st.ea, st.em, st.bk = rules, ea, em, bk
    st.pending = finish
    return Incremental(dataclasses.replace(low, rules=rules), patches, pending, finish)
