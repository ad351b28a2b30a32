"""Lowering for XDPBlocklist: rules -> program features + map contents.

Classification model (what the generated program computes per packet):

    set   = rulesets[id(source address)]        # u64: bit i = rule i lists this source
    set  &= proto_rules(l4 protocol)             # constant per protocol, from the rules
    set  &= port_rules[dport] | PORTLESS_RULES   # ports bitmap array (data)
    allow rule in set -> XDP_PASS;  deny rule in set -> XDP_DROP;  else (SYN limit) PASS

Every source set is "leaf-pushed": the id stored for an address or prefix names the
union of ALL rules whose sources cover it, so one longest-match lookup answers for every
rule at once. Address layouts, chosen by measurement (docs/xdp.md):

* IPv4 "dir24" (any prefix shorter than /32, or >= 4096 entries): DIR-24-8 style.
  `v4_tbl24` is an ARRAY indexed by the top 24 address bits (32 u16 slots of 64 bytes per
  element, so one cache line), each slot = ruleset id of the /24 (prefixes <= /24 painted
  in) | 0x8000 when longer entries exist inside it. Those (/32s, and /25-/31 expanded to
  /32s) live in `v4_buckets`, our own hashed second level: an ARRAY of 64-byte buckets
  (8 addresses + 8 ids) indexed by a multiplicative hash, so a /32 hit is two inlined
  array loads and a few compares instead of a kernel hash walk (~30 ns measured). The
  rare addresses beyond 8 per bucket spill to the `v4_exact` HASH (bucket flag).
  A miss costs one array load; an LPM trie costs 2-4x more (docs/upstream.md §4.2).
* IPv4 "hash" (only /32s, fewer than 4096): the `v4_exact` HASH alone.
* IPv6: `v6_exact` HASH for /128s; prefixes up to /64 in `v6_buckets`, one 64-byte-bucket
  ARRAY hashed on (top 64 bits masked to the length, length), searched by a binary search
  over the lengths present with markers (Waldvogel): about log2(#lengths) inlined bucket
  probes instead of an LPM trie walk; the rare /65-/127 stay in the `v6_prefix` LPM trie.

Map sizes use power-of-two headroom so that adding entries is a map delta, not a reload.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .sources import Sources

MAX_RULES = 64
MAX_RULESETS = 0x7FFF
DIR24_MIN_ENTRIES = 4096
TBL24_GROUP = 32  # u16 slots per array element (64 bytes: one cache line)
TBL24_ENTRIES = (1 << 24) // TBL24_GROUP
TBL24_MORE = 0x8000  # slot flag: longer (> /24) entries exist in this /24
MAX_EXPANDED = 8 << 20  # /25-/31 prefixes expand to /32s; bound the blow-up
RULESETS_MAX = 1 << 15
MMAPABLE = 1 << 10  # BPF_F_MMAPABLE: big arrays are filled through mmap (kernel/maps.py)
BUCKET_SLOTS = 8  # /32s per v4_buckets element: 8 addresses + 8 ids = one 64-byte line
BUCKET_HASH = 2654435761  # Knuth's multiplicative hash (2^32 / phi); the C side matches
PORTS_MAX = 1 << 16
SYN_BUCKETS_MAX = 1 << 16

PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}
PORT_PROTOCOLS = {6, 17, 132}

# Fail-closed parsing limits: one name each, rendered into the C program under the same
# name (codegen/templates/xdp_blocklist.bpf.c.j2) and used by the reference `classify_frame`.
# docs/xdp.md "Fail closed" says what is dropped and why.
MAX_VLAN_DEPTH = 4  # 802.1Q/802.1ad tags: QinQ uses 2, provider stacks 3; the kernel strips
#                     any number of VID-0 tags, so a deeper stack is dropped, not passed
MAX_IPV6_EXT_HEADERS = 8  # RFC 8200 4.1 allows 6 before ESP/L4 (each once, dst-opts twice);
#                           a longer chain is dropped when a rule of the source needs L4
TCP_MIN_HDR = 20  # TCP header up to flags+window: a shorter first fragment is an RFC 1858 tiny fragment
UDP_MIN_HDR = 8   # UDP header
SCTP_MIN_HDR = 12  # SCTP common header (ports, verification tag, checksum)
FRAG_OFFSET_OVERLAP = 1  # fragment offset (8-byte units) overlapping the TCP flags: RFC 1858 3.2
LIMITS = {"MAX_VLAN_DEPTH": MAX_VLAN_DEPTH, "MAX_IPV6_EXT_HEADERS": MAX_IPV6_EXT_HEADERS,
          "TCP_MIN_HDR": TCP_MIN_HDR, "UDP_MIN_HDR": UDP_MIN_HDR, "SCTP_MIN_HDR": SCTP_MIN_HDR,
          "FRAG_OFFSET_OVERLAP": FRAG_OFFSET_OVERLAP}
L4_MIN_HDR = {6: TCP_MIN_HDR, 17: UDP_MIN_HDR, 132: SCTP_MIN_HDR}


@dataclass
class Rule:
    index: int
    name: str
    action: str  # "drop" (deny) | "pass" (allow)
    path: tuple[str | int, ...]
    where: str  # "file:line:col" of the rule
    sources: Sources
    protocols: set[int] | None = None  # None = any
    ports: list[tuple[int, int]] | None = None  # None = all

    @property
    def bit(self) -> int:
        return 1 << self.index


@dataclass
class MapSpec:
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int
    records: bytes | None = None  # contents (sorted key||value), None = runtime state
    percpu: bool = False
    flags: int = 0

    @property
    def entries(self) -> int:
        rec = self.key_size + self.value_size
        return len(self.records) // rec if self.records else 0


@dataclass
class Lowered:
    rules: list[Rule]
    features: dict[str, Any]
    maps: dict[str, MapSpec] = field(default_factory=dict)
    masks: dict[str, int] = field(default_factory=dict)
    proto_masks: dict[int, int] = field(default_factory=dict)
    ruleset_masks: np.ndarray | None = None  # id -> mask (index 0 = empty set)


def capacity(n: int, floor: int = 1024) -> int:
    """Power-of-two map size with >= 25% headroom: small changes stay map-only deltas."""
    need = max(floor, n + n // 4 + 1)
    return 1 << (need - 1).bit_length()


def _rec(keys: np.ndarray, values: np.ndarray) -> bytes:
    """Rows of key bytes and value bytes -> packed records, sorted by key bytes (the
    contents contract: two versions diff by a merge, see kernel/maps.py)."""
    if len(keys) > 1:
        width = (keys.shape[1] + 7) // 8 * 8
        padded = np.zeros((len(keys), width), dtype=np.uint8)
        padded[:, :keys.shape[1]] = keys
        cols = padded.view(">u8")
        if cols.shape[1] == 1:
            k = cols[:, 0]
            if not np.all(k[1:] > k[:-1]):
                order = np.argsort(k, kind="stable")
                keys, values = keys[order], values[order]
        else:
            order = np.lexsort([cols[:, j] for j in range(cols.shape[1] - 1, -1, -1)])
            keys, values = keys[order], values[order]
    return np.concatenate([keys, values], axis=1).tobytes()


def _le(a: np.ndarray) -> np.ndarray:
    """`a` with little-endian elements (no copy on little-endian hosts)."""
    return a if a.dtype.byteorder in ("<", "|") or (a.dtype.byteorder == "=" and sys.byteorder == "little") \
        else a.astype(a.dtype.newbyteorder("<"))


def _uniq(a: np.ndarray) -> np.ndarray:
    """Sorted unique values (np.unique hashes in numpy 2: ~10x slower at 1M)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


