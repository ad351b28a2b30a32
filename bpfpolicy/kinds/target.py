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
import struct
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
        """The kernel's own BTF: this host's, or the one extracted from the matrix cache's
        image of that kernel for this arch (None when neither is at hand)."""
        if self.is_host:
            return HOST_BTF if HOST_BTF.exists() else None
        return matrix_btf(self.version, self.arch)

    @property
    def foreign_arch(self) -> bool:
        """Another architecture than this host's: host BTF and headers do not describe it."""
        return debian_arch(self.arch) != debian_arch(os.uname().machine)

    def facts(self) -> KernelFacts:
        """The kernel's own facts: this host's files, or the matrix cache's package."""
        return host_facts() if self.is_host else matrix_facts(self.version, self.arch)


# uname -m / CompileContext.arch spellings -> Debian's architecture names (matrix cache dirs).
_DEBIAN_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def debian_arch(arch: str) -> str:
    return _DEBIAN_ARCH.get(arch, arch)


# ------------------------------------------------------------------ the target's own facts
# Read from the kernel itself, never guessed from its distribution: its build config, the
# active LSM list, its BTF and the functions on its error-injection list (the only
# functions fmod_ret and bpf_override_return may change: the kernel refuses others with
# "<func>() is not modifiable").

HOST_CONFIGS = (Path("/proc/config.gz"),)  # plus /boot/config-$(uname -r), below
HOST_LSM = Path("/sys/kernel/security/lsm")
HOST_ERROR_INJECTION = Path("/sys/kernel/debug/error_injection/list")
# The matrix guest's boot command line sets lsm= (bpfpolicy/matrix/guest.py CMDLINE; a
# test keeps the two equal — kinds may not import the matrix).
MATRIX_LSM = "lockdown,capability,yama,bpf"
# ALLOW_ERROR_INJECTION(func, type) emits a static `_eil_addr_<func>` entry into the
# `_error_injection_whitelist` section; System.map lists each one by that name.
_EIL_SYMBOL = re.compile(r"^[0-9a-fA-F]+ [dD] _eil_addr_(\w+)$", re.M)
# A warning whose message starts with this says a hook runs on another backend than the
# policy asked for; `--strict-backend` (validate, compile) turns it into an error.
BACKEND_CHANGE = "backend change: "


def is_backend_change(message: str) -> bool:
    return message.startswith(BACKEND_CHANGE)


def parse_config(text: str) -> dict[str, str]:
    """`CONFIG_X=y` lines → {"CONFIG_X": "y"}; `# CONFIG_X is not set` lines are absent."""
    return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M))


def read_config(path: Path) -> dict[str, str] | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if path.suffix == ".gz":
        import gzip

        raw = gzip.decompress(raw)
    return parse_config(raw.decode(errors="replace"))


def error_injection_from_system_map(text: str) -> frozenset[str]:
    return frozenset(_EIL_SYMBOL.findall(text))


