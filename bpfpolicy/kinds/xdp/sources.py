"""Address parsing for XDPBlocklist: inline `sources` and `sourceFiles` lists.

Lists can hold a million lines, and `ipaddress` costs ~2 µs per line, so:

* a vectorised numpy parser handles the common shape — IPv4 addresses or CIDRs, one per
  line, optional `#` comments and surrounding blanks — in ~50 ms per million lines;
* anything else (IPv6 lines, typos) goes through a per-line parser built on
  `socket.inet_pton`, which also produces the precise `line: message` errors.

Addresses are kept as integers (IPv4: numpy uint32 in host order; IPv6: Python ints).

A list file is data from the policy tree, read by root on the host (`open_list`): it must
resolve inside the tree root (the directory `validate`/`compile`/the controller was
given, or a single file argument's directory) — no absolute paths, no `..` or symlink out
of the tree, checked on the resolved path and again on the opened fd — and be a regular
file (no FIFO, device or /proc file) of at most MAX_LIST_BYTES. Errors quote at most a
short escaped token of a bad line (`token()`), never the file's contents at large.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_LIST_ERRORS = 20
# 256 MiB: ~16M IPv4 lines (16 bytes each), an order of magnitude above the largest public
# blocklists (FireHOL level1-4 together are < 1M lines); bounds the read and numpy's
# working memory (~10x the file), and makes a runaway file an error instead of an OOM.
MAX_LIST_BYTES = 256 * 2**20
# Errors quote at most this many characters of a bad line: enough to spot a typo, never
# enough to leak a file that was not meant to be a list.
TOKEN_CHARS = 40


def token(text: str) -> str:
    """A short, escaped, double-quoted excerpt of `text` for an error message."""
    short = text[:TOKEN_CHARS]
    if short.isprintable():
        out = short
    else:
        out = repr(short)[1:-1]
    return f'"{out}{"…" if len(text) > TOKEN_CHARS else ""}"'


def _u64(values: Iterable[int] = ()) -> np.ndarray:
    return np.array(list(values), dtype=np.uint64)


@dataclass
class Sources:
    """Parsed addresses of one rule (or one list file). IPv6 entries are three parallel
    arrays (top and bottom 64 bits in host order, prefix length): a million of them
    lower with numpy instead of a million Python ints."""

    v4_addr: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))
    v4_plen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    v6_hi: np.ndarray = field(default_factory=_u64)
    v6_lo: np.ndarray = field(default_factory=_u64)
    v6_plen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, message)
    error_count: int = 0

    def extend(self, other: Sources) -> None:
        self.v4_addr = np.concatenate([self.v4_addr, other.v4_addr])
        self.v4_plen = np.concatenate([self.v4_plen, other.v4_plen])
        self.v6_hi = np.concatenate([self.v6_hi, other.v6_hi])
        self.v6_lo = np.concatenate([self.v6_lo, other.v6_lo])
        self.v6_plen = np.concatenate([self.v6_plen, other.v6_plen])

    def set_v6(self, entries: list[tuple[int, int]]) -> None:
        """Replace the IPv6 entries with (address int, prefix length) pairs."""
        self.v6_hi = _u64(a >> 64 for a, _ in entries)
        self.v6_lo = _u64(a & ((1 << 64) - 1) for a, _ in entries)
        self.v6_plen = np.array([p for _, p in entries], dtype=np.uint8)

    @property
    def v6(self) -> list[tuple[int, int]]:
        """(address int, prefix length) pairs: for references and small lists only."""
        return [(h << 64 | lo, p) for h, lo, p in
                zip(self.v6_hi.tolist(), self.v6_lo.tolist(), self.v6_plen.tolist(), strict=True)]

    @property
    def count(self) -> int:
        return len(self.v4_addr) + len(self.v6_plen)


# --------------------------------------------------------------------------- one CIDR


def v4_text(addr: int, plen: int | None = None) -> str:
    s = socket.inet_ntop(socket.AF_INET, int(addr).to_bytes(4, "big"))
    return s if plen is None else f"{s}/{plen}"


def v6_text(addr: int, plen: int | None = None) -> str:
    s = socket.inet_ntop(socket.AF_INET6, int(addr).to_bytes(16, "big"))
    return s if plen is None else f"{s}/{plen}"


def parse_cidr(text: str) -> tuple[int, int, int]:
    """`"192.0.2.0/24"` -> (4, address int, 24); a bare address is a /32 or /128.
    Raises ValueError with a user-facing message (host bits set names the network)."""
    s = text.strip()
    addr_s, sep, plen_s = s.partition("/")
    family = 6 if ":" in addr_s else 4
    bits = 128 if family == 6 else 32
    try:
        raw = socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET, addr_s)
    except OSError:
        kind = "IPv6" if family == 6 else "IPv4"
        raise ValueError(f'{token(s)} is not a valid {kind} address or CIDR') from None
    if sep:
        if not plen_s.isdigit() or len(plen_s) > 3:
            raise ValueError(f'{token(s)}: prefix length {token(plen_s)} is not a number')
        plen = int(plen_s)
        if plen > bits:
            raise ValueError(f'{token(s)}: prefix length {plen} is out of range (0-{bits})')
    else:
        plen = bits
    addr = int.from_bytes(raw, "big")
    host = (1 << (bits - plen)) - 1
    if addr & host:
        net = addr & ~host
        text_net = v6_text(net, plen) if family == 6 else v4_text(net, plen)
        raise ValueError(f'{token(s)} has host bits set: the network is {text_net}')
    return family, addr, plen


# --------------------------------------------------------------------------- lists

_COMMENT = re.compile(rb"#[^\n]*")
_EDGE_BLANKS = re.compile(rb"^[ \t]+|[ \t\r]+$", re.M)
_V4_ONLY = bytes(range(256)).translate(None, b"0123456789./\n")


def parse_list(data: bytes) -> Sources:
    """Parse a list file's bytes: one address/CIDR per line, `#` comments, blank lines."""
    cleaned = _COMMENT.sub(b"", data) if b"#" in data else data
    if b" " in cleaned or b"\t" in cleaned or b"\r" in cleaned:
        cleaned = _EDGE_BLANKS.sub(b"", cleaned)
    v6_buf = v6_lines = None
    if b":" in cleaned and b"." not in cleaned and not _has_blank_line(cleaned):
        # an IPv6-only list (no IPv4 line can lack a '.'): every line goes to the IPv6
        # parser as is, no split; a line without ':' is an error it leaves to parse_cidr
        text = cleaned if cleaned.endswith(b"\n") else cleaned + b"\n"
        v6_buf = np.frombuffer(text, dtype=np.uint8)
        v6_lines = np.arange(1, np.count_nonzero(v6_buf == _NL) + 1)  # ~8x bytes.count
        cleaned = b""
    elif b":" in cleaned:  # IPv6 lines go to their own parser; blank them out for the v4 one
        cleaned, v6_buf, v6_lines = _split_v6(cleaned)
    fast = _parse_v4_vectorised(cleaned)
    out = _parse_slow(cleaned) if fast is None else Sources(v4_addr=fast[0], v4_plen=fast[1])
    if v6_buf is not None and v6_lines is not None:
        _parse_v6_lines(out, v6_buf, v6_lines)
    return out