def _swapped_order(n: int, used: np.ndarray) -> np.ndarray:
    """`used` (unique indices < n) sorted by their little-endian u32 bytes. For a
    power-of-two n that order is a transpose of arange(n) viewed as digits base 256 (low
    byte slowest): no sort of a million keys, just a mask."""
    if n < 256 or n & (n - 1) or n > 1 << 32:
        return np.sort(used.astype(np.uint32).byteswap()).byteswap()
    k = n.bit_length() - 1
    dims = [min(256, 1 << max(0, k - 8 * t)) for t in range(4)]  # byte 0 (low) .. 3
    perm = np.arange(n, dtype=np.uint32).reshape(dims[::-1]).transpose(3, 2, 1, 0).ravel()
    keep = np.zeros(n, dtype=bool)
    keep[used] = True
    return perm[keep[perm]]


def _bucket_order(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, b[order]): entries stably ordered by bucket index (< 2**32), the same order as
    sorting (bucket << 32 | position) but by two 16-bit radix argsorts (~2.5x faster at 1M)."""
    low = (b & 0xFFFF).astype(np.uint16)
    order = np.argsort(low, kind="stable")
    if len(b) and int(b.max()) >> 16:
        order = order[np.argsort((b[order] >> 16).astype(np.uint16), kind="stable")]
    return order, b[order]


def _record_rows(n: int, width: int, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The records of an ARRAY map of `n` elements written in place, for a sparse one (the
    hashed bucket arrays): (out, row), `out` the (len(used), 4 + width) zeroed records with
    their keys filled in key-byte order (as `_array_rec`), row[index] its record's row. No
    dense n x width array and no row gather from it."""
    order = _swapped_order(n, used)
    out = np.zeros((len(order), 4 + width), dtype=np.uint8)
    out[:, :4] = order.astype("<u4").view(np.uint8).reshape(-1, 4)
    row = np.empty(n, dtype=np.int32)
    row[order] = np.arange(len(order), dtype=np.int32)
    return out, row


def _fields(out: np.ndarray, offset: int, dtype: str, count: int) -> np.ndarray:
    """`count` consecutive `dtype` fields at value byte `offset` of every record of `out`
    (an unaligned strided view: writes go straight into the records)."""
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(len(out), count), dtype=dtype, buffer=out, offset=4 + offset,
                      strides=(out.shape[1], size))


def _array_rec(dense: np.ndarray, used: np.ndarray) -> bytes:
    """Records of an ARRAY map: keys = little-endian u32 indices `used`, values = rows of
    `dense` (indexed by key). Sorted by key *bytes*, i.e. by the byte-swapped index —
    np.sort on the swapped keys instead of an argsort of rows (10x faster at 1M)."""
    order = _swapped_order(len(dense), used)
    width = dense.itemsize * (dense.shape[1] if dense.ndim > 1 else 1)
    out = np.empty((len(order), 4 + width), dtype=np.uint8)
    out[:, :4] = order.astype("<u4").view(np.uint8).reshape(-1, 4)
    out[:, 4:] = dense[order.astype(np.int64)].view(np.uint8).reshape(len(order), width)
    return out.tobytes()


# --------------------------------------------------------------------------- IPv4


@dataclass
class _V4:
    layout: str | None = None
    tbl24_slots: np.ndarray | None = None  # uint64 masks per /24 (before id mapping)
    exact_addr: np.ndarray | None = None  # sorted uint32
    exact_mask: np.ndarray | None = None


