"""Incremental lowering (kinds/xdp/incremental.py): after randomised one-line adds,
removes and edits of a list, the patched map contents equal a from-scratch `lower()`
byte for byte — IPv4 /32s (patched), IPv6 and prefixes (full path) alike."""

from __future__ import annotations

import random

import numpy as np

from bpfpolicy.kinds.xdp import incremental
from bpfpolicy.kinds.xdp.lower import Rule, lower
from bpfpolicy.kinds.xdp.sources import Sources, parse_list, patch_list


def _rules(listed: Sources, inline: Sources) -> list[Rule]:
    return [Rule(0, "listed", "drop", ("spec", "deny", 0), "p:1:1", listed),
            Rule(1, "ssh", "drop", ("spec", "deny", 1), "p:2:1", inline, {6}, [(22, 22)]),
            Rule(2, "ok", "pass", ("spec", "allow", 0), "p:3:1", parse_list(b"10.0.0.0/24\n10.1.2.3\n"))]


def _line(rng: random.Random) -> str:
    return rng.choice([
        f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}",  # v4 /32 (patched)
        f"10.{rng.randrange(4)}.{rng.randrange(256)}.0/24",  # v4 prefix (full path)
        f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}",  # v6 /128
        f"2001:db8:{rng.randrange(65536):x}::/48",  # v6 prefix
    ] + [f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}"] * 4)


def test_incremental_equals_from_scratch() -> None:
    rng = random.Random(15)
    lines = [f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(6000)]
    lines += [f"2001:db8:{rng.randrange(65536):x}::/48" for _ in range(50)] + ["10.3.3.0/24"]
    data = ("\n".join(lines) + "\n").encode()
    listed = parse_list(data)
    inline = parse_list(b"10.0.0.7\n10.2.2.2\n")
    incremental._states.clear()
    incremental.lower_incremental("t", _rules(listed, inline), None)
    patched = 0
    for _ in range(60):
        op, i = rng.choice(["add", "del", "edit"]), rng.randrange(len(lines))
        if op == "add":
            lines.insert(i, _line(rng))
        elif op == "del":
            del lines[i]
        else:
            lines[i] = _line(rng)
        new = ("\n".join(lines) + "\n").encode()
        listed = patch_list(data, listed, new) or parse_list(new)
        data = new
        rules = _rules(listed, inline)
        low, was_patched = incremental.lower_incremental("t", rules, None)
        patched += was_patched
        ref = lower(_rules(parse_list(data), inline), None)
        assert set(low.maps) == set(ref.maps)
        for name, spec in ref.maps.items():
            assert low.maps[name].records == spec.records, (op, name)
            assert low.maps[name].max_entries == spec.max_entries
        assert np.array_equal(low.ruleset_masks, ref.ruleset_masks)
    assert patched >= 20  # the /32 edits really took the patch path