def error_injection_from_debugfs(text: str) -> frozenset[str]:
    """debugfs `error_injection/list` lines: `<func>\t<type>`."""
    return frozenset(line.split()[0] for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class KernelFacts:
    """What one kernel says about itself. `None` = not determinable here (and then a
    feature that depends on it is refused with `where` named, never assumed)."""

    kernel: str  # "6.12"
    release: str | None  # uname -r of that kernel, when known
    config: dict[str, str] | None
    config_source: str | None
    lsm: list[str] | None  # the active LSMs, in order
    lsm_source: str | None
    btf: bool | None
    error_injection: frozenset[str] | None  # functions fmod_ret/override may change
    error_injection_source: str | None
    where: str  # where the facts were looked for, for messages

    def flag(self, name: str) -> bool | None:
        """CONFIG_<name> is y/m (True), absent (False), or the config is unknown (None)."""
        if self.config is None:
            return None
        return self.config.get(name) in ("y", "m")


def host_facts() -> KernelFacts:
    """This host: /proc/config.gz or /boot/config-$(uname -r), securityfs' lsm list,
    /sys/kernel/btf/vmlinux, debugfs' error-injection list (when debugfs is mounted)."""
    release = os.uname().release
    config, config_source = None, None
    for path in (*HOST_CONFIGS, Path(f"/boot/config-{release}")):
        config = read_config(path)
        if config is not None:
            config_source = str(path)
            break
    lsm, lsm_source = _read_list(HOST_LSM), str(HOST_LSM)
    if lsm is None:
        cmdline = _read_text(Path("/proc/cmdline")) or ""
        m = re.search(r"\blsm=(\S+)", cmdline)
        if m:
            lsm, lsm_source = m.group(1).split(","), "/proc/cmdline lsm="
        elif config and "CONFIG_LSM" in config:
            lsm, lsm_source = config["CONFIG_LSM"].strip('"').split(","), f"{config_source} CONFIG_LSM"
        else:
            lsm_source = None
    injection_text = _read_text(HOST_ERROR_INJECTION)
    injection = error_injection_from_debugfs(injection_text) if injection_text is not None else None
    if injection is None and config is not None and not config.get("CONFIG_FUNCTION_ERROR_INJECTION"):
        injection = frozenset()  # no error injection at all: the list is empty by definition
    return KernelFacts(
        kernel=format_kernel_version(running_kernel_version()), release=release,
        config=config, config_source=config_source, lsm=lsm, lsm_source=lsm_source,
        btf=HOST_BTF.exists(), error_injection=injection,
        error_injection_source=str(HOST_ERROR_INJECTION) if injection_text is not None else config_source,
        where=f"this host ({release})")


def matrix_kernel_dir(kernel: KernelVersion, arch: str = "x86_64") -> Path | None:
    """The kernel-test cache's unpacked Debian package of this kernel (matrix/kernels.py
    keeps vmlinuz, kernel.json, config, System.map in kernels/<member> for amd64 and
    kernels/<member>-<arch> for the others), when its release is X.Y."""
    import json

    from ..resources import cache_dir

    suffix = "" if debian_arch(arch) == "amd64" else f"-{debian_arch(arch)}"
    for key in (format_kernel_version(kernel), str(kernel[0])):
        d = cache_dir() / "kernels" / f"{key}{suffix}"
        try:
            release = json.loads((d / "kernel.json").read_text())["release"]
        except (OSError, ValueError, KeyError):
            continue
        if parse_kernel_version(release) == kernel:
            return d
    return None


def matrix_facts(kernel: KernelVersion, arch: str = "x86_64") -> KernelFacts:
    """A matrix kernel, from its own Debian package in the cache: config-<release>,
    System.map-<release> (error-injection entries), the image's BTF, and lsm= from the
    guest's boot command line (CONFIG_LSM when the command line does not set it)."""
    text = format_kernel_version(kernel)
    d = matrix_kernel_dir(kernel, arch)
    if d is None:
        flag = "" if debian_arch(arch) == "amd64" else f" --arch {debian_arch(arch)}"
        return KernelFacts(text, None, None, None, None, None, None, None, None,
                           f"the kernel-test cache (no {debian_arch(arch)} kernel {text} there: "
                           f"`bpfpolicy kernel-test{flag} --kernels {text}` brings it)")
    import json

    release = json.loads((d / "kernel.json").read_text())["release"]
    config = read_config(d / "config")
    smap = _read_text(d / "System.map")
    injection: frozenset[str] | None = None
    injection_source = None
    if config is not None and not config.get("CONFIG_FUNCTION_ERROR_INJECTION"):
        injection, injection_source = frozenset(), f"{d / 'config'}"
    elif smap is not None:
        injection, injection_source = error_injection_from_system_map(smap), str(d / "System.map")
    return KernelFacts(
        kernel=text, release=release, config=config,
        config_source=str(d / "config") if config is not None else None,
        lsm=MATRIX_LSM.split(","), lsm_source="the matrix guest's boot command line (lsm=)",
        btf=config.get("CONFIG_DEBUG_INFO_BTF") == "y" if config is not None else None,
        error_injection=injection, error_injection_source=injection_source,
        where=f"the kernel-test cache {d} ({release})")


# ---------------------------------------------------------------- a matrix kernel's BTF
# The BTF header (include/uapi/linux/btf.h): magic 0xEB9F, version 1, flags 0, hdr_len 24,
# then type_off, type_len, str_off, str_len (offsets after the header). An uncompressed
# image (Debian's arm64 Image, stored decompressed by the matrix) carries the .BTF blob
# verbatim; a bzImage holds it inside its compressed ELF (kinds/btf.btf_from_vmlinuz).
_BTF_HEADER = struct.Struct("<HBBIIIII")
_BTF_PREFIX = b"\x9f\xeb\x01\x00\x18\x00\x00\x00"
# A kernel's BTF is MBs of types; anything smaller is a stray match of the magic.
MIN_KERNEL_BTF = 64 * 1024


def btf_in_raw_image(data: bytes) -> bytes | None:
    """The largest well-formed BTF blob in an uncompressed kernel image."""
    best = b""
    start = data.find(_BTF_PREFIX)
    while start >= 0:
        _m, _v, _f, hdr_len, type_off, type_len, str_off, str_len = _BTF_HEADER.unpack_from(data, start)
        total = hdr_len + str_off + str_len
        if type_off == 0 and type_len <= str_off and start + total <= len(data) and total > len(best):
            best = data[start:start + total]
        start = data.find(_BTF_PREFIX, start + 1)
    return best if len(best) >= MIN_KERNEL_BTF else None


def matrix_btf(kernel: KernelVersion, arch: str = "x86_64") -> Path | None:
    """The BTF of a matrix kernel (that arch's image in the kernel-test cache), extracted
    once into cache/btf/ keyed by cache dir (member-arch), size and mtime; None when not cached."""
    from ..resources import cache_dir
    from .btf import btf_from_vmlinuz

    d = matrix_kernel_dir(kernel, arch)
    image = d / "vmlinuz" if d is not None else None
    if image is None or not image.is_file():
        return None
    st = image.stat()
    out = cache_dir() / "btf" / f"{d.name}-{st.st_size}-{int(st.st_mtime)}.btf"
    if out.exists():
        return out
    raw = btf_in_raw_image(image.read_bytes()) or btf_from_vmlinuz(image)
    if raw is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, out)
    return out


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_list(path: Path) -> list[str] | None:
    text = _read_text(path)
    return [x for x in text.strip().split(",") if x] if text is not None else None