def _or_reduce_sorted(addr: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge duplicate addresses, OR-ing their masks (input any order)."""
    if len(mask) and np.all(mask == mask[0]):  # one rule: a plain sorted unique
        a = np.sort(addr)
        a = a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a
        return a, np.full(len(a), mask[0], dtype=mask.dtype)
    order = np.argsort(addr, kind="stable")
    a, m = addr[order], mask[order]
    if len(a) == 0:
        return a, m
    first = np.concatenate([[True], a[1:] != a[:-1]])
    starts = np.flatnonzero(first)
    return a[starts], np.bitwise_or.reduceat(m, starts)


def mask_dtype(nrules: int) -> type:
    """Narrowest integer holding one bit per rule: 16M-entry tables stay 8x smaller for
    the usual handful of rules (memory bandwidth is what 1M-entry lowering costs)."""
    for bits, dt in ((8, np.uint8), (16, np.uint16), (32, np.uint32)):
        if nrules <= bits:
            return dt
    return np.uint64


def _lower_v4(rules: list[Rule]) -> _V4:
    total = sum(len(r.sources.v4_addr) for r in rules)
    if not total:
        return _V4()
    any_prefix = any(bool(np.any(r.sources.v4_plen < 32)) for r in rules)
    layout = "dir24" if any_prefix or total >= DIR24_MIN_ENTRIES else "hash"
    out = _V4(layout=layout)
    mdt = mask_dtype(len(rules))
    t24 = np.zeros(1 << 24, dtype=mdt) if any(
        bool(np.any(r.sources.v4_plen <= 24)) for r in rules) else None
    long_a: list[np.ndarray] = []
    long_m: list[np.ndarray] = []
    expanded = 0
    for r in rules:
        a, p = r.sources.v4_addr, r.sources.v4_plen
        if not len(a):
            continue
        bit = mdt(r.bit)
        for plen in np.flatnonzero(np.bincount(p, minlength=33)):
            sel = a[p == plen]
            plen = int(plen)
            if plen <= 24:
                assert t24 is not None
                n = 1 << (24 - plen)
                top = (sel >> np.uint32(8)).astype(np.int64)
                if n == 1:
                    t24[top] |= bit
                elif len(top) * n <= (1 << 22):
                    t24[(top[:, None] + np.arange(n)).ravel()] |= bit
                else:
                    for s in top:
                        t24[s:s + n] |= bit
            else:
                n = 1 << (32 - plen)
                expanded += len(sel) * n
                if expanded > MAX_EXPANDED:
                    raise ValueError(f"rule {r.name}: /25-/31 prefixes expand to more than "
                                     f"{MAX_EXPANDED} addresses; use /24 or shorter prefixes")
                ex = (sel[:, None].astype(np.uint64) + np.arange(n, dtype=np.uint64)).ravel()
                long_a.append(ex.astype(np.uint32))
                long_m.append(np.full(len(ex), bit, dtype=mdt))
    if long_a:
        ea, em = _or_reduce_sorted(np.concatenate(long_a), np.concatenate(long_m))
        if t24 is not None:
            em = em | t24[(ea >> np.uint32(8)).astype(np.int64)]
        out.exact_addr, out.exact_mask = ea, em
    out.tbl24_slots = t24
    return out


def bucket_of(addr: np.ndarray, bits: int) -> np.ndarray:
    """v4_buckets index of numeric IPv4 addresses (same arithmetic as the C side)."""
    h = (addr.astype(np.uint64) * np.uint64(BUCKET_HASH)) & np.uint64(0xFFFFFFFF)
    return (h >> np.uint64(32 - bits)).astype(np.int64)


def _buckets(addr: np.ndarray, ids_: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray, int]:
    """Pack sorted /32s into 64-byte buckets: (records, spilled addrs, spilled ids, n).
    A bucket's content depends only on the addresses hashing to it, so adding one
    address rewrites one bucket record: a 1-entry delta."""
    nbuckets = capacity(len(addr) // 2, floor=1024)
    bits = nbuckets.bit_length() - 1
    b = bucket_of(addr, bits)
    # stable order by bucket: two 16-bit radix passes, no 64-bit sort
    order, b = _bucket_order(b)
    a, i = addr[order], ids_[order]
    first = np.concatenate([[True], b[1:] != b[:-1]]) if len(b) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    rank = np.arange(len(b)) - np.repeat(starts, np.diff(np.concatenate([starts, [len(b)]])))
    keep = rank < BUCKET_SLOTS
    dense = np.zeros((nbuckets, 64), dtype=np.uint8)
    bk, r = b[keep], rank[keep]
    # addr[8] as big-endian bytes at 0..31, id[8] little-endian u16 at 32..47
    dense.view("<u4")[bk, r] = a[keep].astype(np.uint32).byteswap()
    dense.view("<u2")[bk, 16 + r] = i[keep].astype(np.uint16)
    if np.any(~keep):
        dense[np.unique(b[~keep]), 48] = 1  # spill flag (u32 at offset 48)
    used = b[starts]
    return _array_rec(dense, used), a[~keep], i[~keep], nbuckets


# --------------------------------------------------------------------------- IPv6

V6_HASH_MAX_PLEN = 64  # prefixes up to /64 live in the v6 buckets (the routing half of
#                        the address); /65-/127 are rare in blocklists and use the LPM trie
V6_BUCKET_SLOTS = 4  # 4 u64 keys + 4 u32 values + spill flag = one 64-byte line
V6_HASH = 0x9E3779B97F4A7C15  # 2^64 / phi (Fibonacci hashing); the C side matches
V6_MAX_ENTRIES = 16 << 20  # prefixes + markers; bounds the bucket array (1 GiB at 64 B)
# IPv6 level 1: `v6_tbl24`, an ARRAY indexed by the top 24 address bits (as v4_tbl24), so a
# source whose /24 holds nothing longer is decided by one inlined array load. Slot = ruleset
# V6_TBL_HOSTS (/128s inside: probe v6_hosts first) | either the id of the prefixes <= /24
# covering it, or (V6_TBL_MORE: prefixes /25-/127 inside) V6_TBL_COVER (those prefixes'
# id is the v6_buckets entry (the /24, 24)) and the only /25-/64 length inside (one probe
# instead of the binary search; 0: several lengths, or a /65-/127 too).
V6_TBL_BITS = 24
V6_TBL_GROUP = 32  # u16 slots per element: one 64-byte line
V6_TBL_ENTRIES = (1 << V6_TBL_BITS) // V6_TBL_GROUP
V6_TBL_MORE = 0x8000
V6_TBL_HOSTS = 0x4000
V6_TBL_ID_MAX = 0x3FFF  # without MORE: two flag bits leave 14 id bits in a slot
V6_TBL_COVER = 0x2000  # with MORE
V6_TBL_LEN = 0x7F  # with MORE
V6_HOST_SLOTS = 3  # /128s per v6_hosts bucket: 3 x (hi, lo) + 3 ids + spill flag = 64 bytes
V6_TBL_C = {"bits": V6_TBL_BITS, "group": V6_TBL_GROUP, "more": hex(V6_TBL_MORE), "hosts": hex(V6_TBL_HOSTS),
            "id_mask": hex(V6_TBL_ID_MAX), "cover": hex(V6_TBL_COVER), "len_mask": hex(V6_TBL_LEN),
            "host_slots": V6_HOST_SLOTS}  # the template's #defines


def _hi_mask(plen: int) -> np.uint64:
    return np.uint64(0) if plen == 0 else np.uint64(((1 << 64) - 1) ^ ((1 << (64 - plen)) - 1))


def v6_tree(lens: list[int]) -> dict[str, Any] | None:
    """The binary search over prefix lengths (Waldvogel et al., "Scalable high speed IP
    routing lookups", SIGCOMM 1997): the middle length is probed first; a hit (prefix or
    marker) means "look longer", a miss "look shorter". Rendered as nested ifs in C."""
    if not lens:
        return None
    mid = len(lens) // 2
    return {"len": lens[mid], "short": v6_tree(lens[:mid]), "long": v6_tree(lens[mid + 1:])}


def _ancestors(tree: dict[str, Any] | None, plen: int) -> list[int]:
    """Lengths probed (and hit) on the way to `plen`: where its markers go."""
    out: list[int] = []
    while tree is not None and tree["len"] != plen:
        if plen > tree["len"]:
            out.append(tree["len"])
            tree = tree["long"]
        else:
            tree = tree["short"]
    return out


@dataclass
class _V6Hash:
    """Prefixes <= /64 (top 64 bits, host order) as sorted real entries plus markers."""
    lens: list[int]
    net: np.ndarray   # uint64, real prefixes, sorted by (net, plen)
    plen: np.ndarray  # uint8
    raw: np.ndarray   # uint64 rule masks of the prefix itself
    by_len: dict[int, tuple[np.ndarray, np.ndarray]]  # plen -> (sorted nets, raw masks)
    ends_max: np.ndarray  # running max of interval ends, in `net` order

    def cover(self, keys: np.ndarray, maxlen: np.ndarray) -> np.ndarray:
        """Union of the raw masks of every real prefix of length <= maxlen containing
        key. Only keys inside some interval are searched per length (few in real lists)."""
        out = np.zeros(len(keys), dtype=np.uint64)
        if not len(keys) or not len(self.net):
            return out
        idx = np.searchsorted(self.net, keys, side="right") - 1
        cand = np.flatnonzero((idx >= 0) & (self.ends_max[np.maximum(idx, 0)] >= keys))
        for plen in self.lens:
            sel = cand[maxlen[cand] >= plen]
            if not len(sel):
                continue
            nets, raw = self.by_len[plen]
            k = keys[sel] & _hi_mask(plen)
            pos = np.minimum(np.searchsorted(nets, k), len(nets) - 1)
            hit = nets[pos] == k
            out[sel[hit]] |= raw[pos[hit]]
        return out


def _order_by(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """An order by (major, minor) as lexsort([minor, major]) gives, for a small-integer
    `minor` (prefix lengths) or `major`; equal (major, minor) pairs in any order."""
    if major.dtype != np.uint64:  # major = lengths: order by minor, then stably by length
        o = np.argsort(minor, kind="stable")
        return o[np.argsort(major[o].astype(np.uint8), kind="stable")]
    # a 64-bit major: one unstable argsort (~1.5x the two stable ones at 700k), then only
    # the runs of equal major (a network listed at several lengths: few) put in minor order;
    # the order among equal (major, minor) pairs is the caller's to ignore (it ORs them)
    o = np.argsort(major)
    sm = major[o]
    tie = np.flatnonzero(sm[1:] == sm[:-1])
    if len(tie):
        at = _uniq(np.concatenate([tie, tie + 1]))
        sub = o[at]
        o[at] = sub[np.lexsort([minor[sub], major[sub]])]
    return o


def _v6_hash(net: np.ndarray, plen: np.ndarray, mask: np.ndarray) -> _V6Hash:
    order = _order_by(net, plen)
    net, plen, mask = net[order], plen[order], mask[order]
    if len(net):
        first = np.concatenate([[True], (net[1:] != net[:-1]) | (plen[1:] != plen[:-1])])
        starts = np.flatnonzero(first)
        mask = np.bitwise_or.reduceat(mask, starts)
        net, plen = net[starts], plen[starts]
    span = np.where(plen == 0, np.uint64((1 << 64) - 1),
                    (np.uint64(1) << (np.uint64(64) - np.minimum(plen, 63).astype(np.uint64))) - np.uint64(1))
    span = np.where(plen == 64, np.uint64(0), span)
    ends_max = np.maximum.accumulate(net | span) if len(net) else net
    lens = np.flatnonzero(np.bincount(plen, minlength=65)).tolist()
    o = np.argsort(plen.astype(np.uint8), kind="stable")  # radix; net order kept per length
    ps, ns, ms = plen[o], net[o], mask[o]
    lo_, hi_ = np.searchsorted(ps, lens, side="left"), np.searchsorted(ps, lens, side="right")
    by_len = {p: (ns[a:b], ms[a:b]) for p, a, b in zip(lens, lo_.tolist(), hi_.tolist(), strict=True)}
    return _V6Hash(lens, net, plen, mask, by_len, ends_max)


def _v6_entries(h: _V6Hash, tree: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, plen, leaf-pushed mask) of every real prefix and marker, unique by (plen, key).
    A marker's mask is the union of the real prefixes <= its length that contain it: the
    best match known when the search later fails longer down (Waldvogel's bmp)."""
    n = len(h.net)
    # a real prefix: its own mask | every shorter real prefix containing it
    prev_end = np.concatenate([[np.uint64(0)], h.ends_max[:-1]]) if n else h.net
    nested = np.zeros(n, dtype=bool)
    if n:
        nested[1:] = prev_end[1:] >= h.net[1:]
    masks = h.raw.copy()
    if nested.any():
        idx = np.flatnonzero(nested)
        masks[idx] |= h.cover(h.net[idx], h.plen[idx].astype(np.int64))
    deep = h.plen > V6_TBL_BITS  # shorter prefixes are painted into v6_tbl24 instead
    keys, plens, vals = [h.net[deep]], [h.plen[deep].astype(np.int64)], [masks[deep]]
    markers: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for p in h.lens:
        anc = _ancestors(tree, p) if p > V6_TBL_BITS else []
        if not anc:
            continue
        sel = np.flatnonzero(h.plen == p)
        inner = nested[sel]
        for a in anc:
            mk = h.net[sel] & _hi_mask(a)
            mv = np.zeros(len(sel), dtype=np.uint64)
            if inner.any():  # only a nested prefix's markers can carry covering rules
                mv[inner] = h.cover(mk[inner], np.full(int(inner.sum()), a, dtype=np.int64))
            markers.setdefault(a, []).append((mk, mv))
    # real prefixes are unique already; markers are made unique per length (OR of masks)
    # and dropped where a real prefix of that length has the same key (its leaf-pushed
    # mask is the marker's). No global sort: the buckets order entries themselves.
    for a in sorted(markers):
        mk = np.concatenate([x for x, _ in markers[a]])
        mv = np.concatenate([y for _, y in markers[a]])
        if not mv.any():
            mk = _uniq(mk)
            mv = np.zeros(len(mk), dtype=np.uint64)
        else:
            o = np.argsort(mk, kind="stable")
            mk, mv = mk[o], mv[o]
            starts = np.flatnonzero(np.concatenate([[True], mk[1:] != mk[:-1]]))
            mk, mv = mk[starts], np.bitwise_or.reduceat(mv, starts)
        real = h.by_len.get(a)
        if real is not None and len(real[0]):
            at = np.minimum(np.searchsorted(real[0], mk), len(real[0]) - 1)
            fresh = real[0][at] != mk
            mk, mv = mk[fresh], mv[fresh]
        keys.append(mk)
        plens.append(np.full(len(mk), a, dtype=np.int64))
        vals.append(mv)
    return np.concatenate(keys), np.concatenate(plens), np.concatenate(vals)


def v6_bucket_of(key: np.ndarray, plen: np.ndarray, bits: int) -> np.ndarray:
    """v6_buckets index of (masked top-64, length) pairs (same arithmetic as the C side)."""
    h = (key ^ plen.astype(np.uint64)) * np.uint64(V6_HASH)
    return (h >> np.uint64(64 - bits)).astype(np.int64)


def _v6_buckets(key: np.ndarray, plen: np.ndarray, ids_: np.ndarray) -> tuple[bytes, bytes, int]:
    """Pack entries into 64-byte buckets; value = id | (plen + 1) << 16 (0: empty slot).
    Overflow beyond V6_BUCKET_SLOTS goes to the v6_spill HASH (records returned)."""
    if len(key) > V6_MAX_ENTRIES:
        raise ValueError(f"{len(key)} IPv6 prefixes and markers; at most {V6_MAX_ENTRIES}")
    nbuckets = capacity(len(key) // 2, floor=1024)
    bits = nbuckets.bit_length() - 1
    b = v6_bucket_of(key, plen, bits)
    # stable order by bucket: two 16-bit radix passes, no 64-bit sort
    order, b = _bucket_order(b)
    k, p, i = key[order], plen[order], ids_[order]
    first = np.concatenate([[True], b[1:] != b[:-1]]) if len(b) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    rank = np.arange(len(b)) - np.repeat(starts, np.diff(np.concatenate([starts, [len(b)]])))
    keep = rank < V6_BUCKET_SLOTS
    val = i.astype(np.uint32) | ((p.astype(np.uint32) + np.uint32(1)) << np.uint32(16))
    out, row = _record_rows(nbuckets, 64, b[starts])
    rk, r = row[b[keep]], rank[keep]
    _fields(out, 0, "<u8", V6_BUCKET_SLOTS)[rk, r] = k[keep]
    _fields(out, 32, "<u4", V6_BUCKET_SLOTS)[rk, r] = val[keep]
    if np.any(~keep):
        out[row[np.unique(b[~keep])], 4 + 48] = 1  # spill flag (u32 at offset 48)
    sk = np.zeros((int((~keep).sum()), 16), dtype=np.uint8)
    sk[:, :8] = k[~keep].astype("<u8").view(np.uint8).reshape(-1, 8)
    sk[:, 8:12] = p[~keep].astype("<u4").view(np.uint8).reshape(-1, 4)
    spill = _rec(sk, val[~keep].astype("<u4").view(np.uint8).reshape(-1, 4))
    return out.tobytes(), spill, nbuckets


def v6_host_bucket_of(hi: np.ndarray, lo: np.ndarray, bits: int) -> np.ndarray:
    """v6_hosts index of /128s (top and bottom 64 bits, host order; same arithmetic as C)."""
    h = ((hi * np.uint64(V6_HASH)) ^ lo) * np.uint64(V6_HASH)
    return (h >> np.uint64(64 - bits)).astype(np.int64)


def _v6_hosts(hi: np.ndarray, lo: np.ndarray, ids_: np.ndarray) -> tuple[bytes, bytes, int]:
    """/128s into 64-byte buckets of V6_HOST_SLOTS (hi[3], lo[3], id[3], spill): our own
    hashed array instead of a kernel HASH (a hit is one inlined load and 3 compares, the
    kernel's jhash walk of a 16-byte key measured ~15 ns more). Overflow goes to the
    v6_exact HASH (records returned). A bucket depends only on its own addresses."""
    nbuckets = capacity(len(hi) // 2, floor=1024)
    bits = nbuckets.bit_length() - 1
    b = v6_host_bucket_of(hi, lo, bits)
    order, b = _bucket_order(b)
    h, lo_, i = hi[order], lo[order], ids_[order]
    first = np.concatenate([[True], b[1:] != b[:-1]]) if len(b) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    rank = np.arange(len(b)) - np.repeat(starts, np.diff(np.concatenate([starts, [len(b)]])))
    keep = rank < V6_HOST_SLOTS
    out, row = _record_rows(nbuckets, 64, b[starts])
    rk, r = row[b[keep]], rank[keep]
    _fields(out, 0, "<u8", V6_HOST_SLOTS)[rk, r] = h[keep]
    _fields(out, 8 * V6_HOST_SLOTS, "<u8", V6_HOST_SLOTS)[rk, r] = lo_[keep]
    _fields(out, 16 * V6_HOST_SLOTS, "<u4", V6_HOST_SLOTS)[rk, r] = i[keep].astype(np.uint32)
    if np.any(~keep):
        out[row[np.unique(b[~keep])], 4 + 60] = 1  # spill flag (u32 at offset 60)
    sk = np.empty((int((~keep).sum()), 16), dtype=np.uint8)
    sk[:, :8] = h[~keep].astype(">u8").view(np.uint8).reshape(-1, 8)
    sk[:, 8:] = lo_[~keep].astype(">u8").view(np.uint8).reshape(-1, 8)
    spill = _rec(sk, i[~keep].astype("<u4").view(np.uint8).reshape(-1, 4))
    return out.tobytes(), spill, nbuckets


def _v6_short(h: _V6Hash | None, mdt: type) -> np.ndarray | None:
    """Rule masks per /24 (v6_tbl24 slot) of the prefixes <= /24, painted like v4_tbl24
    (None when there are none: the usual case, every slot's id is then 0)."""
    if h is None or not any(p <= V6_TBL_BITS for p in h.lens):
        return None
    t24 = np.zeros(1 << V6_TBL_BITS, dtype=mdt)
    for p in h.lens:
        if p > V6_TBL_BITS:
            break
        nets, raw = h.by_len[p]
        top = (nets >> np.uint64(64 - V6_TBL_BITS)).astype(np.int64)
        n = 1 << (V6_TBL_BITS - p)
        for s_, m in zip(top.tolist(), raw.astype(mdt).tolist(), strict=True):
            t24[s_:s_ + n] |= mdt(m)
    return t24


def _v6_slots(h: _V6Hash | None, short: np.ndarray | None, short_nz: np.ndarray | None,
              ids: Any, lpm: dict[tuple[int, int], int], exact: _V6Exact | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """v6_tbl24 slots (see V6_TBL_*) and the (/24 key, id) cover entries of MORE slots."""
    slots = np.zeros(1 << V6_TBL_BITS, dtype=np.uint16)
    sid = None
    if short is not None and short_nz is not None and len(short_nz):
        sid = ids(short[short_nz]).astype(np.uint32)
        slots[short_nz] = sid.astype(np.uint16)  # ids <= MAX_RULESETS fit 15 bits
    shift = np.uint64(64 - V6_TBL_BITS)
    tops = lone = np.zeros(0, dtype=np.uint64)
    lone_len = np.zeros(0, dtype=np.uint16)
    if h is not None and len(h.net):
        deep = h.plen > V6_TBL_BITS
        # the real /25-/64 prefixes in (net, plen) order: their /24s come in runs
        top, pl = h.net[deep] >> shift, h.plen[deep]
        if len(top):
            starts = np.flatnonzero(np.concatenate([[True], top[1:] != top[:-1]]))
            tops = top[starts]
            lo_len, hi_len = np.minimum.reduceat(pl, starts), np.maximum.reduceat(pl, starts)
            single = lo_len == hi_len  # one length in this /24
            lone, lone_len = tops[single], lo_len[single].astype(np.uint16)
    lpm_tops = _uniq(np.array([a >> (128 - V6_TBL_BITS) for _, a in lpm], dtype=np.uint64))
    more = (_uniq(np.concatenate([tops, lpm_tops])) if len(lpm_tops) else tops).astype(np.int64)
    cover = slots[more].astype(np.uint32)  # ids of the prefixes <= /24 over those /24s
    slots[more] = np.uint16(V6_TBL_MORE) | np.where(cover != 0, V6_TBL_COVER, 0).astype(np.uint16)
    at = np.minimum(np.searchsorted(lpm_tops, lone), max(len(lpm_tops) - 1, 0))
    keep = ~(lpm_tops[at] == lone) if len(lpm_tops) else np.ones(len(lone), dtype=bool)
    slots[lone[keep].astype(np.int64)] |= lone_len[keep]
    plain = slots[short_nz] if sid is not None and short_nz is not None else np.zeros(0, dtype=np.uint16)
    plain = plain[(plain & np.uint16(V6_TBL_MORE)) == 0]
    if len(plain) and int(plain.max()) > V6_TBL_ID_MAX:
        raise ValueError(f"too many distinct rule combinations with IPv6 prefixes of /{V6_TBL_BITS} "
                         f"or shorter; at most {V6_TBL_ID_MAX}")
    if exact is not None:
        slots[(exact.hi >> shift).astype(np.int64)] |= np.uint16(V6_TBL_HOSTS)
    has = cover != 0
    return slots, more[has].astype(np.uint64) << shift, cover[has]


def _lower_v6(rules: list[Rule]) -> tuple[_V6Exact | None, dict[tuple[int, int], int], _V6Hash | None]:
    """(exact /128s with masks, (plen, network) -> mask for /65-/127, the <= /64 set),
    every mask leaf-pushed (the union of all rules whose prefixes cover the entry).
    Vectorised: a million /128s and prefixes never become Python ints."""
    hi_l, lo_l, p_l, m_l = [], [], [], []
    for r in rules:
        if len(r.sources.v6_plen):
            hi_l.append(r.sources.v6_hi)
            lo_l.append(r.sources.v6_lo)
            p_l.append(r.sources.v6_plen)
            m_l.append(np.full(len(r.sources.v6_plen), r.bit, dtype=np.uint64))
    if not hi_l:
        return None, {}, None
    hi, lo, plen, mask = (np.concatenate(x) for x in (hi_l, lo_l, p_l, m_l))
    ex = plen == 128
    mid = (plen > V6_HASH_MAX_PLEN) & ~ex
    hs = plen <= V6_HASH_MAX_PLEN
    prefixes: dict[tuple[int, int], int] = {}
    for h_, l_, p_, m_ in zip(hi[mid].tolist(), lo[mid].tolist(), plen[mid].tolist(), mask[mid].tolist(),
                              strict=True):
        key = (p_, h_ << 64 | l_)
        prefixes[key] = prefixes.get(key, 0) | m_
    h = _v6_hash(hi[hs], plen[hs], mask[hs]) if hs.any() else None
    exact = _v6_exact(hi[ex], lo[ex], mask[ex]) if ex.any() else None
    lens = sorted({p for p, _ in prefixes})

    def covering(addr: int, below: int) -> int:
        m = 0
        for plen_ in lens:
            if plen_ >= below:
                break
            m |= prefixes.get((plen_, addr & (((1 << plen_) - 1) << (128 - plen_))), 0)
        return m

    for key in sorted(prefixes):  # shorter first: covering sets are final when read
        prefixes[key] |= covering(key[1], key[0])
    if lens and exact is not None:  # /65-/127 are rare: per-entry only when present
        for i, (h_, l_) in enumerate(zip(exact.hi.tolist(), exact.lo.tolist(), strict=True)):
            exact.mask[i] |= np.uint64(covering(h_ << 64 | l_, 128))
    if h is not None:
        if exact is not None:
            exact.mask |= h.cover(exact.hi, np.full(len(exact.hi), V6_HASH_MAX_PLEN, dtype=np.int64))
        if prefixes:
            keys = list(prefixes)
            cov = h.cover(np.array([a >> 64 for _, a in keys], dtype=np.uint64),
                          np.full(len(keys), V6_HASH_MAX_PLEN, dtype=np.int64))
            for k, c in zip(keys, cov.tolist(), strict=True):
                prefixes[k] |= int(c)
    return exact, prefixes, h


@dataclass
class _V6Exact:
    """Unique /128s (top and bottom 64 bits) with the OR of their rules' masks."""
    hi: np.ndarray
    lo: np.ndarray
    mask: np.ndarray


def _v6_exact(hi: np.ndarray, lo: np.ndarray, mask: np.ndarray) -> _V6Exact:
    """Unique /128s, masks OR-ed. Duplicates are brought together by one argsort of a
    64-bit hash (~3x a lexsort of both halves); if two different addresses share a hash
    and end up interleaved, the exact (hi, lo) order is used instead."""
    order = np.argsort((hi * np.uint64(V6_HASH)) ^ lo)
    h2, l2 = hi[order], lo[order]
    k = (h2 * np.uint64(V6_HASH)) ^ l2
    if np.any((k[1:] == k[:-1]) & ((h2[1:] != h2[:-1]) | (l2[1:] != l2[:-1]))):
        order = np.lexsort([lo, hi])
    hi, lo, mask = hi[order], lo[order], mask[order]
    first = np.concatenate([[True], (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])])
    starts = np.flatnonzero(first)
    return _V6Exact(hi[starts], lo[starts], np.bitwise_or.reduceat(mask, starts))


# --------------------------------------------------------------------------- all


def lower(rules: list[Rule], rate_limit: dict[str, int] | None, keep: dict[str, Any] | None = None) -> Lowered:
    """Rules -> map contents. `keep`, when given, receives the IPv4 intermediates
    (incremental.py patches them for the next small change)."""
    if len(rules) > MAX_RULES:
        raise ValueError(f"{len(rules)} rules; at most {MAX_RULES} allow+deny rules per policy")
    v4 = _lower_v4(rules)
    v6_exact, v6_prefix, v6h = _lower_v6(rules)
    tree = v6_tree([p for p in v6h.lens if p > V6_TBL_BITS]) if v6h is not None else None
    v6_short = _v6_short(v6h, mask_dtype(len(rules)))
    v6_short_nz = np.flatnonzero(v6_short) if v6_short is not None else None
    v6k = v6p = v6v = None
    if v6h is not None and tree is not None:
        v6k, v6p, v6v = _v6_entries(v6h, tree)

    # ruleset ids: every distinct (non-empty) rule mask gets one, shared by all layouts
    parts = [np.array(list(v6_prefix.values()), dtype=np.uint64)]
    if v6_exact is not None:
        parts.append(v6_exact.mask)
    t24_nz = None
    if v4.tbl24_slots is not None:
        t24_nz = np.flatnonzero(v4.tbl24_slots)
        parts.append(v4.tbl24_slots[t24_nz])
    if v4.exact_mask is not None:
        parts.append(v4.exact_mask)
    if v6v is not None:
        parts.append(v6v)
    if v6_short is not None and v6_short_nz is not None:
        parts.append(v6_short[v6_short_nz])
    if len(rules) <= 16:  # few rules: a lookup table over all 2^n masks, no sorting
        seen = np.zeros(1 << len(rules), dtype=bool)
        for part in parts:
            seen[part.astype(np.int64)] = True
        seen[0] = False
        uniq = np.flatnonzero(seen).astype(np.uint64)
        lut = np.zeros(1 << len(rules), dtype=np.uint32)
        lut[uniq.astype(np.int64)] = np.arange(1, len(uniq) + 1, dtype=np.uint32)

        def ids(masks: np.ndarray) -> np.ndarray:
            return lut[masks.astype(np.int64)]
    else:
        allm = np.sort(np.concatenate([p.astype(np.uint64) for p in parts]))
        uniq = allm[np.concatenate([[True], allm[1:] != allm[:-1]])] if len(allm) else allm
        uniq = uniq[uniq != 0]

        def ids(masks: np.ndarray) -> np.ndarray:
            return (np.searchsorted(uniq, masks.astype(np.uint64)) + 1).astype(np.uint32)
    if len(uniq) > MAX_RULESETS:
        raise ValueError(f"{len(uniq)} distinct rule combinations; at most {MAX_RULESETS}")

    features: dict[str, Any] = {
        "v4": v4.layout, "v6": v6h is not None or v6_exact is not None or bool(v6_prefix),
        "v6_exact": v6_exact is not None, "v6_prefix": bool(v6_prefix), "v6_buckets": False,
        "v6_tree": tree,
        "ports": any(r.ports is not None for r in rules),
        "protocols": any(r.protocols is not None for r in rules),
        "allow": any(r.action == "pass" for r in rules),
        "deny": any(r.action == "drop" for r in rules),
        "rate_limit": dict(rate_limit) if rate_limit else None,
    }
    low = Lowered(rules, features)
    low.ruleset_masks = np.concatenate([[np.uint64(0)], uniq]).astype(np.uint64)
    maps = low.maps
    maps["rulesets"] = MapSpec("rulesets", "array", 4, 8, RULESETS_MAX,
                               _array_rec(_le(low.ruleset_masks), np.arange(1, len(uniq) + 1)))

    if v4.layout == "dir24":
        slots = np.zeros(1 << 24, dtype=np.uint16)
        if t24_nz is not None and len(t24_nz):
            assert v4.tbl24_slots is not None
            slots[t24_nz] = ids(v4.tbl24_slots[t24_nz]).astype(np.uint16)
        if v4.exact_addr is not None:
            slots[(v4.exact_addr >> np.uint32(8)).astype(np.int64)] |= np.uint16(TBL24_MORE)
        groups = slots.reshape(TBL24_ENTRIES, TBL24_GROUP)
        used = np.flatnonzero(groups.view(np.uint64).any(axis=1))
        maps["v4_tbl24"] = MapSpec("v4_tbl24", "array", 4, 2 * TBL24_GROUP, TBL24_ENTRIES,
                                   _array_rec(_le(groups), used), flags=MMAPABLE)
    if v4.layout == "dir24":
        ea = v4.exact_addr if v4.exact_addr is not None else np.zeros(0, dtype=np.uint32)
        eid = ids(v4.exact_mask) if v4.exact_mask is not None else np.zeros(0, dtype=np.uint32)
        bucket_recs, spill_a, spill_id, nbuckets = _buckets(ea, eid)
        features["v4_bucket_bits"] = nbuckets.bit_length() - 1
        maps["v4_buckets"] = MapSpec("v4_buckets", "array", 4, 64, nbuckets, bucket_recs, flags=MMAPABLE)
        maps["v4_exact"] = MapSpec("v4_exact", "hash", 4, 4, capacity(len(spill_a)), _rec(
            spill_a.astype(">u4").view(np.uint8).reshape(-1, 4),
            spill_id.astype("<u4").view(np.uint8).reshape(-1, 4)))
    elif v4.layout == "hash":
        assert v4.exact_addr is not None and v4.exact_mask is not None
        ek = v4.exact_addr.astype(">u4").view(np.uint8).reshape(-1, 4)
        ev = ids(v4.exact_mask).astype("<u4").view(np.uint8).reshape(-1, 4)
        maps["v4_exact"] = MapSpec("v4_exact", "hash", 4, 4, capacity(len(ek)), _rec(ek, ev))

    cover_k = cover_v = None
    if features["v6"]:
        slots, cover_k, cover_v = _v6_slots(v6h, v6_short, v6_short_nz, ids, v6_prefix, v6_exact)
        groups = slots.reshape(V6_TBL_ENTRIES, V6_TBL_GROUP)
        used = np.flatnonzero(groups.view(np.uint64).any(axis=1))
        maps["v6_tbl24"] = MapSpec("v6_tbl24", "array", 4, 2 * V6_TBL_GROUP, V6_TBL_ENTRIES,
                                   _array_rec(_le(groups), used), flags=MMAPABLE)
    if v6_exact is not None:
        hrecs, hspill, nbh = _v6_hosts(v6_exact.hi, v6_exact.lo, ids(v6_exact.mask))
        features["v6_host_bits"] = nbh.bit_length() - 1
        maps["v6_hosts"] = MapSpec("v6_hosts", "array", 4, 64, nbh, hrecs, flags=MMAPABLE)
        maps["v6_exact"] = MapSpec("v6_exact", "hash", 16, 4, capacity(len(hspill) // 20), hspill)
    if v6_prefix:
        keys6 = sorted(v6_prefix)
        mids = ids(np.array([v6_prefix[k] for k in keys6], dtype=np.uint64))
        recs_l = [struct.pack("<I", p) + a.to_bytes(16, "big") + struct.pack("<I", int(i))
                  for (p, a), i in zip(keys6, mids, strict=True)]
        recs_l.sort(key=lambda r: r[:20])
        maps["v6_prefix"] = MapSpec("v6_prefix", "lpm_trie", 20, 4, capacity(len(keys6)), b"".join(recs_l),
                                    flags=1)  # BPF_F_NO_PREALLOC (required by LPM tries)

    if v6k is not None or (cover_k is not None and len(cover_k)):
        bk = [] if v6k is None else [v6k]
        bp = [] if v6p is None else [v6p]
        bv = [] if v6v is None else [np.where(v6v == 0, 0, ids(v6v)).astype(np.uint32)]
        if cover_k is not None and cover_v is not None and len(cover_k):
            bk.append(cover_k)
            bp.append(np.full(len(cover_k), V6_TBL_BITS, dtype=np.int64))
            bv.append(cover_v)
        features["v6_buckets"] = True
        brecs, srecs, nb6 = _v6_buckets(np.concatenate(bk), np.concatenate(bp), np.concatenate(bv))
        features["v6_bucket_bits"] = nb6.bit_length() - 1
        maps["v6_buckets"] = MapSpec("v6_buckets", "array", 4, 64, nb6, brecs, flags=MMAPABLE)
        maps["v6_spill"] = MapSpec("v6_spill", "hash", 16, 4, capacity(len(srecs) // 20), srecs)

    if features["ports"]:
        pm = np.zeros(PORTS_MAX, dtype=np.uint64)
        for r in rules:
            for lo, hi in r.ports or ():
                pm[lo:hi + 1] |= np.uint64(r.bit)
        maps["port_rules"] = MapSpec("port_rules", "array", 4, 8, PORTS_MAX,
                                     _array_rec(_le(pm), np.flatnonzero(pm)))

    # counters: one per rule, then the SYN limit (len(rules)), then fail-closed drops
    maps["rule_stats"] = MapSpec("rule_stats", "percpu_array", 4, 16, len(rules) + 2, None, percpu=True)
    if rate_limit:
        maps["syn_buckets"] = MapSpec("syn_buckets", "lru_hash", 16, 16, SYN_BUCKETS_MAX, None)

    allow = sum(r.bit for r in rules if r.action == "pass")
    deny = sum(r.bit for r in rules if r.action == "drop")
    portless = sum(r.bit for r in rules if r.ports is None)
    scoped = sum(r.bit for r in rules if r.ports is not None or r.protocols is not None)
    low.masks = {"allow": allow, "deny": deny, "portless": portless, "all": allow | deny,
                 "scoped": scoped}
    any_proto = sum(r.bit for r in rules if r.protocols is None)
    protos = sorted({p for r in rules for p in (r.protocols or ())})
    low.proto_masks = {p: any_proto | sum(r.bit for r in rules if r.protocols and p in r.protocols)
                       for p in protos}
    low.masks["any_proto"] = any_proto
    if keep is not None:
        keep.update(v4=v4, others=[p for p in parts if p is not v4.exact_mask])
    return low


# --------------------------------------------------------------------------- kernel-test


def find_record(records: bytes, key_size: int, value_size: int, key: bytes) -> bytes | None:
    """Binary search a sorted contents buffer for `key`."""
    n = key_size + value_size
    lo, hi = 0, len(records) // n
    while lo < hi:
        mid = (lo + hi) // 2
        k = records[mid * n:mid * n + key_size]
        if k == key:
            return records[mid * n:(mid + 1) * n]
        if k < key:
            lo = mid + 1
        else:
            hi = mid
    return None


def v6_path(low: Lowered, raw: bytes) -> tuple[int, list[tuple[str, bytes]]]:
    """The map records the program reads to look up the IPv6 source `raw` (16 bytes), in
    its order (lookup_v6 in the template), and the ruleset id it ends with: kernel-test
    vectors insert just these records and the kernel takes the same path."""
    out: list[tuple[str, bytes]] = []
    hi, lo = int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")
    top = hi >> (64 - V6_TBL_BITS)
    gkey = (top // V6_TBL_GROUP).to_bytes(4, "little")
    rec = find_record(low.maps["v6_tbl24"].records or b"", 4, 2 * V6_TBL_GROUP, gkey)
    if rec is None:
        return 0, out
    out.append(("v6_tbl24", gkey))
    at = 4 + 2 * (top % V6_TBL_GROUP)
    slot = int.from_bytes(rec[at:at + 2], "little")
    if slot & V6_TBL_HOSTS:
        bits = int(low.features["v6_host_bits"])
        idx = int(v6_host_bucket_of(np.array([hi], dtype=np.uint64), np.array([lo], dtype=np.uint64), bits)[0])
        rec = find_record(low.maps["v6_hosts"].records or b"", 4, 64, idx.to_bytes(4, "little"))
        if rec is not None:
            out.append(("v6_hosts", rec[:4]))
            v = rec[4:]
            for i in range(V6_HOST_SLOTS):
                hid = int.from_bytes(v[48 + 4 * i:52 + 4 * i], "little")
                if hid and int.from_bytes(v[8 * i:8 * i + 8], "little") == hi \
                        and int.from_bytes(v[24 + 8 * i:32 + 8 * i], "little") == lo:
                    return hid, out
            if int.from_bytes(v[60:64], "little"):
                srec = find_record(low.maps["v6_exact"].records or b"", 16, 4, raw)
                if srec is not None:
                    out.append(("v6_exact", raw))
                    return int.from_bytes(srec[16:], "little"), out
    if not slot & V6_TBL_MORE:
        return slot & V6_TBL_ID_MAX, out
    if "v6_prefix" in low.maps:
        rid = _lpm_path(low, hi << 64 | lo, out)
        if rid is not None:
            return rid, out
    found = 0
    if low.features.get("v6_tree"):
        only = slot & V6_TBL_LEN
        found = (_v6_probe_path(low, hi, only, out) or 0) if only else _v6_tree_path(low, hi, out)
    if not found and slot & V6_TBL_COVER:
        found = _v6_probe_path(low, hi, V6_TBL_BITS, out) or 0
    return found, out


def _lpm_path(low: Lowered, addr: int, out: list[tuple[str, bytes]]) -> int | None:
    """The v6_prefix (/65-/127 LPM trie) record `addr` matches longest, appended to `out`."""
    spec = low.maps["v6_prefix"]
    records = spec.records or b""
    n = spec.key_size + spec.value_size
    best = None
    for i in range(0, len(records), n):
        rec = records[i:i + n]
        plen = int.from_bytes(rec[:4], "little")
        net = int.from_bytes(rec[4:20], "big")
        if (plen == 0 or (addr ^ net) >> (128 - plen) == 0) and (best is None or plen > best[0]):
            best = (plen, rec)
    if best is None:
        return None
    out.append(("v6_prefix", best[1][:20]))
    return int.from_bytes(best[1][20:], "little")


def _v6_probe_path(low: Lowered, hi: int, plen: int, out: list[tuple[str, bytes]]) -> int | None:
    """v6_probe: the id of (hi masked to plen, plen) in v6_buckets (or v6_spill), None if
    absent; appends the records read to `out`."""
    buckets = low.maps["v6_buckets"].records or b""
    spill = low.maps["v6_spill"].records or b"" if "v6_spill" in low.maps else b""
    bits = int(low.features["v6_bucket_bits"])
    key = hi & (((1 << plen) - 1) << (64 - plen)) if plen else 0
    idx = (((key ^ plen) * V6_HASH) & ((1 << 64) - 1)) >> (64 - bits)
    rec = find_record(buckets, 4, 64, idx.to_bytes(4, "little"))
    if rec is None:
        return None
    out.append(("v6_buckets", rec[:4]))
    val = rec[4:]
    for i in range(V6_BUCKET_SLOTS):
        k = int.from_bytes(val[8 * i:8 * i + 8], "little")
        v = int.from_bytes(val[32 + 4 * i:36 + 4 * i], "little")
        if k == key and v >> 16 == plen + 1:
            return v & 0xFFFF
    if int.from_bytes(val[48:52], "little"):
        skey = key.to_bytes(8, "little") + plen.to_bytes(4, "little") + bytes(4)
        srec = find_record(spill, 16, 4, skey)
        if srec is not None:
            out.append(("v6_spill", skey))
            return int.from_bytes(srec[16:], "little") & 0xFFFF
    return None


def _v6_tree_path(low: Lowered, hi: int, out: list[tuple[str, bytes]]) -> int:
    """Walk the binary search over prefix lengths (v6_tree) for the top 64 bits `hi`,
    appending every record it reads. Returns the ruleset id it ends with (0: none)."""
    node, rid = low.features["v6_tree"], 0
    while node is not None:
        hit = _v6_probe_path(low, hi, int(node["len"]), out)
        if hit is not None:
            rid, node = hit, node["long"]
        else:
            node = node["short"]
    return rid


# --------------------------------------------------------------------------- reference


def embedded_v4(addr6: int) -> int | None:
    """The IPv4 address an IPv6 source stands for, as the program reads it: ::ffff:a.b.c.d
    (IPv4-mapped), ::a.b.c.d (IPv4-compatible, not :: or ::1), 64:ff9b::a.b.c.d (NAT64
    well-known prefix, RFC 6052). None for every other address."""
    hi, lo = addr6 >> 32, addr6 & 0xFFFFFFFF
    if hi == 0xFFFF or (hi == 0 and lo > 1) or hi == 0x0064FF9B << 64:
        return lo
    return None


def _v6_listed(src: Sources, addr: int) -> bool:
    """Does any IPv6 entry of `src` contain `addr`? (vectorised: lists hold a million)"""
    p = src.v6_plen.astype(np.uint64)
    hi_keep = np.where(p >= 64, ~np.uint64(0), ~(~np.uint64(0) >> np.minimum(p, 63)))
    hi_keep = np.where(p == 0, np.uint64(0), hi_keep)
    lo_keep = np.where(p <= 64, np.uint64(0), ~((np.uint64(1) << (np.uint64(128) - np.maximum(p, 65))) - np.uint64(1)))
    hit = (((src.v6_hi ^ np.uint64(addr >> 64)) & hi_keep) == 0) & \
        (((src.v6_lo ^ np.uint64(addr & ((1 << 64) - 1))) & lo_keep) == 0)
    return bool(hit.any())


def source_mask(low: Lowered, src: str) -> int:
    """Bit i set = rule i lists `src` (an IPv6 source embedding an IPv4 address is also
    matched against the IPv4 entries, like the program does)."""
    fam6 = ":" in src
    addr = int.from_bytes(socket.inet_pton(socket.AF_INET6 if fam6 else socket.AF_INET, src), "big")
    v4 = embedded_v4(addr) if fam6 else addr
    mask = 0
    for r in low.rules:
        hit = fam6 and _v6_listed(r.sources, addr)
        if not hit and v4 is not None and len(r.sources.v4_addr):
            a4, p4 = r.sources.v4_addr.astype(np.uint64), r.sources.v4_plen.astype(np.uint64)
            shift = np.uint64(32) - p4
            hit = bool(np.any(((np.uint64(v4) ^ a4) >> shift) == 0)) or bool(np.any(p4 == 0))
        if hit:
            mask |= r.bit
    return mask


def decide(low: Lowered, mask: int, proto: int | None, dport: int | None) -> tuple[str, int | None]:
    """Narrow the rules listing a source by protocol (None: not parsed, only possible when
    no rule in `mask` filters by protocol or port) and destination port (None: no ports,
    e.g. a non-first fragment), then allow > deny > pass."""
    for r in low.rules:
        if not mask & r.bit:
            continue
        wrong_proto = r.protocols is not None and proto not in r.protocols
        wrong_port = r.ports is not None and (dport is None or proto not in PORT_PROTOCOLS
                                              or not any(lo <= dport <= hi for lo, hi in r.ports))
        if wrong_proto or wrong_port:
            mask &= ~r.bit
    for action in ("pass", "drop"):
        for r in low.rules:
            if r.action == action and mask & r.bit:
                return action, r.index
    return "pass", None


def classify(low: Lowered, src: str, proto: int, dport: int | None) -> tuple[str, int | None]:
    """What the generated program should do with a first-fragment packet from `src`
    (ignoring the SYN rate limit): ("pass"|"drop", matching rule index or None).
    The Python reference used by kernel-test vectors and tests."""
    return decide(low, source_mask(low, src), proto, dport)


def classify_frame(low: Lowered, frame: bytes) -> tuple[str, int | None]:
    """The reference for a whole Ethernet frame, with the program's fail-closed parsing
    (VLAN stacks, IPv6 extension headers, fragments, embedded IPv4 sources; the SYN limit
    ignored): ("pass"|"drop", rule index | len(rules) + 1 for a fail-closed drop | None)."""
    fail = ("drop", len(low.rules) + 1)
    n = len(frame)
    if n < 14:
        return "pass", None
    ethertype, off = struct.unpack_from("!H", frame, 12)[0], 14
    for _ in range(MAX_VLAN_DEPTH):
        if ethertype not in (0x8100, 0x88A8):
            break
        if off + 4 > n:
            return "pass", None
        ethertype, off = struct.unpack_from("!H", frame, off + 2)[0], off + 4
    if ethertype in (0x8100, 0x88A8):
        return fail
    scoped = low.masks["scoped"]
    rate = bool(low.features.get("rate_limit"))

    def l4(mask: int, proto: int, at: int) -> tuple[str, int | None]:
        need = L4_MIN_HDR.get(proto)
        if need is None:
            return decide(low, mask, proto, None)
        if at + need > n:  # cut short: fail closed if anything depended on it
            return fail if (rate and proto == 6) or mask & scoped else decide(low, mask, proto, None)
        return decide(low, mask, proto, struct.unpack_from("!H", frame, at + 2)[0])

    if ethertype == 0x0800:
        if off + 20 > n or frame[off] & 0x0F < 5:
            return "pass", None
        mask = source_mask(low, socket.inet_ntoa(frame[off + 12:off + 16]))
        if not (rate or mask & scoped):
            return decide(low, mask, None, None)
        proto = frame[off + 9]
        offset = struct.unpack_from("!H", frame, off + 6)[0] & 0x1FFF
        if offset == FRAG_OFFSET_OVERLAP:
            return fail
        if offset:
            return decide(low, mask, proto, None)
        return l4(mask, proto, off + (frame[off] & 0x0F) * 4)
    if ethertype != 0x86DD:
        return "pass", None
    if off + 40 > n:
        return "pass", None
    mask = source_mask(low, socket.inet_ntop(socket.AF_INET6, frame[off + 8:off + 24]))
    if not (rate or mask & scoped):
        return decide(low, mask, None, None)
    nh, cur = frame[off + 6], off + 40
    for _ in range(MAX_IPV6_EXT_HEADERS):
        if nh in (0, 43, 60):
            if cur + 2 > n:
                return fail
            nh, cur = frame[cur], cur + (frame[cur + 1] + 1) * 8
        elif nh == 44:
            if cur + 8 > n:
                return fail
            nh, offset = frame[cur], struct.unpack_from("!H", frame, cur + 2)[0] >> 3
            if offset == FRAG_OFFSET_OVERLAP:
                return fail
            if offset:
                return decide(low, mask, nh, None)
            cur += 8
        elif nh == 51:
            if cur + 2 > n:
                return fail
            nh, cur = frame[cur], cur + (frame[cur + 1] + 2) * 4
        else:
            return l4(mask, nh, cur)
    return fail
