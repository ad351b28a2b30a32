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
(> 8 addresses), the bucket count or the set of distinct rule masks changing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

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


_states: dict[str, _State] = {}


def _shape(rules: list[Rule], rate: dict[str, int] | None) -> tuple[Any, ...]:
    return (tuple((r.name, r.action, tuple(sorted(r.protocols or ())), r.protocols is None,
                   tuple(r.ports or ()), r.ports is None, r.path) for r in rules), tuple(sorted((rate or {}).items())))


def lower_incremental(key: str, rules: list[Rule], rate: dict[str, int] | None) -> tuple[Lowered, bool]:
    """(lowering, patched?) of `rules` for the policy `key`."""
    shape = _shape(rules, rate)
    st = _states.get(key)
    if st is not None and st.shape == shape:
        low = _patch(st, rules)
        if low is not None:
            return low, True
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
    return low, False


def _diff(old: np.ndarray, new: np.ndarray) -> tuple[int, int, int]:
    """Positional diff: (prefix, old_end, new_end) of the differing middle."""
    m = min(len(old), len(new))
    ne = np.flatnonzero(old[:m] != new[:m])
    p = int(ne[0]) if len(ne) else m
    tail = min(len(old), len(new)) - p
    ne = np.flatnonzero(old[len(old) - tail:][::-1] != new[len(new) - tail:][::-1]) if tail else np.zeros(0)
    s = int(ne[0]) if len(ne) else tail
    return p, len(old) - s, len(new) - s


def _changed(st: _State, rules: list[Rule]) -> set[int] | None:
    """The /32 addresses whose membership may have changed, or None (not patchable)."""
    touched: set[int] = set()
    for old, new in zip(st.rules, rules, strict=True):
        o, n = old.sources, new.sources
        if o is n:
            continue
        if not (np.array_equal(o.v6_hi, n.v6_hi) and np.array_equal(o.v6_lo, n.v6_lo)
                and np.array_equal(o.v6_plen, n.v6_plen)):
            return None
        ko = o.v4_addr.astype(np.uint64) << np.uint64(8) | o.v4_plen
        kn = n.v4_addr.astype(np.uint64) << np.uint64(8) | n.v4_plen
        p, oe, ne = _diff(ko, kn)
        mid = np.concatenate([ko[p:oe], kn[p:ne]])
        if len(mid) > PATCH_MAX or np.any((mid & np.uint64(0xFF)) != 32):
            return None
        touched.update(int(x) >> 8 for x in mid)
        if len(touched) > PATCH_MAX:
            return None
    return touched


def _upsert(records: bytes, vsize: int, changes: dict[int, bytes | None]) -> bytes:
    """ARRAY-map records (sorted by little-endian u32 key bytes) with `changes` applied:
    index -> new value bytes, or None to drop the record."""
    n = 4 + vsize
    keys = np.frombuffer(records, dtype=">u4")[::n // 4]
    view = memoryview(records)  # slices without copies: the join below copies once
    parts: list[bytes | memoryview] = []
    at = 0
    for idx in sorted(changes, key=lambda i: int.from_bytes(i.to_bytes(4, "little"), "big")):
        kb = idx.to_bytes(4, "little")
        pos = int(np.searchsorted(keys, int.from_bytes(kb, "big")))
        parts.append(view[at * n:pos * n])
        present = pos < len(keys) and int(keys[pos]) == int.from_bytes(kb, "big")
        if changes[idx] is not None:
            parts.append(kb + changes[idx])
        at = pos + 1 if present else pos
    parts.append(view[at * n:])
    return b"".join(parts)


def _patch(st: _State, rules: list[Rule]) -> Lowered | None:
    low = st.low
    if low.features["v4"] != "dir24" or "v4_buckets" not in low.maps:
        return None
    touched = _changed(st, rules)
    if touched is None:
        return None
    mdt = st.em.dtype
    uniq = low.ruleset_masks[1:]
    ea, em = st.ea, st.em
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
                return None  # a new rule combination: ids would shift
            if present:
                em = em.copy() if em is st.em else em
                em[pos] = mask
            else:
                ea, em = np.insert(ea, pos, np.uint32(a)), np.insert(em, pos, mdt.type(mask))
        elif present:
            ea, em = np.delete(ea, pos), np.delete(em, pos)
    for m in set(lost):
        if not np.any(em == m) and not np.any(st.others == m):
            return None  # a rule combination disappeared: ids would shift
    nbuckets = low.maps["v4_buckets"].max_entries
    if capacity(len(ea) // 2, floor=1024) != nbuckets:
        return None
    bits = nbuckets.bit_length() - 1
    bucket_changes: dict[int, bytes | None] = {}
    for b in {int(x) for x in bucket_of(np.array(sorted(touched), dtype=np.uint32), bits)}:
        lo = np.flatnonzero(bucket_of(ea, bits) == b) if b not in bucket_changes else None
        if lo is None:
            continue
        if len(lo) > BUCKET_SLOTS:
            return None  # spills: the v4_exact overflow map would change too
        old_n = int(np.count_nonzero(bucket_of(st.ea, bits) == b))
        if old_n > BUCKET_SLOTS:
            return None
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
    maps = dict(low.maps)
    maps["v4_buckets"] = dataclasses.replace(maps["v4_buckets"], records=_upsert(
        maps["v4_buckets"].records or b"", 64, bucket_changes))
    maps["v4_tbl24"] = dataclasses.replace(maps["v4_tbl24"], records=_upsert(
        maps["v4_tbl24"].records or b"", 2 * TBL24_GROUP, group_changes))
    new = dataclasses.replace(low, rules=rules, maps=maps)
    st.rules, st.low, st.ea, st.em = rules, new, ea, em
    return new
