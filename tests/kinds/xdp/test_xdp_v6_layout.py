"""The IPv6 prefix layout (lower.py: hashed lengths + binary search with markers, /128
hash, /65-/127 LPM trie) against the Python reference on the real kernel: random mixed
prefix lengths with nesting across rules, and a bucket forced to overflow into v6_spill."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bpfpolicy.kinds.xdp import packets as pk
from bpfpolicy.kinds.xdp.lower import classify, lower, v6_bucket_of
from bpfpolicy.policy.compile import compile_paths

from helpers.kernel_fixtures import require_kernel
from helpers.xdp import load

DROP, PASS = 1, 2

POLICY = """\
apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {name: v6}
spec:
  interfaces: [eth0]
  deny:
    - name: feed
      sourceFiles: [list.txt]
    - name: web
      sources: [%s]
      protocols: [tcp]
      ports: [80]
  allow:
    - name: ok
      sources: [%s]
"""


def _net(rng: np.random.Generator, plen: int, inside: ipaddress.IPv6Network | None = None) -> ipaddress.IPv6Network:
    base = inside if inside is not None else ipaddress.IPv6Network("2000::/3")
    span = plen - base.prefixlen
    addr = int(base.network_address) | (int(rng.integers(0, 1 << min(span, 62))) << (128 - plen)
                                         if span > 0 else 0)
    return ipaddress.IPv6Network((addr, plen))


def _inside(rng: np.random.Generator, net: ipaddress.IPv6Network) -> str:
    host = 128 - net.prefixlen
    off = (int(rng.integers(0, 1 << 62)) << 66 | int(rng.integers(0, 1 << 62))) & ((1 << host) - 1)
    return str(ipaddress.IPv6Address(int(net.network_address) | off))


def _compile(tmp_path: Path, listing: list[str], web: list[str], ok: list[str]) -> tuple[object, object]:
    (tmp_path / "list.txt").write_text("\n".join(listing) + "\n")
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(POLICY % (", ".join(web), ", ".join(ok))))
    res = compile_paths([p])
    assert res.ok, [str(d) for d in res.diagnostics]
    from bpfpolicy.kinds.xdp.kind import XDPBlocklistKind
    from bpfpolicy.policy.load import load_file

    return res.artifacts[0][1], lower(XDPBlocklistKind().rules(load_file(p)[0]), None)


def _agree(art: object, low: object, srcs: list[str]) -> None:
    L = load(art)
    try:
        for src in srcs:
            for proto, dport in ((6, 80), (17, 53)):
                want, _ = classify(low, src, proto, dport)
                got = L.run(pk.packet(src, proto, dport)).retval
                assert got == (DROP if want == "drop" else PASS), (src, proto, dport, want)
    finally:
        L.close()


def test_random_mixed_prefixes_match_reference(tmp_path: Path) -> None:
    require_kernel()
    rng = np.random.default_rng(15)
    lens = [16, 29, 32, 33, 40, 44, 47, 48, 56, 60, 64, 80, 112, 128]
    feed = [_net(rng, int(rng.choice(lens))) for _ in range(300)]
    # nesting across rules and within the feed: sub-prefixes of feed entries
    web = [_net(rng, min(128, n.prefixlen + int(rng.integers(1, 20))), n) for n in feed[:25]]
    ok = [_net(rng, min(128, n.prefixlen + int(rng.integers(1, 30))), n) for n in feed[25:50]]
    feed += [_net(rng, min(128, n.prefixlen + int(rng.integers(1, 16))), n) for n in feed[50:90]]
    art, low = _compile(tmp_path, [str(n) for n in feed], [str(n) for n in web], [str(n) for n in ok])
    assert low.features["v6_tree"] and low.features["v6_prefix"] and low.features["v6_exact"]
    srcs = [_inside(rng, n) for n in feed + web + ok]
    srcs += [_inside(rng, ipaddress.IPv6Network("2000::/3")) for _ in range(100)]
    srcs += [str(n.network_address) for n in feed[:50]]  # the first address of each
    _agree(art, low, srcs)


def test_overflowing_bucket_spills_and_still_matches(tmp_path: Path) -> None:
    """Seven /48s hashing to one bucket (4 slots): three live in v6_spill."""
    require_kernel()
    rng = np.random.default_rng(3)
    cand = rng.integers(0, 1 << 45, 200_000, dtype=np.uint64) << np.uint64(16) | np.uint64(0x2 << 60)
    b = v6_bucket_of(cand, np.full(len(cand), 48, dtype=np.uint8), 10)
    top = np.bincount(b).argmax()
    pick = cand[b == top][:7]
    assert len(pick) == 7
    nets = [ipaddress.IPv6Network((int(x) << 64, 48)) for x in pick]
    art, low = _compile(tmp_path, [str(n) for n in nets], ["2001:db8:1::/48"], ["2001:db8:2::1"])
    assert low.features["v6_bucket_bits"] == 10 and low.maps["v6_spill"].entries == 3
    _agree(art, low, [_inside(rng, n) for n in nets] + [_inside(rng, nets[0].supernet(1))])


def _run_script(art: object) -> list[tuple[int, int]]:
    """Run kernel-test.txt as the QEMU matrix does: load the object with empty maps, apply
    only its map-update lines, then its prog-run vectors. (expected, got) per vector."""
    from bpfpolicy.kernel import maps
    from bpfpolicy.kernel.libbpf import BpfObject

    specs = {m["name"]: m for m in art.manifest["maps"]}  # type: ignore[attr-defined]
    obj = BpfObject.open_mem(art.files["prog.bpf.o"], "xdp_v6kt")  # type: ignore[attr-defined]
    try:
        obj.load()
        out = []
        for line in art.files["kernel-test.txt"].decode().splitlines():  # type: ignore[attr-defined]
            words = line.split()
            if words[:1] == ["map-update"]:
                m = specs[words[1]]
                maps.write_records(obj.map(words[1]).fd, bytes.fromhex(words[2] + words[3]),
                                   m["key_size"], m["value_size"], m["percpu"])
            elif words[:1] == ["prog-run"]:
                got = maps_run(obj.program(words[1]).fd, bytes.fromhex(words[3]))
                out.append((int(words[2]), got))
        return out
    finally:
        obj.close()


def maps_run(fd: int, data: bytes) -> int:
    from bpfpolicy.kernel import bpf

    return bpf.prog_test_run(fd, data, 1).retval


# IPv6-only deny lists whose first entry (the vector's source) is found through the
# hashed lengths: the script must write the buckets the binary search probes.
V6_ONLY = [
    ("nested /48 in /32", ["2001:db8:40::/48", "2001:db8::/32", "2a08::/29", "2a02:2::/64", "2a03::1"]),
    ("short prefix, longer lengths present", ["2a00::/29", "2a00:1:2::/48", "2a01::/56", "2a05::/64"]),
    ("/64 and a /128 elsewhere", ["2a02:2:3:4::/64", "2a02:9::9", "2a0f::/40"]),
]


@pytest.mark.parametrize("listing", [row[1] for row in V6_ONLY], ids=[row[0] for row in V6_ONLY])
def test_kernel_test_vectors_write_the_buckets_they_need(tmp_path: Path, listing: list[str]) -> None:
    require_kernel()
    (tmp_path / "list.txt").write_text("\n".join(listing) + "\n")
    p = tmp_path / "p.yaml"
    p.write_text("apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {name: v6o}\n"
                 "spec:\n  interfaces: [eth0]\n  deny:\n    - {name: feed, sourceFiles: [list.txt]}\n")
    res = compile_paths([p])
    assert res.ok, [str(d) for d in res.diagnostics]
    art = res.artifacts[0][1]
    assert "map-update v6_buckets" in art.files["kernel-test.txt"].decode()
    results = _run_script(art)
    assert results and results[0][0] == DROP and results == [(want, want) for want, _ in results]
