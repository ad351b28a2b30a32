"""The target kernel, in one place: its version, architecture, BTF and probed features.

Every "which kernel are we compiling for" question goes through here: `--kernel X.Y`,
seccomp's `minKernel`, the matrix's `uname -r` of a booted kernel and the host probe all
parse versions with `parse_kernel_version`. `CompileContext.target` is a `Target`. A probe
(`doctor`, or tracing's file-only probe) can hand its results in as `features`, so a
kind reads facts about the target instead of probing the host again.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

KernelVersion = tuple[int, int]

# MAJOR.MINOR, optionally followed by anything after ".", "-" or "+" (a `uname -r` release
# such as 6.12.117+deb13-amd64 or 6.1.0-rc1 parses too).
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:[.\-+].*)?$")
HOST_BTF = Path("/sys/kernel/btf/vmlinux")


def parse_kernel_version(text: str) -> KernelVersion | None:
    """`"6.1"`, `"6.12.117+deb13-amd64"` → (major, minor); None when it is not a version."""
    m = _VERSION.match(text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def running_kernel_version() -> KernelVersion:
    """This host's kernel ((0, 0) when `uname -r` is not a version)."""
    return parse_kernel_version(os.uname().release) or (0, 0)


def format_kernel_version(version: KernelVersion) -> str:
    return f"{version[0]}.{version[1]}"


class KernelFeatures(TypedDict, total=False):
    """What a target kernel offers BPF programs: probed from this host's files, handed in
    by a probe that loads programs (doctor), or from a table for `--kernel X.Y`.
    `reasons` says why each missing feature is missing."""

    kernel: str  # "6.12"
    source: str  # where these facts come from
    btf: bool
    kprobes: bool
    kprobe_override: bool
    error_injection: bool
    trampoline: bool
    bpf_lsm: bool
    syscall_tracepoints: bool
    send_signal: bool
    reasons: dict[str, str]


@dataclass(frozen=True)
class Target:
    """The kernel a compile targets. `kernel=None` means the running kernel, whose BTF and
    features can be read from this host; an explicit version is described by tables."""

    kernel: KernelVersion | None = None
    arch: str = "x86_64"
    features: KernelFeatures | None = None  # probe results handed in (doctor, tests)

    @property
    def is_host(self) -> bool:
        return self.kernel is None

    @property
    def version(self) -> KernelVersion:
        return self.kernel if self.kernel is not None else running_kernel_version()

    @property
    def version_text(self) -> str:
        return format_kernel_version(self.version)

    @property
    def btf(self) -> Path | None:
        """The kernel's own BTF when the target is this host and it has one."""
        return HOST_BTF if self.is_host and HOST_BTF.exists() else None
