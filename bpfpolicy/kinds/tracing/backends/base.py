"""What every backend module shares: the chosen `Backend`, the shape of its program,
and the error a hook reports when it cannot be lowered."""

from __future__ import annotations

from dataclasses import dataclass

PathT = tuple[str | int, ...]


class HookError(Exception):
    """A hook that cannot be lowered; `path` locates it in the policy."""

    def __init__(self, path: PathT, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass
class Backend:
    kind: str  # kprobe, tracepoint, raw_tracepoint, lsm, fentry, fexit, fmod_ret
    sec: str
    why: str
    func: str = ""  # attach target (function or hook)
    syscall: bool = False  # arguments in the syscall wrapper's pt_regs
    nparams: int = 0  # BTF parameter count (LSM / fexit return value follows them)
    user: bool = False  # pointer arguments point to user memory
    remap: int | None = None  # syscall pathname index remapped to LSM arg 0 (file)


@dataclass(frozen=True)
class Shape:
    """The program's context and what its prologue reads (see ir.Program)."""

    ctx: str
    tp_event: str = ""
    verdict_index: int | None = None
    retval_index: int | None = None
    syscall_regs: str = ""


def fmt(path: PathT) -> str:
    from ....policy.diagnostics import format_path

    return format_path(path)