def _has_blank_line(data: bytes) -> bool:
    return data.startswith(b"\n") or b"\n\n" in data


def _split_v6(data: bytes) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(data with every line holding a ':' blanked, those lines' bytes each ending in a
    newline, their 1-based line numbers). Line numbers of both halves stay the file's."""
    buf = np.frombuffer(data if data.endswith(b"\n") else data + b"\n", dtype=np.uint8)
    is_nl = buf == 10
    nl = np.flatnonzero(is_nl)
    colons = np.flatnonzero(buf == 58)
    six = np.zeros(len(nl), dtype=bool)
    six[np.cumsum(is_nl, dtype=np.int32)[colons]] = True  # newlines before = line index
    byte6 = np.repeat(six, np.diff(nl, prepend=-1))
    return buf[~byte6 | is_nl].tobytes(), buf[byte6], np.flatnonzero(six) + 1


def _parse_slow(data: bytes) -> Sources:
    out = Sources()
    a4: list[int] = []
    p4: list[int] = []
    v6: list[tuple[int, int]] = []
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        text = raw.decode("utf-8", "replace").split("#", 1)[0].strip()
        if text:
            _slow_line(out, lineno, text, a4, p4, v6)
    out.v4_addr = np.array(a4, dtype=np.uint32)
    out.v4_plen = np.array(p4, dtype=np.uint8)
    out.set_v6(v6)
    return out


