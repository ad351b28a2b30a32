"""Validation of Tetragon's `spec.uprobes` entries (called from check.py): where the
probe goes must be knowable before anything is compiled, and every field bpfpolicy does
not attach says so."""

from __future__ import annotations

import os
import re
from typing import Any

from ...policy.diagnostics import did_you_mean
from ..base import Reporter
from .elf import Elf, ElfError

Path_ = tuple[str | int, ...]
# The path travels in the program's SEC() name (`uprobe/<path>:<symbol>`), so it must
# not contain the separators `:` and `?`; plain path characters are all it needs.
UPROBE_PATH = re.compile(r"/[A-Za-z0-9/._+-]+")
SYMBOL = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
# One program per probe point: bounded like `list:` calls.
MAX_UPROBE_POINTS = 64
UNSUPPORTED = {
    "return": "uretprobes (return: true) are not implemented; probe the function's entry",
    "returnArg": "returnArg needs return: true (uretprobes), which is not implemented",
    "addrs": "addrs (virtual addresses) are not implemented; give symbols or file offsets",
    "btfPath": "btfPath (BTF of the binary for typed arguments) is not implemented",
    "preload": "preload is not implemented",
}


def check_uprobe(r: Reporter, path: Path_, hook: dict[str, Any]) -> bool:
    binary = str(hook.get("path", ""))
    if not UPROBE_PATH.fullmatch(binary):
        r.error((*path, "path"), f'"{binary[:60]}" is not an absolute path of plain characters '
                "(letters, digits, / . _ + -)")
        return False
    if "provider" in hook:
        return _usdt(r, path, hook, binary)
    for key, why in UNSUPPORTED.items():
        if hook.get(key):
            r.unsupported((*path, key), why, drop=path)
            return False
    symbols, offsets = hook.get("symbols") or [], hook.get("offsets") or []
    if not symbols and not offsets:
        r.error(path, "a uprobe needs symbols or offsets (where in the binary to probe)")
        return False
    if len(symbols) + len(offsets) > MAX_UPROBE_POINTS:
        r.error(path, f"at most {MAX_UPROBE_POINTS} symbols + offsets per uprobe (one program each)")
        return False
    refs = hook.get("refCtrOffsets") or []
    if refs and len(refs) != len(offsets):
        r.error((*path, "refCtrOffsets"), f"refCtrOffsets pairs with offsets: {len(refs)} given "
                f"for {len(offsets)} offset(s)")
    ok = True
    for k, sym in enumerate(symbols):
        if not SYMBOL.fullmatch(str(sym)):
            r.error((*path, "symbols", k), f'"{str(sym)[:60]}" is not a symbol name')
            ok = False
    return ok and _symbols_exist(r, path, binary, [str(s) for s in symbols], offsets)


def _symbols_exist(r: Reporter, path: Path_, binary: str, symbols: list[str],
                   offsets: list[Any]) -> bool:
    """Checked against the file when this host has it; a policy written for another host
    only warns (the attach on that host resolves it again)."""
    if not os.path.exists(binary):
        r.warning((*path, "path"), f"{binary} does not exist on this host: its symbols are "
                  "resolved when the policy is applied")
        return True
    try:
        elf = Elf.open(binary)
        funcs = elf.functions()
    except (OSError, ElfError, ValueError) as e:
        r.error((*path, "path"), f"{binary}: cannot read it as an ELF object ({e})")
        return False
    size = os.path.getsize(binary)
    ok = True
    for k, sym in enumerate(symbols):
        if sym not in funcs:
            r.error((*path, "symbols", k), f'no function "{sym}" in {binary}'
                    f"{did_you_mean(sym, list(funcs), 0.8)}")
            ok = False
    for k, off in enumerate(offsets):
        if int(off) >= size:
            r.error((*path, "offsets", k), f"offset {int(off):#x} is past the end of {binary} "
                    f"({size} bytes)")
            ok = False
    return ok


def _usdt(r: Reporter, path: Path_, hook: dict[str, Any], binary: str) -> bool:
    """A USDT entry: the probe must be in the binary's .note.stapsdt when it is here."""
    from .usdt import find_note

    provider, name = str(hook.get("provider")), str(hook.get("name"))
    if not os.path.exists(binary):
        r.warning((*path, "path"), f"{binary} does not exist on this host: its USDT notes are "
                  "read when the policy is compiled there")
        return True
    try:
        note = find_note(binary, provider, name)
    except (OSError, ElfError, ValueError) as e:
        r.error((*path, "path"), f"{binary}: cannot read its USDT notes ({e})")
        return False
    if note is None:
        r.error((*path, "name"), f"no USDT probe {provider}:{name} in {binary} (.note.stapsdt)")
        return False
    return True
