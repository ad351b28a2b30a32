"""Build the same resolved profile with libseccomp (python3-seccomp), as runc does.

Used only by the differential tests and the benchmark: the anchor we must match
verdict-for-verdict and beat on cost. Mirrors runc's `libcontainer/seccomp`:
names libseccomp cannot resolve are skipped, a rule whose action equals the default is
skipped, a rule comparing one argument twice is split into one rule per comparison.
The bad-arch action is set to KILL_PROCESS so both filters agree on foreign arches
(libseccomp's own default is KILL_THREAD).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .arch import EPERM

U64 = (1 << 64) - 1


@dataclass
class Reference:
    filter_bytes: bytes
    skipped_names: set[str] = field(default_factory=set)
    build_ms: float = 0.0


def available() -> bool:
    try:
        import seccomp  # noqa: F401
    except ImportError:
        return False
    return True


def _action(seccomp: Any, name: str, errno_ret: int | None) -> Any:
    data = EPERM if errno_ret is None else int(errno_ret)
    return {
        "SCMP_ACT_ALLOW": lambda: seccomp.ALLOW, "SCMP_ACT_ERRNO": lambda: seccomp.ERRNO(data),
        "SCMP_ACT_KILL": lambda: seccomp.KILL, "SCMP_ACT_KILL_THREAD": lambda: seccomp.KILL,
        "SCMP_ACT_KILL_PROCESS": lambda: seccomp.KILL_PROCESS, "SCMP_ACT_TRAP": lambda: seccomp.TRAP,
        "SCMP_ACT_TRACE": lambda: seccomp.TRACE(data), "SCMP_ACT_LOG": lambda: seccomp.LOG,
        "SCMP_ACT_NOTIFY": lambda: seccomp.NOTIFY,
    }[name]()


_ARCH = {"SCMP_ARCH_X86_64": "X86_64", "SCMP_ARCH_X86": "X86", "SCMP_ARCH_X32": "X32",
         "SCMP_ARCH_AARCH64": "AARCH64", "SCMP_ARCH_ARM": "ARM"}


def build(profile: dict[str, Any], optimize: int = 2) -> Reference:
    """Resolved OCI profile → libseccomp filter bytes (export_bpf)."""
    import time

    import seccomp

    t0 = time.perf_counter()
    default = _action(seccomp, profile["defaultAction"], profile.get("defaultErrnoRet"))
    f = seccomp.SyscallFilter(default)
    f.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    if optimize:
        f.set_attr(seccomp.Attr.CTL_OPTIMIZE, optimize)
    for arch in profile.get("architectures") or []:
        a = getattr(seccomp.Arch, _ARCH.get(arch, ""), None)
        if a is not None and not f.exist_arch(a):
            f.add_arch(a)
    ops = {"SCMP_CMP_NE": seccomp.NE, "SCMP_CMP_LT": seccomp.LT, "SCMP_CMP_LE": seccomp.LE,
           "SCMP_CMP_EQ": seccomp.EQ, "SCMP_CMP_GE": seccomp.GE, "SCMP_CMP_GT": seccomp.GT,
           "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ}
    skipped: set[str] = set()
    for rule in profile.get("syscalls") or []:
        if (rule["action"], rule.get("errnoRet", EPERM)) == (profile["defaultAction"], profile.get("defaultErrnoRet", EPERM)):
            continue
        act = _action(seccomp, rule["action"], rule.get("errnoRet"))
        args = [seccomp.Arg(int(a["index"]), ops[a["op"]], int(a.get("value", 0)) & U64,
                            int(a.get("valueTwo", 0)) & U64) for a in rule.get("args") or []]
        indices = [int(a["index"]) for a in rule.get("args") or []]
        groups = [[x] for x in args] if len(set(indices)) < len(indices) else [args]
        for name in rule["names"]:
            # __NR_SCMP_ERROR (-1): a name libseccomp does not know; runc skips it
            if seccomp.resolve_syscall(0, name) == -1:
                skipped.add(name)
                continue
            for g in groups:
                f.add_rule(act, name, *g)
    build_ms = (time.perf_counter() - t0) * 1000
    fd, path = tempfile.mkstemp(prefix="libseccomp-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as out:
            f.export_bpf(out)
        with open(path, "rb") as fh:
            raw = fh.read()
    finally:
        os.unlink(path)
    return Reference(raw, skipped, build_ms)
