"""uprobe backend (Tetragon's genericuprobe): user functions read pt_regs like a kprobe,
their pointer arguments point to user memory, and the program is attached through the
uprobe PMU by `kernel/attach/uprobe.py`.

The attach target travels in the program's SEC() name, which the uprobe Attacher parses
(libbpf's own SEC() parser cannot express an offset without a symbol, nor a reference
counter): `uprobe/<path>:<symbol>`, `uprobe/<path>:+0x<offset>`, either optionally
followed by `?ref_ctr=0x<offset>` (a USDT semaphore / Tetragon's refCtrOffsets).
One Tetragon uprobe entry with N symbols and M offsets becomes N + M programs.
"""

from __future__ import annotations

from typing import Any

from ...btf import Btf
from ..ir import ArgRead
from .base import Backend, HookError, PathT, Shape

PREFIX = "uprobe"
# x86-64 and arm64 pass the first six integer arguments in registers (PT_REGS_PARM1..5
# are what libbpf's bpf_tracing.h offers on every architecture we target).
MAX_UPROBE_ARG_INDEX = 4


def expand(hook: dict[str, Any]) -> list[dict[str, Any]]:
    """One hook per probe point; `call` names it (`path:symbol`, `path:+0xOFF`) for events.
    A USDT hook (`provider`, `name`) is one uprobe at its note's address (`usdt.py`)."""
    if "provider" in hook:
        from ..usdt import expand as expand_usdt

        return expand_usdt(hook)
    path = str(hook["path"])
    out = [{**hook, "call": f"{path}:{s}", "_symbol": str(s)} for s in hook.get("symbols") or []]
    refs = hook.get("refCtrOffsets") or []
    for k, off in enumerate(hook.get("offsets") or []):
        ref = int(refs[k]) if k < len(refs) else 0
        out.append({**hook, "call": f"{path}:+{int(off):#x}", "_offset": int(off), "_ref_ctr": ref})
    return out


def section(path: str, symbol: str = "", offset: int = 0, ref_ctr: int = 0) -> str:
    where = symbol if symbol else f"+{offset:#x}"
    return f"uprobe/{path}:{where}" + (f"?ref_ctr={ref_ctr:#x}" if ref_ctr else "")


def choose(hook: dict[str, Any], path: PathT, features: dict[str, Any]) -> Backend:
    if features.get("uprobes") is False:
        raise HookError(path, "uprobes need CONFIG_UPROBES (the uprobe PMU); kernel "
                        f"{features.get('kernel')} lacks it")
    sec = section(str(hook["path"]), str(hook.get("_symbol") or ""), int(hook.get("_offset") or 0),
                  int(hook.get("_ref_ctr") or 0))
    return backend(sec, "user-space probe via the uprobe PMU")


def backend(sec: str, why: str) -> Backend:
    target = sec.removeprefix("uprobe/")
    return Backend("uprobe", sec, why, target, False, 0, True)


def shape(b: Backend, btf: Btf | None) -> Shape:
    return Shape("pt_regs")


def read(b: Backend, idx: int, path: PathT, section: str, btf: Btf | None) -> ArgRead:
    if idx > MAX_UPROBE_ARG_INDEX:
        raise HookError(path, f"uprobe argument index {idx} is out of range: register "
                        f"arguments 0..{MAX_UPROBE_ARG_INDEX} are read")
    return ArgRead("regs", idx)