def _slow_line(out: Sources, lineno: int, text: str, a4: list[int], p4: list[int],
               v6: list[tuple[int, int]]) -> None:
    try:
        family, addr, plen = parse_cidr(text)
    except ValueError as e:
        out.error_count += 1
        if len(out.errors) < MAX_LIST_ERRORS:
            out.errors.append((lineno, str(e)))
        return
    if family == 6:
        v6.append((addr, plen))
    else:
        a4.append(addr)
        p4.append(plen)


_COLON, _SLASH, _NL = 58, 47, 10


def _parse_v6_lines(out: Sources, buf: np.ndarray, linenos: np.ndarray) -> None:
    """IPv6 lines (each ending in a newline) into `out`: the common shape — hex groups,
    one optional "::", an optional decimal "/len", no host bits — vectorised (~0.3 s per
    million lines on a quiet host); every other line (embedded IPv4, typos) through `parse_cidr`, which
    explains what is wrong. Entries keep file order."""
    hi, lo, plen, ok = _v6_vectorised(buf, len(linenos))
    slow_idx = np.flatnonzero(~ok)
    if not len(slow_idx):  # the usual case: no per-line work, no reordering
        out.v6_hi = np.concatenate([out.v6_hi, hi]) if len(out.v6_hi) else hi
        out.v6_lo = np.concatenate([out.v6_lo, lo]) if len(out.v6_lo) else lo
        out.v6_plen = np.concatenate([out.v6_plen, plen]) if len(out.v6_plen) else plen
        return
    entries: list[tuple[int, int]] = []
    slow_at: list[int] = []
    extra = Sources()  # its own first errors: merged with the IPv4 half's by line below
    if len(slow_idx):
        nl = np.flatnonzero(buf == _NL)
        starts = np.concatenate([[0], nl[:-1] + 1])
        for i in slow_idx.tolist():
            text = buf[starts[i]:nl[i]].tobytes().decode("utf-8", "replace")
            before = len(entries)
            _slow_line(extra, int(linenos[i]), text, [], [], entries)
            if len(entries) > before:
                slow_at.append(i)
    good = np.flatnonzero(ok)
    order_key = np.concatenate([good, np.array(slow_at, dtype=np.int64)])
    extra.set_v6(entries)
    order = np.argsort(order_key, kind="stable")
    out.v6_hi = np.concatenate([out.v6_hi, np.concatenate([hi[good], extra.v6_hi])[order]])
    out.v6_lo = np.concatenate([out.v6_lo, np.concatenate([lo[good], extra.v6_lo])[order]])
    out.v6_plen = np.concatenate([out.v6_plen, np.concatenate([plen[good], extra.v6_plen])[order]])
    out.errors = sorted(out.errors + extra.errors)[:MAX_LIST_ERRORS]
    out.error_count += extra.error_count


