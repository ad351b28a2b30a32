"""What a host running bpfpolicy needs from the system, named in one place.

These are the run-time needs of `validate`/`compile`/`apply`/`watch` — found by what the
package really executes or loads (not what the test suite or the kernel matrix uses):

* clang           codegen/build.py compiles the generated C with `clang -target bpf`
* BPF headers     <bpf/bpf_helpers.h> (libbpf-dev) and <linux/bpf.h> (linux-libc-dev)
* libbpf.so.1     kernel/libbpf.py loads, pins and attaches through it (ctypes)
* bpftool         kernel/bpftool.py reads program/map/link state (drift checks, status)
* ip (iproute2)   kernel/netns.py: netns and link handling for namespaced interfaces
* git             controller/source.py: the git source (only with `source: {git: ...}`)
* gpg             controller/source.py: signed-commit verification (only with trustedKeys)

scripts/setup.sh installs the Debian packages listed here (`apt_packages()`); `bpfpolicy
doctor` checks them (its `requirements` rows). Development and test tools (QEMU, gcc-multilib,
xdp-tools, scapy, nftables, Prometheus) are scripts/setup-dev.sh's business.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Requirement:
    """One system need: how to find it on this host, and which package provides it."""

    name: str
    kind: str  # "executable" | "library" | "header"
    probe: str  # an executable name, a library soname, or a header path under /usr/include
    debian_package: str
    needed_for: str
    optional: bool = False  # only some configurations need it


@dataclass(frozen=True)
class RequirementCheck:
    requirement: Requirement
    found: str | None  # where it was found, None when missing

    @property
    def ok(self) -> bool:
        return self.found is not None


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("clang", "executable", "clang", "clang", "compiling generated C to BPF objects"),
    Requirement("libbpf headers", "header", "bpf/bpf_helpers.h", "libbpf-dev",
                "#include <bpf/bpf_helpers.h> in generated programs"),
    Requirement("kernel UAPI headers", "header", "linux/bpf.h", "linux-libc-dev",
                "#include <linux/bpf.h> in generated programs"),
    Requirement("libbpf", "library", "libbpf.so.1", "libbpf1", "loading, pinning, attaching (ctypes)"),
    Requirement("bpftool", "executable", "bpftool", "bpftool", "reading program/map state (drift, status)"),
    Requirement("ip", "executable", "ip", "iproute2", "network namespaces of namespaced interfaces"),
    Requirement("git", "executable", "git", "git", "a git policy source", optional=True),
    Requirement("gpg", "executable", "gpg", "gnupg", "signed-commit verification (trustedKeys)",
                optional=True),
)


def apt_packages() -> list[str]:
    """The Debian packages a host needs (scripts/setup.sh installs these)."""
    return sorted({r.debian_package for r in REQUIREMENTS})


_LIBRARY_DIRS = tuple(Path(d) for d in (
    f"/usr/lib/{platform.machine()}-linux-gnu", f"/lib/{platform.machine()}-linux-gnu",
    "/usr/lib64", "/usr/lib", "/lib64", "/lib", "/usr/local/lib"))


def _find(req: Requirement) -> str | None:
    if req.kind == "executable":
        return shutil.which(req.probe)
    if req.kind == "library":  # found on disk; loading it is kernel/libbpf.py's job
        hits = (d / req.probe for d in _LIBRARY_DIRS)
        return next((str(p) for p in hits if p.exists()), None)
    for base in (Path("/usr/include"), Path("/usr/local/include")):
        if (base / req.probe).is_file():
            return str(base / req.probe)
    return None


def check_all() -> list[RequirementCheck]:
    return [RequirementCheck(req, _find(req)) for req in REQUIREMENTS]


def missing_required(checks: list[RequirementCheck]) -> list[Requirement]:
    return [c.requirement for c in checks if not c.ok and not c.requirement.optional]


if __name__ == "__main__":  # `python -m bpfpolicy.hostreqs`: the apt list, for setup.sh
    print(" ".join(apt_packages()))
