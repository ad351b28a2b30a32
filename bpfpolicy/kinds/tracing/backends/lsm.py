"""BPF LSM backend (Tetragon's genericlsm): `SEC("lsm/<hook>")`, BTF-typed arguments in
`ctx`, and the verdict of earlier LSMs after them (an earlier denial stands)."""

from __future__ import annotations

from ...btf import Btf
from ..ir import ArgRead
from .base import Backend, HookError, PathT, Shape

PREFIX = "lsm"


def backend(hook: str, why: str, nparams: int) -> Backend:
    return Backend("lsm", f"lsm/{hook}", why, hook, False, nparams, False)


def shape(b: Backend, btf: Btf | None) -> Shape:
    return Shape("u64_array", verdict_index=b.nparams)


def read(b: Backend, idx: int, path: PathT, section: str, btf: Btf | None) -> ArgRead:
    if b.nparams and idx >= b.nparams:
        raise HookError(path, f"argument index {idx} is out of range: {b.func} takes "
                        f"{b.nparams} argument(s)")
    return ArgRead("ctx_array", idx)
