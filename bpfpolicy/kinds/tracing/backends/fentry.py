"""BPF trampoline backends (fentry, fexit, fmod_ret): `ctx` is the u64 array BPF_PROG
unpacks; fexit's return value and fmod_ret's verdict follow the BTF parameters."""

from __future__ import annotations

from ...btf import Btf
from ..ir import ArgRead
from .base import Backend, HookError, PathT, Shape

PREFIX = "fentry"


def backend(kind: str, func: str, why: str, nparams: int, syscall: bool = False) -> Backend:
    return Backend(kind, f"{kind}/{func}", why, func, syscall, nparams, syscall)


def shape(b: Backend, btf: Btf | None) -> Shape:
    return Shape("u64_array", retval_index=b.nparams if b.kind == "fexit" else None,
                 syscall_regs="trampoline" if b.syscall else "")


def read(b: Backend, idx: int, path: PathT, section: str, btf: Btf | None) -> ArgRead:
    if b.syscall:
        return ArgRead("regs_syscall", idx)
    if b.nparams and idx >= b.nparams:
        raise HookError(path, f"argument index {idx} is out of range: {b.func} takes "
                        f"{b.nparams} argument(s)")
    return ArgRead("ctx_array", idx)
