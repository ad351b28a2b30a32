"""kprobe backend (Tetragon's generickprobe): `SEC("kprobe/<func>")`, arguments from
pt_regs; a syscall wrapper's arguments from the syscall's own pt_regs (what BPF_KSYSCALL
reads); Override through bpf_override_return. `return: true` adds a
`SEC("kretprobe/<func>")` program (Tetragon's generic_retkprobe): the entry program keeps
the event per task, the return program reads the return value (PT_REGS_RC) into it."""

from __future__ import annotations

from ...btf import Btf
from ..ir import ArgRead
from .base import Backend, PathT, Shape

PREFIX = "kprobe"


def backend(func: str, why: str, syscall: bool = False) -> Backend:
    return Backend("kprobe", f"kprobe/{func}", why, func, syscall, 0, syscall)


def ret_backend(func: str, why: str, syscall: bool = False) -> Backend:
    """The return half of `return: true`: a kretprobe on the same function."""
    return Backend("kretprobe", f"kretprobe/{func}", why, func, syscall, 0, syscall)


def shape(b: Backend, btf: Btf | None) -> Shape:
    return Shape("pt_regs", syscall_regs="kprobe" if b.syscall else "")


def read(b: Backend, idx: int, path: PathT, section: str, btf: Btf | None) -> ArgRead:
    return ArgRead("regs_syscall" if b.syscall else "regs", idx)
