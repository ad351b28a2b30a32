"""lower._order_by orders IPv6 (network, length) pairs as lexsort does, also when many
networks are listed at several lengths (the runs it re-sorts after one unstable argsort),
and the lowering built on it does not depend on the input order of such duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from bpfpolicy.kinds.xdp.lower import _order_by, _v6_hash


@pytest.mark.parametrize("ties", [0.0, 0.3, 1.0])
def test_order_by_matches_lexsort(ties: float) -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    plen = rng.choice([29, 32, 48, 56, 64], n).astype(np.uint8)
    net = rng.integers(0, 1 << 62, n, dtype=np.uint64) << np.uint64(2)
    dup = rng.random(n) < ties  # these reuse an earlier network (other length or the same)
    net[dup] = net[rng.integers(0, max(1, n // 50), int(dup.sum()))]
    o = _order_by(net, plen)
    ref = np.lexsort([plen, net])
    assert sorted(o.tolist()) == list(range(n))
    assert (net[o] == net[ref]).all() and (plen[o] == plen[ref]).all()


def test_v6_hash_merges_duplicates_whatever_their_order() -> None:
    net = np.array([5 << 40, 5 << 40, 5 << 40, 7 << 40, 5 << 40], dtype=np.uint64)
    plen = np.array([48, 24, 48, 40, 24], dtype=np.uint8)
    mask = np.array([1, 2, 4, 8, 16], dtype=np.uint64)
    for perm in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]):
        h = _v6_hash(net[perm], plen[perm], mask[perm])
        assert list(zip(h.net.tolist(), h.plen.tolist(), h.raw.tolist(), strict=True)) == [
            (5 << 40, 24, 18), (5 << 40, 48, 5), (7 << 40, 40, 8)]
