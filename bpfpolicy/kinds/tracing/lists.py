"""Tetragon's `spec.lists` of syscalls: `call: list:NAME` (one hook per syscall) and
InMap/NotInMap over syscall numbers. Syscall numbers come from the generated tables in
bpfpolicy.syscalls.tables (Linux UAPI headers)."""

from __future__ import annotations

from typing import Any

from ...policy.diagnostics import did_you_mean

LIST_TYPES = ("syscalls", "generated_syscalls", "generated_ftrace")
MAX_LIST_CALLS = 32  # `call: list:NAME` makes one program per entry
ARCH_ABI = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def lists_by_name(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(x.get("name")): x for x in spec.get("lists") or []}


def syscall_name(value: str) -> str | None:
    """`sys_dup` / `__x64_sys_dup` -> `dup`; 32-bit entry points -> None."""
    v = str(value)
    if v.startswith(("__ia32_", "__x32_", "__arm64_compat_")):
        return None
    for prefix in ("__x64_sys_", "__arm64_sys_", "sys_"):
        if v.startswith(prefix):
            return v[len(prefix):]
    return v


def syscall_problem(value: str, arch: str = "x86_64") -> str | None:
    from ...syscalls.tables import TABLES

    name = syscall_name(value)
    if name is None:
        return f'"{value}" is a 32-bit syscall entry point; bpfpolicy lists hold native syscalls only'
    table = TABLES[ARCH_ABI.get(arch, "x86_64")]
    if name not in table:
        return f'"{value}" is not a {arch} syscall{did_you_mean(name, table, 0.7)}'
    return None


def syscall_numbers(values: list[str], arch: str = "x86_64") -> list[int]:
    from ...syscalls.tables import TABLES

    table = TABLES[ARCH_ABI.get(arch, "x86_64")]
    return [table[syscall_name(v) or ""] for v in values]
