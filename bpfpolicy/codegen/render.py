"""Shared code generation: one jinja2 environment over `codegen/`, and the one escaping
layer every string from a policy (or from a policy file's path) goes through on its way
into generated C. Policy text is data: it reaches C only as

* `c_string`      — a C string literal: printable ASCII except `"`, `\\` and `?` is kept,
                    every other byte (of the UTF-8 / surrogate-escaped encoding) is an octal
                    escape; the literal's bytes are exactly the input's bytes.
* `c_ident`       — a C identifier: `[A-Za-z0-9_]` only, prefixed, suffixed with a hash of
                    the input so two different inputs never collide.
* `c_comment`     — human-readable text for inside `/* ... */`, drawn from a strict
                    whitelist (`COMMENT_SAFE`): no `/`, `*`, `\\`, `?`, quotes, `@`, control
                    characters or newlines — so it can never end the comment, continue a
                    line, form a trigraph or look like a `@policy` marker — and bounded.
* `policy_marker` — the `@policy #FILE:LINE:COL PATH` marker that lets build errors and
                    verifier rejections name the rule behind generated code. FILE is an
                    index into the `@policy-files` table `render` appends to the source;
                    file names and the path are percent-encoded over the same inert
                    alphabet, and decoded again by `find_marker`.

Nothing user-controlled may reach a preprocessor line, a `SEC("...")` string or a
`#define` except through `c_string`/`c_ident`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote_to_bytes

import jinja2

from ..resources import CODEGEN_DIR

_IDENT_UNSAFE = re.compile(r"[^A-Za-z0-9_]")

#: Characters `c_comment` lets through; everything else becomes `_`. None of them can end
#: a comment (`*/`), open one (`/*`), continue a line (`\`), start a trigraph (`??`),
#: quote, or forge a marker (`@`).
COMMENT_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,:=+-[]()#")
#: Longest `c_comment` output (a comment is a hint for a human, not the data).
COMMENT_MAX = 200
#: Characters kept as-is in a marker's encoded file name and path (`%XX` for the rest).
_MARKER_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-[]")
# A file name inside a marker before `render` turns it into a table index; \x01 is a byte
# neither `c_comment` nor `c_string` ever emits, so no policy text can forge it.
_PENDING = re.compile("\x01F([0-9A-Za-z_.%\\[\\]-]*)\x01")
MARKER = re.compile(r"@policy #(\d+):(\d+):(\d+) ([0-9A-Za-z_.%\[\]-]+)")
FILES = re.compile(r"@policy-files((?: #\d+=[0-9A-Za-z_.%\[\]-]*)*) ")


def to_bytes(value: object) -> bytes:
    """The bytes a policy string stands for: UTF-8, with surrogate escapes (how Python
    decodes undecodable file names and YAML bytes) turned back into the original bytes."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    text = str(value)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def c_ident(name: object, prefix: str = "r") -> str:
    """`allow-ssh.v2` → `r_allow_ssh_v2_1a2b3c`: valid C, unique per input string."""
    digest = hashlib.sha256(to_bytes(name)).hexdigest()[:6]
    body = _IDENT_UNSAFE.sub("_", str(name))[:40].strip("_") or "x"
    return f"{_IDENT_UNSAFE.sub('_', prefix) or 'r'}_{body}_{digest}"


def c_string(value: object) -> str:
    """A double-quoted C literal; bytes outside printable ASCII become octal escapes."""
    out = ['"']
    for b in to_bytes(value):
        ch = chr(b)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= b < 0x7F and ch != "?":  # '?' escaped to defuse trigraphs
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    out.append('"')
    return "".join(out)


def c_comment(value: object, limit: int = 120) -> str:
    """Inert text for inside `/* ... */`: whitelisted characters only, one line, bounded."""
    limit = max(4, min(limit, COMMENT_MAX))
    text = "".join(c if c in COMMENT_SAFE else "_" for c in str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _encode(value: object) -> str:
    return "".join(chr(b) if b in _MARKER_SAFE else f"%{b:02X}" for b in to_bytes(value))


def _decode(text: str) -> str:
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def policy_marker(where: str, path: object) -> str:
    """`@policy #<file>:<line>:<col> <path>` for a `FILE:LINE:COL` position. Until
    `render` (or `resolve_markers`) numbers the files, the file is a pending token."""
    file, line, col = str(where).rsplit(":", 2)
    return f"@policy \x01F{_encode(file)}\x01:{int(line)}:{int(col)} {_encode(str(path) or '$')}"


def resolve_markers(source: str) -> str:
    """Number the files of pending markers (first use first) and append the
    `@policy-files` table that maps the numbers back to file names."""
    files: dict[str, int] = {}

    def number(m: re.Match[str]) -> str:
        return f"#{files.setdefault(m.group(1), len(files))}"

    out = _PENDING.sub(number, source)
    if "\x01" in out:  # only markers may carry the token byte; anything else is a bug
        raise ValueError("generated C contains a stray marker token")
    if not files:
        return out
    table = "".join(f" #{i}={enc}" for enc, i in files.items())
    return (out if out.endswith("\n") else out + "\n") + f"/* @policy-files{table} */\n"


@dataclass(frozen=True)
class Marker:
    file: str
    line: int
    col: int
    path: str


def find_marker(source: str, line_index: int) -> Marker | None:
    """The nearest `@policy` marker at or above 0-based `line_index` of `source`."""
    lines = source.splitlines()
    table: dict[int, str] = {}
    for ln in reversed(lines):
        t = FILES.search(ln)
        if t:
            for entry in t.group(1).split():
                num, _, enc = entry.partition("=")
                table[int(num[1:])] = _decode(enc)
            break
    for i in range(min(line_index, len(lines) - 1), -1, -1):
        m = MARKER.search(lines[i])
        if m:
            file = table.get(int(m.group(1)), f"<policy file #{m.group(1)}>")
            return Marker(file, int(m.group(2)), int(m.group(3)), _decode(m.group(4)))
    return None


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(CODEGEN_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(c_ident=c_ident, c_string=c_string, c_comment=c_comment)
    env.globals.update(policy_marker=policy_marker)
    return env


def render(template: str, **context: Any) -> str:
    """Render `codegen/<template>`; missing variables are errors, not empty strings."""
    return resolve_markers(environment().get_template(template).render(**context))
