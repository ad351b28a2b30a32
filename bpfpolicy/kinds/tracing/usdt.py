"""USDT probes (`spec.usdts`): a `<sys/sdt.h>` probe is a uprobe at the address its
`.note.stapsdt` note gives, with the note's semaphore as the uprobe's reference counter
(`ref_ctr_offset`: the kernel increments it while the probe is attached, which is what
`PROVIDER_NAME_ENABLED()` tests).

Arguments come from the note's spec (`-4@%edi 8@%rsi`): bpfpolicy reads those that sit
in the first five argument registers (PT_REGS_PARM1..5); constants and memory operands
are refused with the spec text, naming what is missing.
"""

from __future__ import annotations

import re
from typing import Any

from .backends.base import HookError, PathT
from .elf import Elf, ElfError, UsdtNote

# x86-64 argument registers in PT_REGS_PARMn order, by every width's spelling.
X86_PARAM_REGS = {name: i for i, names in enumerate((
    ("rdi", "edi", "di", "dil"), ("rsi", "esi", "si", "sil"), ("rdx", "edx", "dx", "dl"),
    ("rcx", "ecx", "cx", "cl"), ("r8", "r8d", "r8w", "r8b"))) for name in names}
ARG_SPEC = re.compile(r"(?P<size>-?\d+)@(?P<loc>\S+)")


def find_note(binary: str, provider: str, name: str) -> UsdtNote | None:
    for note in Elf.open(binary).usdt_notes():
        if note.provider == provider and note.name == name:
            return note
    return None


def arg_registers(spec: str) -> list[int | str]:
    """Per USDT argument: the PT_REGS_PARM index it sits in, or the spec text when it
    is a constant or memory operand (not read by bpfpolicy)."""
    out: list[int | str] = []
    for m in ARG_SPEC.finditer(spec):
        loc = m["loc"]
        reg = loc[1:] if loc.startswith("%") else None
        out.append(X86_PARAM_REGS[reg] if reg in X86_PARAM_REGS else m.group(0))
    return out


def expand(hook: dict[str, Any], path: PathT = ()) -> list[dict[str, Any]]:
    """The USDT hook as one uprobe hook at the note's offset, its args and matchArgs
    re-indexed from USDT argument numbers to the registers that hold them."""
    binary, provider, name = str(hook["path"]), str(hook["provider"]), str(hook["name"])
    try:
        note = find_note(binary, provider, name)
    except (OSError, ElfError) as e:
        raise HookError((*path, "path"), f"{binary}: cannot read its USDT notes ({e})") from None
    if note is None:
        raise HookError((*path, "name"), f"no USDT probe {provider}:{name} in {binary} (.note.stapsdt)")
    regs = arg_registers(note.args)
    remap: dict[int, int] = {}
    for k, arg in enumerate(hook.get("args") or []):
        idx = int(arg["index"])
        if idx >= len(regs):
            raise HookError((*path, "args", k, "index"), f"USDT {provider}:{name} has {len(regs)} "
                            f"argument(s) ({note.args or 'none'})")
        if isinstance(regs[idx], str):
            raise HookError((*path, "args", k, "index"), f"USDT argument {idx} is {regs[idx]}: only "
                            "arguments held in the first five argument registers are read")
        remap[idx] = int(regs[idx])
    args = [{**a, "index": remap[int(a["index"])]} for a in hook.get("args") or []]
    selectors = [{**s, "matchArgs": [{**m, "index": remap.get(int(m.get("index", 0)), int(m.get("index", 0)))}
                                     for m in s.get("matchArgs") or []]} if "matchArgs" in s else s
                 for s in hook.get("selectors") or []]
    return [{**hook, "args": args, "selectors": selectors, "call": f"{binary}:{provider}:{name}",
             "_offset": note.offset, "_ref_ctr": note.semaphore}]
