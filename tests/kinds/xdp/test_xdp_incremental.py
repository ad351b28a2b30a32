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
    previous = lower(_rules(listed, inline), None)
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
        defer = rng.random() < 0.5
        inc = incremental.lower_incremental("t", rules, None, defer=defer)
        ref = lower(_rules(parse_list(data), inline), None)
        for name, count in inc.pending.items():  # the manifest's entry counts before the splice
            assert count == ref.maps[name].entries, (op, name)
        if defer and rng.random() < 0.3:
            inc2 = incremental.lower_incremental("t", rules, None)  # never finished: flushed first
            assert inc2.patches == {}
            low = inc2.low
        else:
            low = inc.complete()
        was_patched = inc.patches is not None
        patched += was_patched
        assert set(low.maps) == set(ref.maps)
        for name, spec in ref.maps.items():
            assert low.maps[name].records == spec.records, (op, name)
            assert low.maps[name].max_entries == spec.max_entries
        assert np.array_equal(low.ruleset_masks, ref.ruleset_masks)
        for name, patch in (inc.patches or {}).items():  # previous contents + patch = new contents
            assert patch.base is not None
            rec = ref.maps[name].key_size + ref.maps[name].value_size
            got = _apply(previous.maps[name].records or b"", patch.upsert, patch.delete, rec, 4)
            assert got == ref.maps[name].records, (op, name)
        previous = ref
    assert patched >= 20  # the /32 edits really took the patch path


def _apply(records: bytes, upsert: bytes, delete: bytes, rec: int, ks: int) -> bytes:
    """A map's records (sorted by key bytes, as the artifact stores array maps) after
    writing `upsert` and removing `delete` — what the kernel map holds after a patch."""
    table = {records[i:i + ks]: records[i:i + rec] for i in range(0, len(records), rec)}
    for i in range(0, len(upsert), rec):
        table[upsert[i:i + ks]] = upsert[i:i + rec]
    for i in range(0, len(delete), ks):
        table.pop(delete[i:i + ks], None)
    return b"".join(sorted(table.values(), key=lambda r: r[:ks]))  # by key bytes, like the artifact
