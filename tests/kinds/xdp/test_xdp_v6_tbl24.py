"""The IPv6 first level and /128 buckets (lower.py: v6_tbl24 slot = HOSTS | covering id, or
MORE | COVER | the only length inside; v6_hosts 3 per bucket with spill to v6_exact)
against the Python reference on the real kernel: a slot's flags send the lookup down only
where something longer lives, a /24 with one length is one probe, a probe that misses falls
back to the prefixes <= /24 covering the slot, and /128s that overflow their bucket are
still found."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import numpy as np

from bpfpolicy.kinds.xdp import packets as pk
from bpfpolicy.kinds.xdp.kind import XDPBlocklistKind
from bpfpolicy.kinds.xdp.lower import (
    V6_HOST_SLOTS,
    V6_TBL_COVER,
    V6_TBL_HOSTS,
    V6_TBL_LEN,
    V6_TBL_MORE,
    classify,
    lower,
    v6_host_bucket_of,
)
from bpfpolicy.policy.compile import compile_paths
from bpfpolicy.policy.load import load_file

from helpers.kernel_fixtures import require_kernel
from helpers.xdp import load

DROP, PASS = 1, 2

POLICY = """\
apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {name: v6tbl}
spec:
  interfaces: [eth0]
  deny:
    - name: feed
      sourceFiles: [list.txt]
    - name: short
      sources: [%s]
      protocols: [udp]
  allow:
    - name: ok
      sources: [%s]
