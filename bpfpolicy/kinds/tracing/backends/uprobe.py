"""uprobe backend, shape only: user functions read pt_regs like a kprobe does. Nothing
chooses it yet (TracingPolicy `uprobes` is not lowered); a later change registers it."""

from __future__ import annotations

from ...btf import Btf
from ..ir import ArgRead
from .base import Backend, PathT, Shape

PREFIX = "uprobe"


def backend(binary: str, symbol: str, why: str) -> Backend:
    return Backend("uprobe", f"uprobe/{binary}:{symbol}", why, symbol, False, 0, True)


def shape(b: Backend, btf: Btf | None) -> Shape:
    return Shape("pt_regs")


def read(b: Backend, idx: int, path: PathT, section: str, btf: Btf | None) -> ArgRead:
    return ArgRead("regs", idx)
