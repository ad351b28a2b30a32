"""One module per backend (kprobe, tracepoint, lsm, fentry; uprobe-ready): each decides
its section name, its program's context, and how arguments are read. `choose.py` picks
the backend of a hook from the target's features."""

from __future__ import annotations

from types import ModuleType

from . import fentry, kprobe, lsm, tracepoint, uprobe
from .base import Backend, HookError, PathT, Shape

MODULES: dict[str, ModuleType] = {
    "kprobe": kprobe, "kretprobe": kprobe, "tracepoint": tracepoint, "raw_tracepoint": tracepoint, "lsm": lsm,
    "fentry": fentry, "fexit": fentry, "fmod_ret": fentry, "uprobe": uprobe,
}
PREFIXES = {"kprobe": "kprobe", "kretprobe": "kretprobe", "tracepoint": "tp", "raw_tracepoint": "raw_tp", "lsm": "lsm",
            "fentry": "fentry", "fexit": "fexit", "fmod_ret": "fmod_ret", "uprobe": "uprobe"}

__all__ = ["MODULES", "PREFIXES", "Backend", "HookError", "PathT", "Shape", "module"]


def module(b: Backend) -> ModuleType:
    return MODULES[b.kind]
