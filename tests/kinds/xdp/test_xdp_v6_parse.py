"""The vectorised IPv6 list parser (sources.py) agrees with `parse_cidr` (inet_pton) line
by line: same entries in file order, same errors on the same lines, on random lists in
every textual form and on the corner cases below."""

from __future__ import annotations

import ipaddress
import random

import pytest

from bpfpolicy.kinds.xdp.sources import MAX_LIST_ERRORS, parse_cidr, parse_list

# one row per corner case: valid forms the fast path must take, invalid ones it must leave
# to parse_cidr (which names the problem)
CORNERS = [
    "::", "::/0", "1::", "::1", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6::7:8",
    "1:2:3:4:5:6:7:8", "2001:0DB8:0000::/48", "8000::/1", "2001:db8::/048",
    "1::2::3", ":1::2", "1::2:", "1:::2", "12345::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7::8", "::1:2:3:4:5:6:7:8", "/48", ":", ":::", "g::1",
    "2001:db8::/48/3", "2001:db8::/", "2001:db8::/129", "2001:db8::/4a", "2001:db8:1::/32",
    "::ffff:1.2.3.4", "::ffff:1.2.3.0/120", "fe80::1%eth0",
    "10.0.0.0/8", "1.2.3.4", "1.2.3.4/33",
]


def _reference(lines: list[str]) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[int]]:
    v4, v6, bad = [], [], []
    for i, line in enumerate(lines, 1):
        try:
            family, addr, plen = parse_cidr(line)
        except ValueError:
            bad.append(i)
            continue
        (v6 if family == 6 else v4).append((addr, plen))
    return v4, v6, bad


def _random_lines(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        plen = rng.choice([0, 3, 29, 32, 48, 64, 65, 80, 127, 128])
        a = rng.getrandbits(128)
        for g in rng.sample(range(8), rng.randint(0, 6)):  # zero groups: "::" forms
            a &= ~(0xFFFF << (16 * g))
        if rng.random() < 0.97:
            a &= ~((1 << (128 - plen)) - 1)  # else host bits set: an error
        text = str(ipaddress.IPv6Address(a))
        text = rng.choice([text, text, text.upper(), ipaddress.IPv6Address(a).exploded])
        out.append(text if plen == 128 and rng.random() < 0.5 else f"{text}/{plen}")
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_vectorised_v6_matches_inet_pton(seed: int) -> None:
    rng = random.Random(seed)
    lines = _random_lines(rng, 3000) + CORNERS
    rng.shuffle(lines)
    got = parse_list(("\n".join(lines) + "\n").encode())
    v4, v6, bad = _reference(lines)
    assert got.v6 == v6
    assert list(zip(got.v4_addr.tolist(), got.v4_plen.tolist(), strict=True)) == v4
    assert got.error_count == len(bad)
    assert [line for line, _ in got.errors] == bad[:MAX_LIST_ERRORS]


@pytest.mark.parametrize("line", CORNERS)
def test_corner_case_alone(line: str) -> None:
    got = parse_list(f"# x\n{line}\n".encode())
    v4, v6, bad = _reference([line])
    assert (got.v6, got.error_count) == (v6, len(bad))
    if bad:
        assert got.errors[0][0] == 2 and got.errors[0][1] == str(_err(line))


def _err(line: str) -> str:
    try:
        parse_cidr(line)
    except ValueError as e:
        return str(e)
    raise AssertionError(line)
