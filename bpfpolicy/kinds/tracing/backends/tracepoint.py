"""Tracepoint backends (Tetragon's generictracepoint): `SEC("tp/<sub>/<event>")` with the
event's `trace_event_raw_*` record (or the stable syscall layouts) as `ctx`, and
`SEC("raw_tp/<event>")` with the raw argument array. A syscall kprobe lowered here reads
the sys_enter record's `args[]`."""

from __future__ import annotations

from ...btf import Btf
from ..ir import ArgRead
from .base import Backend, HookError, PathT, Shape

PREFIX = "tp"
SYSCALL_SUBSYSTEMS = ("syscalls", "raw_syscalls")


def backend(sub: str, event: str, why: str, syscall: bool = False, func: str = "") -> Backend:
    if syscall:  # a syscall hook on its sys_enter tracepoint
        return Backend("tracepoint", f"tp/{sub}/{event}", why, func, True, 0, True)
    return Backend("tracepoint", f"tp/{sub}/{event}", why, f"{sub}/{event}", False, 0,
                   sub in SYSCALL_SUBSYSTEMS)


def raw_backend(event: str) -> Backend:
    return Backend("raw_tracepoint", f"raw_tp/{event}", "raw: true", event)


def _split(b: Backend) -> tuple[str, str]:
    sub, event = b.func.split("/", 1) if "/" in b.func else ("syscalls", "")
    return sub, event


def shape(b: Backend, btf: Btf | None) -> Shape:
    if b.kind == "raw_tracepoint":
        return Shape("raw_tp")
    sub, event = _split(b)
    if (sub == "syscalls" and event.startswith("sys_exit_")) or (sub == "raw_syscalls" and event == "sys_exit"):
        return Shape("sys_exit")
    if sub in SYSCALL_SUBSYSTEMS or b.syscall:
        return Shape("sys_enter")
    if btf is not None and btf.structs.get(f"trace_event_raw_{event}") is not None:
        return Shape("tp_struct", tp_event=event)
    return Shape("void")


def read(b: Backend, idx: int, path: PathT, section: str, btf: Btf | None) -> ArgRead:
    if section == "tracepoints" and b.kind == "tracepoint":
        return _field(b, idx, path, btf)
    return ArgRead("ctx_args", idx)  # raw_tp, or a kprobe sys_X lowered to sys_enter


def _field(b: Backend, idx: int, path: PathT, btf: Btf | None) -> ArgRead:
    sub, event = b.func.split("/", 1)
    if idx < 4:
        raise HookError(path, f"tracepoint field {idx} is a common_* field; arguments start at index 4")
    if sub in SYSCALL_SUBSYSTEMS:
        return _syscall_field(sub, event, idx, path)
    members = None if btf is None else btf.structs.get(f"trace_event_raw_{event}")
    if members is None:
        raise HookError(path, f"struct trace_event_raw_{event} is not in the kernel's BTF; "
                        "its fields cannot be read (use raw: true)")
    fields = members[1:]  # members[0] is `ent` (4 common_* fields)
    k = idx - 4
    if k >= len(fields) or fields[k] == "__data":
        raise HookError(path, f"tracepoint {sub}/{event} has no field {idx}")
    return ArgRead("tp_field", idx, fields[k])


def _syscall_field(sub: str, event: str, idx: int, path: PathT) -> ArgRead:
    exit_ = event.startswith("sys_exit")
    if idx == 4:
        return ArgRead("tp_field", idx, "nr")
    if exit_ and idx == 5:
        return ArgRead("tp_field", idx, "ret")
    if sub == "raw_syscalls" or exit_:
        raise HookError(path, f"field {idx} of {sub}/{event} is the argument array, which "
                        "bpfpolicy does not decode (hook the per-syscall tracepoint instead)")
    if idx - 5 > 5:
        raise HookError(path, f"field {idx} is out of range for {sub}/{event} (4 = nr, 5..10 = args)")
    return ArgRead("ctx_args", idx - 5)