"""


def _compile(tmp_path: Path, feed: list[str], short: list[str], ok: list[str]) -> tuple[object, object]:
    (tmp_path / "list.txt").write_text("\n".join(feed) + "\n")
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(POLICY % (", ".join(short), ", ".join(ok))))
    res = compile_paths([p])
    assert res.ok, [str(d) for d in res.diagnostics]
    return res.artifacts[0][1], lower(XDPBlocklistKind().rules(load_file(p)[0]), None)


def _agree(art: object, low: object, srcs: list[str]) -> dict[str, int]:
    """Every source, as UDP and TCP, gets the reference verdict; returns drops per rule."""
    L = load(art)
    hits: dict[str, int] = {}
    try:
        for src in srcs:
            for proto in (17, 6):
                want, rule = classify(low, src, proto, 53)
                got = L.run(pk.packet(src, proto, 53)).retval
                assert got == (DROP if want == "drop" else PASS), (src, proto, want, rule)
                if rule is not None:
                    name = low.rules[rule].name  # type: ignore[attr-defined]
                    hits[name] = hits.get(name, 0) + 1
    finally:
        L.close()
    return hits


def _slot(low: object, addr: str) -> int:
    top = int(ipaddress.IPv6Address(addr)) >> 104
    recs = low.maps["v6_tbl24"].records  # type: ignore[attr-defined]
    for i in range(0, len(recs), 68):
        if int.from_bytes(recs[i:i + 4], "little") == top // 32:
            at = i + 4 + 2 * (top % 32)
            return int.from_bytes(recs[at:at + 2], "little")
    return 0


def test_slot_flags_and_cover_fallback(tmp_path: Path) -> None:
    """/16 and /24 (painted into slots) around /128s, /48s and a /100: an unlisted address
    next to a /128 or inside a /48's /24 falls back to the short prefix's rule."""
    require_kernel()
    feed = ["2a01:4f8:c0c:1::9", "2a01:4f8:c0c:1::10", "2a01:5f9::/48", "2a01:5f9:1:2::/100",
            "2a02:1::5"]
    short = ["2a01::/16", "2a02:100::/24"]
    ok = ["2a01:4f8:c0c:1::10", "2a02:100:5::/48"]
    art, low = _compile(tmp_path, feed, short, ok)
    assert _slot(low, "2a01:4f8::1") & V6_TBL_HOSTS and not _slot(low, "2a01:4f8::1") & V6_TBL_MORE
    assert _slot(low, "2a01:5f9::1") & V6_TBL_MORE and not _slot(low, "2a01:5f9::1") & V6_TBL_LEN  # /100 too
    # one length (/48) under a painted /24: one probe, then the /24's own entry
    assert _slot(low, "2a02:100:5::1") == V6_TBL_MORE | V6_TBL_COVER | 48
    assert _slot(low, "2a01:900::1") & 0x3FFF and not _slot(low, "2a01:900::1") & (V6_TBL_MORE | V6_TBL_HOSTS)
    assert _slot(low, "2a03::1") == 0
    srcs = ["2a01:4f8:c0c:1::9", "2a01:4f8:c0c:1::10", "2a01:4f8:c0c:1::11",  # /128s and a neighbour
            "2a01:5f9::77", "2a01:5f9:1:2::1:2", "2a01:5f9:1:2:0:1::1", "2a01:5f9:2::1",  # /48, /100
            "2a01:900::1", "2a01:ffff::1", "2a00:ffff::1",  # inside / outside the /16
            "2a02:1::5", "2a02:1::6", "2a02:100:5::1", "2a02:100:6::1", "2a02:101::1"]
    hits = _agree(art, low, srcs)
    assert hits["feed"] and hits["short"] and hits["ok"]


def test_overflowing_host_bucket_spills_to_v6_exact(tmp_path: Path) -> None:
    """Six /128s hashing to one v6_hosts bucket (3 slots): three live in v6_exact; an
    unlisted address of the same bucket still passes."""
    require_kernel()
    rng = np.random.default_rng(5)
    hi = np.full(400_000, 0x2A00_0000_0000_0001, dtype=np.uint64)
    lo = rng.integers(1, 1 << 62, 400_000, dtype=np.uint64)
    b = v6_host_bucket_of(hi, lo, 10)  # 6 entries -> capacity(3) -> the 1024-bucket floor
    top = np.bincount(b).argmax()
    pick = lo[b == top][:7]
    assert len(pick) == 7
    addrs = [str(ipaddress.IPv6Address(0x2A00_0000_0000_0001 << 64 | int(x))) for x in pick]
    art, low = _compile(tmp_path, addrs[:6], ["2001:db8:9::/48"], ["2001:db8:8::1"])
    assert low.features["v6_host_bits"] == 10  # type: ignore[attr-defined]
    assert low.maps["v6_exact"].entries == 6 - V6_HOST_SLOTS  # type: ignore[attr-defined]
    hits = _agree(art, low, addrs)
    assert hits == {"feed": 12}  # six listed, as UDP and TCP; the seventh passes


def test_v6_only_kernel_test_writes_the_slot_and_bucket(tmp_path: Path) -> None:
    """kernel-test.txt for a /128-first list writes the v6_tbl24 group and v6_hosts bucket
    the program reads (lower.v6_path), not a v6_exact key."""
    art, _ = _compile(tmp_path, ["2a03::1", "2a00::/29"], ["2001:db8:9::/48"], ["2001:db8:8::1"])
    text = art.files["kernel-test.txt"].decode()  # type: ignore[attr-defined]
    assert "map-update v6_tbl24" in text and "map-update v6_hosts" in text
    assert "map-update v6_exact" not in text


def test_trie_only_slot_with_cover_and_no_search(tmp_path: Path) -> None:
    """Only /65-/127 prefixes under a /16: no binary search is generated, yet the MORE slot
    still answers with the /16's rule from its (/24, 24) bucket entry when the trie misses."""
    require_kernel()
    art, low = _compile(tmp_path, ["2a01:5f9:1:2::/100", "2a01:5f9:1:3::/72"], ["2a01::/16"], ["2001:db8:8::1"])
    assert not low.features["v6_tree"] and low.features["v6_buckets"]  # type: ignore[attr-defined]
    assert _slot(low, "2a01:5f9::1") == V6_TBL_MORE | V6_TBL_COVER
    hits = _agree(art, low, ["2a01:5f9:1:2::1", "2a01:5f9:1:3:ff::1", "2a01:5f9:1:4::1", "2a01:5f9::1",
                             "2a01:1::1", "2a02::1", "2001:db8:8::1"])
    assert hits["feed"] and hits["short"] and hits["ok"]
