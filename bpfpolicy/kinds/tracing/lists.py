"""Tetragon's `spec.lists`: `call: list:NAME` (one hook per entry) and InMap/NotInMap over
syscall numbers. Syscall numbers come from the generated tables in
bpfpolicy.syscalls.tables (Linux UAPI headers).

Generated lists (Tetragon's pkg/selectors ValidateList) are filled when compiling for a
target, never in validate:

* `generated_syscalls`: every syscall of the target arch whose `__<arch>_sys_<name>`
  function is in the target's BTF (Tetragon's btf.GetSyscallsList); when the hooks run as
  `syscalls/sys_enter_*` tracepoints on this host, only those with a tracepoint in tracefs.
* `generated_ftrace`: the functions of `available_filter_functions` matching `pattern`
  (a regex search) — vmlinux only (the list stops at the first module function), sorted,
  deduplicated, `__ftrace_invalid_address__` entries dropped (Tetragon's
  ftrace.ReadAvailFuncs). They are kernel functions: they need kprobes (or fentry); a
  target without both is refused naming why. For a target other than this host its
  tracefs is not at hand: the target's BTF functions matching `pattern` stand in, with a
  warning (BTF also lists functions ftrace cannot hook: those fail at attach).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from typing import Any

from ...policy.diagnostics import did_you_mean
from .backends.base import HookError, PathT

LIST_TYPES = ("syscalls", "generated_syscalls", "generated_ftrace")
GENERATED_LISTS = ("generated_syscalls", "generated_ftrace")
MAX_LIST_CALLS = 32  # `call: list:NAME` makes one program per entry
# A generated list is one program per function too; x86_64 has ~370 syscalls and arm64
# ~320, so every syscall fits. It bounds one object's program count (each is loaded and
# verified separately): a pattern matching thousands of functions is refused, not loaded.
MAX_GENERATED_CALLS = 512
ARCH_ABI = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
AVAILABLE_FILTER_FUNCTIONS = "/sys/kernel/tracing/available_filter_functions"
SYSCALL_TRACEPOINTS = "/sys/kernel/tracing/events/syscalls"


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


def generated_syscalls(arch: str, btf_funcs: Collection[str] | None, prefix: str,
                       tracepoints_dir: str | None = None) -> list[str]:
    """Syscall names (in number order) the target has a `<prefix>sys_<name>` function for;
    with `tracepoints_dir`, only those that also have a `sys_enter_<name>` tracepoint."""
    from ...syscalls.tables import TABLES

    table = TABLES[ARCH_ABI.get(arch, "x86_64")]
    names = sorted(table, key=lambda n: table[n])
    if btf_funcs is not None:
        names = [n for n in names if f"{prefix}sys_{n}" in btf_funcs]
    if tracepoints_dir is not None:
        names = [n for n in names if os.path.isdir(os.path.join(tracepoints_dir, f"sys_enter_{n}"))]
    return names


def ftrace_functions(pattern: str, lines: list[str]) -> list[str]:
    """Tetragon's ftrace.ReadAvailFuncs over `available_filter_functions` lines."""
    funcs: list[str] = []
    for line in lines:
        if " " in line.strip():
            break  # module functions follow vmlinux's ("func [module]")
        funcs.append(line.strip())
    rx = re.compile(pattern)
    return [f for f in sorted(set(funcs)) if f and "__ftrace_invalid_address__" not in f and rx.search(f)]


def expand_generated(lst: dict[str, Any], path: PathT, *, arch: str, features: dict[str, Any],
                     btf_funcs: Collection[str] | None, prefix: str, on_host: bool,
                     warnings: list[str]) -> list[tuple[str, bool]]:
    """A generated list's entries as (call, syscall) hooks for this target."""
    name, ltype = lst.get("name"), lst.get("type")
    kernel = features.get("kernel")
    reasons = features.get("reasons") or {}
    if ltype == "generated_syscalls":
        tp_dir = None
        if not features.get("kprobes") and features.get("syscall_tracepoints") and on_host \
                and os.access(SYSCALL_TRACEPOINTS, os.R_OK | os.X_OK):
            tp_dir = SYSCALL_TRACEPOINTS  # the hooks become sys_enter_* tracepoints: those that exist
        if btf_funcs is None:
            warnings.append(f"list {name}: no BTF of kernel {kernel}: generated_syscalls holds every "
                            f"{arch} syscall of the UAPI table (some may not exist there)")
        calls = [(f"sys_{n}", True) for n in generated_syscalls(arch, btf_funcs, prefix, tp_dir)]
    else:
        if not features.get("kprobes") and not features.get("trampoline"):
            raise HookError(path, f"list {name} (generated_ftrace) holds kernel functions, which "
                            f"only kprobes or fentry can hook; kernel {kernel} has neither: kprobes: "
                            f"{reasons.get('kprobes', 'unavailable')}; trampolines: "
                            f"{reasons.get('trampoline', 'unavailable')}")
        pattern = str(lst.get("pattern") or "")
        funcs: list[str] | None = None
        why = "this is not that kernel" if not on_host else ""
        if on_host:
            try:
                with open(AVAILABLE_FILTER_FUNCTIONS) as f:
                    funcs = ftrace_functions(pattern, f.read().splitlines())
            except OSError as e:  # not root, tracefs not mounted, lockdown
                why = f"{AVAILABLE_FILTER_FUNCTIONS}: {e.strerror or e}"
        if funcs is None and btf_funcs is not None:
            rx = re.compile(pattern)
            funcs = sorted(f for f in btf_funcs if rx.search(f))
            warnings.append(f"list {name}: kernel {kernel}'s available_filter_functions is not "
                            f"readable ({why}): its BTF functions matching the pattern stand in "
                            "(a function ftrace cannot hook fails at attach)")
        if funcs is None:
            raise HookError(path, f"list {name} (generated_ftrace) needs kernel {kernel}'s "
                            f"available_filter_functions or its BTF ({why}; no BTF)")
        calls = [(f, f.startswith(prefix + "sys_")) for f in funcs]
    if not calls:
        raise HookError(path, f"list {name} ({ltype}) is empty on kernel {kernel}"
                        + (f": no function matches pattern {lst.get('pattern')!r}"
                           if ltype == "generated_ftrace" else ""))
    if len(calls) > MAX_GENERATED_CALLS:
        raise HookError(path, f"list {name} ({ltype}) has {len(calls)} entries on kernel {kernel}: "
                        f"at most {MAX_GENERATED_CALLS} (one program each); narrow the pattern")
    return calls