_CLS = np.full(256, 32, dtype=np.uint8)  # byte -> hex value, or a separator class, or 32 (other)
_CLS[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10, dtype=np.uint8)
_CLS[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_CLS[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_C_COLON, _C_NL, _C_OTHER = 16, 18, 32
_CLS[_COLON], _CLS[_SLASH], _CLS[_NL] = _C_COLON, 17, _C_NL
_V6_CHARS = b"0123456789abcdefABCDEF:/\n"
# digits kept per token length, byte-swapped as the group values
_SWAPPED_LEN_MASK = np.array([0, 0xF, 0xFF, 0xFFF, 0xFFFF], dtype=np.uint16).byteswap()


def _v6_vectorised(buf: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hi, lo, plen, ok) per line of `buf`; a line is ok only when this parser is sure
    inet_pton agrees (anything unusual is left to the per-line parser).

    Works on tokens, not bytes: the separators (':', '/', newline) are found in one pass,
    each token is the run of bytes before one, so everything after that first pass is
    over ~8 tokens per line instead of ~25 bytes."""
    pad = np.empty(len(buf) + 3, dtype=np.uint8)  # 3 newlines before the first token's window
    pad[:3] = _NL
    pad[3:] = buf
    # the 4 bytes ending at each byte as one little-endian u32 (an unaligned stride-1 view):
    # a token's window is one 1-D gather, not a row gather of a 2-D view
    words = np.ndarray(shape=(len(buf),), dtype="<u4", buffer=pad, strides=(1,))
    bad = np.zeros(n, dtype=bool)
    if bytes(buf).translate(None, _V6_CHARS):  # junk bytes ('.', spaces, '%', ...): bad lines
        cls = _CLS[buf]
        bad[np.cumsum(cls == _C_NL)[np.flatnonzero(cls == _C_OTHER)]] = True
        is_sep = cls >= _C_COLON  # junk separates tokens too
    else:  # only hex digits, ':', '/' and newlines: the separators are the bytes < '0' and ':'
        is_sep = (buf < 48) | (buf == _COLON)
    sep = np.flatnonzero(is_sep)  # every line ends in a newline: the last is one
    c = buf[sep]
    length = np.diff(sep, prepend=-1) - 1
    is_nl = c == _NL
    nl_tok = np.flatnonzero(is_nl)  # the token ending each line
    line = np.repeat(np.arange(n, dtype=np.int32), np.diff(nl_tok, prepend=-1))
    start_c = np.empty_like(c)  # the separator before each token (newline at a line start)
    start_c[0] = _NL
    start_c[1:] = c[:-1]
    # "/len": a token after '/', ending the line, 1-3 decimal digits, no leading zero
    is_len = start_c == _SLASH
    lt = np.flatnonzero(is_len)
    ll = length[lt]
    wl = words[sep[lt] - 1]
    d0 = (wl >> 24).astype(np.int16) - 48
    d1 = np.where(ll > 1, ((wl >> 16) & 0xFF).astype(np.int16) - 48, 0)
    d2 = np.where(ll > 2, ((wl >> 8) & 0xFF).astype(np.int16) - 48, 0)
    dec = d0 + 10 * d1 + 100 * d2
    len_bad = ~is_nl[lt] | (ll < 1) | (ll > 3)
    for d in (d0, d1, d2):
        len_bad |= (d < 0) | (d > 9)
    len_bad |= (ll > 1) & (np.where(ll == 2, d1, d2) == 0)  # "/048"
    len_bad |= dec > 128
    bad[line[lt[len_bad]]] = True
    dec = np.clip(dec, 0, 255)  # a bad line's garbage stays a valid shift below
    plen = np.full(n, 128, dtype=np.int64)
    plen[line[lt]] = dec
    nsl = np.bincount(line[lt], minlength=n)
    bad |= nsl > 1
    # address groups: every other token
    grp = ~is_len
    # empty group tokens (a few per line at most): only the gap inside "::" and the empty
    # edge next to a "::" at a line start or end are fine
    e = np.flatnonzero(grp & (length == 0))
    es, ec = start_c[e], c[e]
    e_dbl = (es == _COLON) & (ec == _COLON)
    is_dbl = np.zeros(len(sep) + 1, dtype=bool)  # one spare: e + 1 may be the end
    is_dbl[e[e_dbl]] = True
    lead = (es == _NL) & (ec == _COLON) & is_dbl[e + 1]  # "::..." at a line start
    trail = (es == _COLON) & (ec != _COLON) & is_dbl[e - 1]  # "...::" at the address end
    bad[line[e[~(e_dbl | lead | trail)]]] = True
    dt = e[e_dbl]  # the "::" gaps
    ndbl = np.bincount(line[dt], minlength=n)
    bad |= ndbl > 1
    g = np.flatnonzero(grp & (length > 0))
    bad[line[g[length[g] > 4]]] = True
    g_line = line[g]
    ngroups = np.bincount(g_line, minlength=n)
    has_dbl = ndbl == 1
    bad |= np.where(has_dbl, ngroups > 7, ngroups != 8)
    # each group's slot (8 per line) from one cumulative sum over the tokens: a group is 1
    # wide, a "::" gap as wide as the groups it stands for, and the next line's first token
    # adds what makes this line 8 wide, so a valid line's groups land on 8 * line + position
    # with no per-line ranks
    gap = np.where(ndbl == 1, 8 - ngroups, 0)
    width = np.zeros(len(sep), dtype=np.int32)
    width[g] = 1
    width[dt] = gap[line[dt]]
    width[nl_tok[:-1] + 1] += (8 - ngroups - ndbl * gap)[:-1]  # a line's first token is no gap
    slot = np.cumsum(width, dtype=np.int32)[g] - 1  # 8 slots a line, < 2**28 lines (MAX_LIST_BYTES)
    # a group's hex value from its 4-byte window, all 4 bytes at once in a u32: a hex digit's
    # value is (byte & 15) + 9 * (byte >> 6 & 1) ('a'/'A' = 0x61/0x41 -> 1 + 9); the nibbles
    # are packed byte-swapped (first two digits in the low byte) so the slots read as
    # big-endian 64-bit halves, and masked to the token's length (the bytes before it are
    # separators or another token's; a token's own bytes are always hex digits)
    w = words[sep[g] - 1]
    x = (w & np.uint32(0x0F0F0F0F)) + np.uint32(9) * ((w >> np.uint32(6)) & np.uint32(0x01010101))
    x &= np.uint32(0x0F0F0F0F)  # a non-hex byte ('g' -> 16) must not spill into a digit's nibble
    y = ((x << np.uint32(4)) | (x >> np.uint32(8))) & np.uint32(0x00FF00FF)
    val = (y | (y >> np.uint32(8))).astype(np.uint16) & _SWAPPED_LEN_MASK[np.minimum(length[g], 4)]
    if bad.any():  # a bad line's slots may run into its neighbours': leave them out
        keep = ~bad[g_line]
        slot, val = slot[keep], val[keep]
    slots = np.zeros(8 * n, dtype=np.uint16)
    slots[slot] = val
    halves = slots.view(">u8")
    hi, lo = halves[0::2].astype(np.uint64), halves[1::2].astype(np.uint64)
    host_hi = np.where(plen >= 64, np.uint64(0),
                       ~np.uint64(0) >> np.minimum(plen, 63).astype(np.uint64))
    host_lo = np.where(plen <= 64, ~np.uint64(0),
                       (np.uint64(1) << (128 - np.clip(plen, 65, 128)).astype(np.uint64)) - np.uint64(1))
    host_lo = np.where(plen == 128, np.uint64(0), host_lo)
    bad |= ((hi & host_hi) | (lo & host_lo)) != 0  # host bits set: the slow path names the network
    return hi, lo, np.minimum(plen, 255).astype(np.uint8), ~bad


def _parse_v4_vectorised(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """IPv4 `a.b.c.d[/n]` lines (blank lines allowed) -> (addresses, prefix lengths), or
    None if anything looks off (the slow parser then explains what)."""
    if not data.strip(b"\n"):
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.uint8)
    if data.translate(None, b"0123456789./\n"):
        return None
    buf = np.frombuffer(data + b"\n", dtype=np.uint8)
    digit = (buf - np.uint8(48)) < 10  # uint8 wrap-around: one compare
    edge = digit[1:] != digit[:-1]
    turns = np.flatnonzero(edge) + 1  # alternating: digit run starts, then ends+1
    if digit[0]:
        turns = np.concatenate([[0], turns])
    starts, ends = turns[0::2], turns[1::2] - 1
    length = ends - starts + 1
    if len(starts) == 0 or len(starts) != len(ends) or length.max() > 3:
        return None
    if np.any(buf[starts[length > 1]] == 48):
        return None  # leading zeros ("010.1.1.1"): inet_pton refuses them, so do we
    # value = last digit + 10 * the one before + 100 * the one before that (when present);
    # np.where instead of fancy-indexed updates: ~10x faster on 4M numbers
    val = buf[ends].astype(np.int32) - 48
    val += np.where(length > 1, buf[ends - 1].astype(np.int32) - 48, 0) * 10
    val += np.where(length > 2, buf[ends - 2].astype(np.int32) - 48, 0) * 100
    sep = buf[ends + 1]  # the character after each number
    # only digits and . / \n are present, so a number is always preceded by a separator
    # (or starts the file); separators must be single: "1..2" leaves a gap
    if len(starts) > 1 and np.any((sep[:-1] != ord("\n")) & (starts[1:] != ends[:-1] + 2)):
        return None
    # group numbers into lines and check the shape: . . . then \n, or . . . / then \n
    line_end = sep == ord("\n")
    ends_idx = np.flatnonzero(line_end)
    counts = np.diff(np.concatenate([[-1], ends_idx]))
    if len(ends_idx) == 0 or ends_idx[-1] != len(sep) - 1 or np.any((counts != 4) & (counts != 5)):
        return None
    first = np.concatenate([[0], ends_idx[:-1] + 1])
    line_start = starts[first]
    if np.any(buf[np.maximum(line_start - 1, 0)][line_start > 0] != ord("\n")):
        return None  # a line starting with "." or "/"
    dots_ok = (sep[first] == 46) & (sep[first + 1] == 46) & (sep[first + 2] == 46)
    cidr = counts == 5
    if not np.all(dots_ok) or np.any(sep[first[cidr] + 3] != ord("/")):
        return None
    o = [val[first + k] for k in range(4)]  # four 1-D gathers beat one 2-D fancy index
    if any(bool(np.any(x > 255)) for x in o):
        return None
    o = [x.astype(np.uint32) for x in o]
    addr = (o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]
    plen = np.full(len(first), 32, dtype=np.int64)
    plen[cidr] = val[first[cidr] + 4]
    if np.any(plen > 32):
        return None
    hostmask = ((np.uint64(1) << (32 - plen).astype(np.uint64)) - np.uint64(1)).astype(np.uint32)
    if np.any(addr & hostmask):
        return None
    return addr, plen.astype(np.uint8)


_cache: dict[tuple[str, int, int, int, int], Sources] = {}
# the last good parse of each list file (bytes, Sources): an edit re-parses only the lines
# that differ (patch_list), which is what makes a one-line change cheap at 1M lines
_last: dict[str, tuple[bytes, Sources]] = {}
# beyond this many changed entries a full parse is as cheap as the positional patch
PATCH_MAX_ENTRIES = 4096


class UnsafeListFile(ValueError):
    """A sourceFiles entry the policy may not read (outside the tree, not a regular
    file, too large). The message names the entry, never the file's contents."""


_ROOTS: ContextVar[tuple[Path, ...] | None] = ContextVar("bpfpolicy_tree_roots", default=None)


def tree_roots(paths: Iterable[str | Path]) -> tuple[Path, ...]:
    """The policy tree roots of command arguments: a directory is its own root, a single
    file's root is its directory."""
    out = []
    for raw in paths:
        p = Path(raw)
        out.append(Path(os.path.realpath(p if p.is_dir() else p.parent)))
    return tuple(out)


@contextlib.contextmanager
def policy_tree(paths: Iterable[str | Path]) -> Iterator[None]:
    """Fix the tree roots for everything validated inside (the controller passes its
    source dirs here and then compiles a filtered file list)."""
    tok = _ROOTS.set(tree_roots(paths))
    try:
        yield
    finally:
        _ROOTS.reset(tok)


def current_roots() -> tuple[Path, ...] | None:
    return _ROOTS.get()


def root_for(file: str | Path, roots: Iterable[Path] | None = None) -> Path:
    """The tree root a policy file belongs to: the deepest given root holding it, else
    (a file outside every root) its own directory."""
    real = Path(os.path.realpath(file))
    best = None
    for r in roots or ():
        if real.is_relative_to(r) and (best is None or len(r.parts) > len(best.parts)):
            best = r
    return best if best is not None else real.parent


def _inside(path: str | Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def open_list(root: Path, rel: str, base: Path) -> Sources:
    """Parse the list file `rel` (relative to `base`, the policy file's directory) which
    must stay inside the tree `root`. Raises UnsafeListFile or OSError."""
    if "\0" in rel:
        raise UnsafeListFile(f"{token(rel)} contains a NUL byte")
    if os.path.isabs(rel):
        raise UnsafeListFile(f"{token(rel)} is an absolute path; lists must be inside the policy tree {root}")
    candidate = Path(base) / rel
    if not _inside(candidate, root):  # `..` or a symlink out of the tree
        raise UnsafeListFile(f"{token(rel)} resolves outside the policy tree {root}")
    real = os.path.realpath(candidate)
    # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the final
    # component was resolved above, a symlink swapped in since then is refused
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeListFile(f"{token(rel)} is not a regular file")
        if not _inside(f"/proc/self/fd/{fd}", root):  # what we opened, after any race
            raise UnsafeListFile(f"{token(rel)} resolves outside the policy tree {root}")
        if st.st_size > MAX_LIST_BYTES:
            raise UnsafeListFile(f"{token(rel)} is {st.st_size / 2**20:.0f} MiB; source lists are "
                                 f"limited to {MAX_LIST_BYTES // 2**20} MiB")
        key = (real, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        hit = _cache.get(key)
        if hit is None:
            data = _read_bounded(fd, st.st_size)
            prev = _last.get(real)
            hit = (patch_list(prev[0], prev[1], data) if prev else None) or parse_list(data)
            if len(_cache) > 16:
                _cache.clear()
                _last.clear()
            _cache[key] = hit
            if not hit.errors:
                _last[real] = (data, hit)
        return hit
    finally:
        os.close(fd)


def _read_bounded(fd: int, size: int) -> bytes:
    """Read the whole file, but never more than MAX_LIST_BYTES (it may grow meanwhile)."""
    chunks = []
    total = 0
    with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
        if size:
            first = f.read(size)
            chunks.append(first)
            total = len(first)
        while True:
            more = f.read(min(1 << 20, MAX_LIST_BYTES + 1 - total))
            if not more:
                break
            chunks.append(more)
            total += len(more)
            if total > MAX_LIST_BYTES:
                raise UnsafeListFile(f"grew beyond {MAX_LIST_BYTES // 2**20} MiB while being read")
    return b"".join(chunks)


def load_list(path: Path) -> Sources:
    """Parse a list file with `path`'s directory as the tree (callers that know the tree
    root use `open_list`). Raises UnsafeListFile / OSError."""
    path = Path(path)
    return open_list(path.parent, path.name, path.parent)


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common prefix of two uint8 arrays, compared 1 MiB at a time."""
    m, step, i = min(len(a), len(b)), 1 << 20, 0
    while i < m:
        j = min(m, i + step)
        if not np.array_equal(a[i:j], b[i:j]):
            return i + int(np.argmax(a[i:j] != b[i:j]))
        i = j
    return m


def _changed_lines(old: bytes, new: bytes) -> tuple[int, int, int]:
    """(start, old_end, new_end): the byte ranges of whole lines that differ between two
    versions of a list (everything before `start` and after the ends is identical)."""
    a, b = np.frombuffer(old, np.uint8), np.frombuffer(new, np.uint8)
    p = _common_prefix(a, b)
    p = old.rfind(b"\n", 0, p) + 1  # back to a line start
    s = _common_prefix(a[p:][::-1], b[p:][::-1])
    # the suffix must begin at a line start in both: after a newline (or be empty)
    while s and old[len(old) - s - 1:len(old) - s] != b"\n":
        s -= 1
    return p, len(old) - s, len(new) - s


def _replace(arrays: list[np.ndarray], gone: list[np.ndarray], came: list[np.ndarray]) -> list[np.ndarray] | None:
    """Parallel `arrays` with one instance of each entry of `gone` removed and `came`
    inserted where the first removed one was (at the end when nothing was removed), so a
    one-line edit stays a one-position change for lowering's positional diff."""
    drop: list[int] = []
    for row in zip(*gone, strict=True):
        hit = np.ones(len(arrays[0]), dtype=bool)
        for x, v in zip(arrays, row, strict=True):
            hit &= x == v
        if drop:
            hit[drop] = False
        if not hit.any():
            return None
        drop.append(int(np.argmax(hit)))
    at = min(drop) if drop else len(arrays[0])
    out = [np.delete(x, drop) for x in arrays] if drop else arrays
    at -= sum(1 for d in drop if d < at)
    return [np.insert(x, at, c.astype(x.dtype)) for x, c in zip(out, came, strict=True)]


def patch_list(old_data: bytes, old: Sources, data: bytes) -> Sources | None:
    """`data` parsed by re-parsing only the lines that differ from `old_data` (whose parse
    is `old`): one instance of each of the old middle's entries is removed (a list is a
    multiset) and the new middle's put in its place. Lowering sorts, so only the multiset
    matters. None when a full parse is needed: a middle has errors (line numbers would be
    wrong) or is large."""
    start, old_end, new_end = _changed_lines(old_data, data)
    if max(old_end, new_end) - start > PATCH_MAX_ENTRIES * 16:
        return None
    gone, came = parse_list(old_data[start:old_end]), parse_list(data[start:new_end])
    if gone.errors or came.errors or gone.error_count or came.error_count:
        return None
    v4 = _replace([old.v4_addr, old.v4_plen], [gone.v4_addr, gone.v4_plen], [came.v4_addr, came.v4_plen])
    v6 = _replace([old.v6_hi, old.v6_lo, old.v6_plen], [gone.v6_hi, gone.v6_lo, gone.v6_plen],
                  [came.v6_hi, came.v6_lo, came.v6_plen])
    if v4 is None or v6 is None:
        return None
    return Sources(v4_addr=v4[0], v4_plen=v4[1], v6_hi=v6[0], v6_lo=v6[1], v6_plen=v6[2])
