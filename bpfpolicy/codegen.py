"""Shared code generation: one jinja2 environment over `codegen/`, with filters that make
it impossible for a policy string to inject C.

* `c_ident`   — a C identifier derived from any string: sanitised, prefixed, and suffixed
                with a short hash so two different names never collide.
* `c_string`  — a C string literal with every non-printable or special byte escaped.
* `c_comment` — text safe inside `/* ... */` (no `*/`, no newlines, printable only).
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from typing import Any

import jinja2

from .paths import CODEGEN_DIR

_IDENT_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def c_ident(name: object, prefix: str = "r") -> str:
    """`allow-ssh.v2` → `r_allow_ssh_v2_1a2b3c`: valid C, unique per input string."""
    text = str(name)
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    body = _IDENT_UNSAFE.sub("_", text)[:40].strip("_") or "x"
    return f"{prefix}_{body}_{digest}"


def c_string(value: object) -> str:
    """A double-quoted C literal; bytes outside printable ASCII become octal escapes."""
    out = ['"']
    for b in str(value).encode():
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
    """Printable text that cannot close or escape a C comment."""
    text = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in str(value))
    text = text.replace("*/", "* /").replace("/*", "/ *").replace("\\", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    return env


def render(template: str, **context: Any) -> str:
    """Render `codegen/<template>`; missing variables are errors, not empty strings."""
    return environment().get_template(template).render(**context)
