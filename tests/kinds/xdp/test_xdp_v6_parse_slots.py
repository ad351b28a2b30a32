"""The vectorised IPv6 parser places every group by one cumulative sum over the whole file
(8 slots a line): a malformed line (too many groups, two "::", junk) next to valid "::"
lines must neither shift nor overwrite its neighbours' groups, and errors keep their
`line` numbers. Each case is compared with `parse_cidr` (inet_pton) line by line."""

from __future__ import annotations

import random

import pytest

from bpfpolicy.kinds.xdp.sources import parse_cidr, parse_list

BAD = ["1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8:9:a:b:c:d:e:f:1:2", "1::2::3", "1::2::3::4::5",
       "1:2:3:4:5:6:7::8", "::1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7", "abcd:.::1", "1::g",
       "12345::1", "::/129", "2001:db8::/48/3"]
GOOD = ["1::", "::1", "::", "1:2:3:4:5:6:7:8", "ffff::ffff", "1:2::7:8", "2001:db8:ab::/48",
        "a:b:c:d::/64", "::ffff:0:0/96", "fe80::1:2/127", "8000::/1"]


def _expect(lines: list[str]) -> tuple[list[tuple[int, int]], list[int]]:
    v6, bad = [], []
    for i, line in enumerate(lines, 1):
        try:
            _, addr, plen = parse_cidr(line)
            v6.append((addr, plen))
        except ValueError:
            bad.append(i)
    return v6, bad


@pytest.mark.parametrize("seed", range(4))
def test_bad_lines_leave_neighbours_in_place(seed: int) -> None:
    rng = random.Random(seed)
    lines = [rng.choice(BAD if i % 2 else GOOD) for i in range(400)]
    rng.shuffle(lines)
    got = parse_list(("\n".join(lines) + "\n").encode())
    v6, bad = _expect(lines)
    assert got.v6 == v6
    assert got.error_count == len(bad)
    assert [ln for ln, _ in got.errors] == bad[:len(got.errors)]


def test_bad_lines_at_both_ends() -> None:
    lines = ["1:2:3:4:5:6:7:8:9:a", "::2", "1::2::3", "3::", "1:2:3:4:5:6:7:8:9"]
    got = parse_list(("\n".join(lines) + "\n").encode())
    assert got.v6 == [(2, 128), (3 << 112, 128)]
    assert [ln for ln, _ in got.errors] == [1, 3, 5]


def test_junk_bytes_before_a_line_do_not_leak_into_its_first_group() -> None:
    # a group's value is read from the 4 bytes ending it; for a line's first group those
    # include the previous line's last bytes ('g', 'z', '@' are not hex digits)
    lines = ["1::g", "a:b:c:d::/64", "zzz", "f::", "@@", "e::1", "1::xyz", "b::"]
    got = parse_list(("\n".join(lines) + "\n").encode())
    assert got.v6 == [(0x000a000b000c000d << 64, 64), (0xF << 112, 128), (0xE << 112 | 1, 128),
                      (0xB << 112, 128)]
    assert [ln for ln, _ in got.errors] == [1, 3, 5, 7]
