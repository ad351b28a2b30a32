"""Architectures, actions and errno names as OCI/Docker profiles spell them."""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass

from ...syscalls.tables import TABLES
from . import bpf

X32_SYSCALL_BIT = 0x40000000

# AUDIT_ARCH_* (linux/audit.h): EM_* | 64BIT(0x80000000) | LE(0x40000000)
AUDIT_ARCH = {
    "SCMP_ARCH_X86": 0x40000003, "SCMP_ARCH_X86_64": 0xC000003E, "SCMP_ARCH_X32": 0xC000003E,
    "SCMP_ARCH_ARM": 0x40000028, "SCMP_ARCH_AARCH64": 0xC00000B7,
    "SCMP_ARCH_LOONGARCH64": 0xC0000102, "SCMP_ARCH_M68K": 0x00000004,
    "SCMP_ARCH_MIPS": 0x00000008, "SCMP_ARCH_MIPS64": 0x80000008,
    "SCMP_ARCH_MIPS64N32": 0xA0000008, "SCMP_ARCH_MIPSEL": 0x40000008,
    "SCMP_ARCH_MIPSEL64": 0xC0000008, "SCMP_ARCH_MIPSEL64N32": 0xE0000008,
    "SCMP_ARCH_PPC": 0x00000014, "SCMP_ARCH_PPC64": 0x80000015, "SCMP_ARCH_PPC64LE": 0xC0000015,
    "SCMP_ARCH_S390": 0x00000016, "SCMP_ARCH_S390X": 0x80000016, "SCMP_ARCH_SH": 0x0000002A,
    "SCMP_ARCH_SHEB": 0x0000002A, "SCMP_ARCH_PARISC": 0x0000000F,
    "SCMP_ARCH_PARISC64": 0x8000000F, "SCMP_ARCH_RISCV64": 0xC00000F3,
}
OCI_ARCHES = tuple(AUDIT_ARCH)

# OCI arch -> our table (ABI) name; arches without a table can be listed but carry no rules.
ABI_OF = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "i386", "SCMP_ARCH_X32": "x32",
          "SCMP_ARCH_AARCH64": "aarch64"}

# Go's GOARCH names used by Docker's includes/excludes `arches` (moby/profiles seccomp.go).
GOARCH_OF = {"SCMP_ARCH_X86_64": "amd64", "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X32": "x32",
             "SCMP_ARCH_AARCH64": "arm64", "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_PPC64LE": "ppc64le",
             "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x", "SCMP_ARCH_RISCV64": "riscv64",
             "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPSEL64": "mips64le",
             "SCMP_ARCH_LOONGARCH64": "loong64"}

# target arch names accepted on the command line / CompileContext -> native OCI arch
NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "amd64": "SCMP_ARCH_X86_64",
          "aarch64": "SCMP_ARCH_AARCH64", "arm64": "SCMP_ARCH_AARCH64",
          "i386": "SCMP_ARCH_X86", "i686": "SCMP_ARCH_X86", "x86": "SCMP_ARCH_X86"}

ACTIONS = {
    "SCMP_ACT_KILL": bpf.RET_KILL_THREAD, "SCMP_ACT_KILL_THREAD": bpf.RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": bpf.RET_KILL_PROCESS, "SCMP_ACT_TRAP": bpf.RET_TRAP,
    "SCMP_ACT_ERRNO": bpf.RET_ERRNO, "SCMP_ACT_TRACE": bpf.RET_TRACE,
    "SCMP_ACT_ALLOW": bpf.RET_ALLOW, "SCMP_ACT_LOG": bpf.RET_LOG,
    "SCMP_ACT_NOTIFY": bpf.RET_USER_NOTIF,
}
ERRNO_ACTIONS = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")  # actions that carry errnoRet
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
             "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32}
EPERM = 1

# Docker's default capability set (moby/moby oci/caps/defaults.go).
DOCKER_DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)


def errno_value(name: str) -> int | None:
    """`EPERM` -> 1 (containers-common spells errnos by name)."""
    v = getattr(_errno, name, None)
    return v if isinstance(v, int) and name.startswith("E") else None


@dataclass(frozen=True)
class Abi:
    """One syscall ABI inside a filter: which AUDIT_ARCH value selects it and its table."""

    oci: str
    name: str  # table name
    audit_arch: int

    @property
    def table(self) -> dict[str, int]:
        return TABLES[self.name]


def abi(oci_arch: str) -> Abi | None:
    name = ABI_OF.get(oci_arch)
    return Abi(oci_arch, name, AUDIT_ARCH[oci_arch]) if name else None


ALL_NAMES: frozenset[str] = frozenset(n for t in TABLES.values() for n in t)
