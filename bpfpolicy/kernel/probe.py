"""Ask the running kernel what it accepts, by trying: load a given BPF object through the
verifier, attach it in a throwaway netns or cgroup, install a seccomp filter in a child.

This module gets object bytes (or a classic-BPF filter) from its caller and never builds
anything: `bpfpolicy.doctor` writes the probe programs with the code generator and asks
here. Each probe cleans up what it made (pins, netns, cgroup) on every exit, and answers
with a `ProbeResult` whose `detail` says why when the kernel refuses — the libbpf/bpftool
line that names the errno, with the lockdown mode when lockdown is the likely cause.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BPFFS = Path("/sys/fs/bpf")
SECURITYFS = Path("/sys/kernel/security")
DETAIL_MAX = 160  # characters of a kernel/tool message kept in a doctor row (fits one line)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool | None  # None: could not be tried here
    detail: str


# --------------------------------------------------------------------------- host facts


def read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def mounts() -> list[list[str]]:
    """`/proc/self/mounts` split into fields ([] when unreadable)."""
    try:
        return [ln.split() for ln in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return []


def is_mount(path: Path, fstype: str) -> bool:
    return any(len(p) > 2 and p[1] == str(path) and p[2] == fstype for p in mounts())


def cgroup2_root() -> Path | None:
    return next((Path(p[1]) for p in mounts() if len(p) > 2 and p[2] == "cgroup2"), None)


def ensure_securityfs() -> None:
    """Mount securityfs when root and it is missing: lockdown and the LSM list live there."""
    if os.geteuid() == 0 and SECURITYFS.is_dir() and not is_mount(SECURITYFS, "securityfs"):
        subprocess.run(["mount", "-t", "securityfs", "securityfs", str(SECURITYFS)],
                       capture_output=True, check=False)


def lockdown() -> str | None:
    """The active lockdown mode (`none`, `integrity`, `confidentiality`) or None."""
    m = re.search(r"\[(\w+)\]", read(SECURITYFS / "lockdown") or "")
    return m.group(1) if m else None


def libbpf_version() -> ProbeResult:
    from . import libbpf

    try:
        major, minor = libbpf.version()
    except (OSError, AttributeError) as e:
        return ProbeResult(False, str(e))
    return ProbeResult(True, f"{major}.{minor}")


# --------------------------------------------------------------------------- helpers


def why(stderr: str) -> str:
    """The line of libbpf/bpftool output that says why, not its generic trailer."""
    noise = ("Warning:", "If it used to work", "libbpf: failed to load object", "Error: failed to load")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.strip().startswith(noise)]
    for ln in lines:
        if re.search(r"(-E\w+|Operation not permitted|Invalid argument|No such file|not supported"
                     r"|Permission denied|File exists)", ln):
            reason = ln.removeprefix("libbpf: ")
            mode = lockdown()
            if "Operation not permitted" in reason and mode not in (None, "none"):
                reason += f" (kernel lockdown={mode})"
            return reason[-DETAIL_MAX:]
    return (lines[-1] if lines else "load failed")[-DETAIL_MAX:]


@contextlib.contextmanager
def _object_file(obj: bytes) -> Iterator[Path]:
    """The object on disk for bpftool/ip/tc, removed afterwards."""
    fd, name = tempfile.mkstemp(suffix=".o", prefix="bpfpolicy-probe-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(obj)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def _pin() -> Iterator[Path]:
    pin = BPFFS / f"bpfpolicy-probe-{uuid.uuid4().hex[:8]}"
    try:
        yield pin
    finally:
        pin.unlink(missing_ok=True)


def _in_netns(commands: list[list[str]]) -> subprocess.CompletedProcess[str]:
    """Run commands in a fresh netns (deleted afterwards); stop at the first failure."""
    ns = f"bpfpolicy-probe-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        proc = subprocess.CompletedProcess([], 0, "", "")
        for cmd in commands:
            proc = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True)
            if proc.returncode != 0:
                return proc
        return proc
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


# --------------------------------------------------------------------------- probes


def load(obj: bytes) -> ProbeResult:
    """Load every program of `obj` through the verifier (bpftool), pin, unpin."""
    with _object_file(obj) as path, _pin() as pin:
        proc = subprocess.run(["bpftool", "prog", "load", str(path), str(pin)], capture_output=True, text=True)
    if proc.returncode == 0:
        return ProbeResult(True, "verifier accepted")
    return ProbeResult(False, why(proc.stderr))


def attach_xdp_generic(obj: bytes, section: str = "xdp") -> ProbeResult:
    """Attach an XDP object on `lo` of a throwaway netns in generic (skb) mode."""
    with _object_file(obj) as path:
        proc = _in_netns([["ip", "link", "set", "lo", "xdpgeneric", "obj", str(path), "sec", section]])
    return ProbeResult(proc.returncode == 0,
                       "attached on lo in a throwaway netns" if proc.returncode == 0 else why(proc.stderr))


def attach_tc_clsact(obj: bytes, section: str = "tc") -> ProbeResult:
    """A clsact qdisc plus a direct-action cls_bpf filter on `lo` of a throwaway netns."""
    with _object_file(obj) as path:
        proc = _in_netns([["tc", "qdisc", "add", "dev", "lo", "clsact"],
                          ["tc", "filter", "add", "dev", "lo", "ingress", "bpf", "da", "obj", str(path),
                           "sec", section]])
    return ProbeResult(proc.returncode == 0,
                       "cls_bpf direct-action on lo" if proc.returncode == 0 else why(proc.stderr))


def tcx() -> ProbeResult:
    """tcx needs BPF_LINK_CREATE with BPF_TCX_INGRESS (6.6+): ask the kernel with a
    BPF_PROG_QUERY for that attach type (bookworm's bpftool cannot attach tcx)."""
    from . import tc

    try:
        ok, detail = tc.tcx_supported()
    except OSError:
        release = platform.release().split(".")
        ok = (int(release[0]), int(re.sub(r"\D.*", "", release[1]) or 0)) >= (6, 6)
        return ProbeResult(ok, "by kernel version (6.6+); not tried")
    return ProbeResult(ok, detail)


def attach_cgroup_skb(obj: bytes, direction: str = "ingress") -> ProbeResult:
    """Load `obj` and attach it to a throwaway child of the cgroup v2 root."""
    root = cgroup2_root()
    if root is None:
        return ProbeResult(None, "no cgroup v2 mount")
    cg = root / f"bpfpolicy-probe-{uuid.uuid4().hex[:6]}"
    try:
        cg.mkdir()
        with _object_file(obj) as path, _pin() as pin:
            loaded = subprocess.run(["bpftool", "prog", "load", str(path), str(pin)], capture_output=True, text=True)
            if loaded.returncode != 0:
                return ProbeResult(False, why(loaded.stderr))
            att = subprocess.run(["bpftool", "cgroup", "attach", str(cg), direction, "pinned", str(pin)],
                                 capture_output=True, text=True)
        return ProbeResult(att.returncode == 0,
                           "attached to a throwaway cgroup" if att.returncode == 0 else why(att.stderr))
    finally:
        with contextlib.suppress(OSError):
            cg.rmdir()  # the attachment goes with the cgroup


def install_seccomp(filter_bytes: bytes) -> ProbeResult:
    """Install a classic-BPF seccomp filter in a forked child (NO_NEW_PRIVS + seccomp(2))."""
    from .seccomp import verify

    error = verify(filter_bytes)
    return ProbeResult(error is None, "filter installed in a child" if error is None else error)
