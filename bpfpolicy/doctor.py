"""What this host supports, found by trying: each program type is compiled and loaded
through the verifier, each attach type attached in a throwaway netns or cgroup.

Reading config files says what a kernel was built with; only a real load says what it
accepts today (lockdown, LSM stacking, missing BTF all change the answer).
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from .codegen.build import build_bpf, clang_version, vmlinux_header
from .policy.diagnostics import BuildError

BPFFS = Path("/sys/fs/bpf")


@dataclass
class Check:
    area: str
    name: str
    ok: bool | None  # None = could not be tried here
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# Minimal programs per type: (section, return statement, needs vmlinux.h)
PROGRAMS: dict[str, tuple[str, str, bool]] = {
    "socket_filter": ('SEC("socket") int p(struct __sk_buff *s)', "return 0;", False),
    "xdp": ('SEC("xdp") int p(struct xdp_md *c)', "return XDP_PASS;", False),
    "tc (sched_cls)": ('SEC("tc") int p(struct __sk_buff *s)', "return 0;", False),
    "cgroup_skb": ('SEC("cgroup_skb/ingress") int p(struct __sk_buff *s)', "return 1;", False),
    "tracepoint": ('SEC("tracepoint/syscalls/sys_enter_getppid") int p(void *c)', "return 0;", False),
    "raw_tracepoint": ('SEC("raw_tracepoint/sys_enter") int p(void *c)', "return 0;", False),
    "kprobe": ('SEC("kprobe/do_sys_openat2") int p(void *c)', "return 0;", False),
    "fentry": ('SEC("fentry/do_sys_openat2") int p(void *c)', "return 0;", False),
    "fmod_ret": ('SEC("fmod_ret/security_file_open") int p(void *c)', "return 0;", False),
    "lsm": ('SEC("lsm/file_open") int p(void *c)', "return 0;", False),
}


def run_all() -> list[Check]:
    checks = host_facts() + toolchain() + requirements()
    checks += program_loads()
    checks += attach_checks()
    return checks


# --------------------------------------------------------------------------- facts


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def host_facts() -> list[Check]:
    out = [Check("kernel", "release", True, platform.release())]
    btf = Path("/sys/kernel/btf/vmlinux").exists()
    out.append(Check("kernel", "BTF", btf, "/sys/kernel/btf/vmlinux" if btf else "absent: CO-RE/fentry/LSM unavailable"))
    _mount("securityfs", "/sys/kernel/security")
    lockdown = _read("/sys/kernel/security/lockdown")
    mode = re.search(r"\[(\w+)\]", lockdown or "")
    out.append(Check("kernel", "lockdown", mode is None or mode.group(1) == "none",
                     mode.group(1) if mode else "unknown (securityfs unreadable)"))
    lsm = _read("/sys/kernel/security/lsm") or ""
    out.append(Check("kernel", "BPF LSM active", "bpf" in lsm.split(","),
                     lsm or "unknown" if "bpf" in lsm.split(",") else f"lsm={lsm or '?'} (boot with lsm=...,bpf)"))
    kprobes = Path("/sys/bus/event_source/devices/kprobe").exists()
    out.append(Check("kernel", "kprobes", kprobes, "kprobe PMU present" if kprobes else "no kprobe PMU (CONFIG_KPROBES off)"))
    jit = _read("/proc/sys/net/core/bpf_jit_enable")
    out.append(Check("kernel", "BPF JIT", jit in ("1", "2"), f"bpf_jit_enable={jit}"))
    out.append(Check("mounts", "bpffs", _is_mount(BPFFS, "bpf"), str(BPFFS)))
    out.append(Check("mounts", "tracefs", _is_mount(Path("/sys/kernel/tracing"), "tracefs"), "/sys/kernel/tracing"))
    cg = _cgroup2_root()
    out.append(Check("mounts", "cgroup v2", cg is not None, str(cg) if cg else "no cgroup2 mount"))
    return out


def requirements() -> list[Check]:
    """Every system need named in bpfpolicy/hostreqs.py: found where, or the package."""
    from .hostreqs import check_all

    return [Check("requirements", c.requirement.name, c.ok or c.requirement.optional,
                  c.found or f"missing (apt install {c.requirement.debian_package}): "
                             f"{c.requirement.needed_for}")
            for c in check_all()]


def toolchain() -> list[Check]:
    out = []
    try:
        out.append(Check("tools", "clang", True, clang_version()))
    except BuildError as e:
        out.append(Check("tools", "clang", False, str(e)))
    bpftool = shutil.which("bpftool")
    ver = subprocess.run([bpftool, "version"], capture_output=True, text=True).stdout.splitlines()[0] if bpftool else ""
    out.append(Check("tools", "bpftool", bool(bpftool), ver or "not installed"))
    try:
        lib = ctypes.CDLL("libbpf.so.1")
        major, minor = lib.libbpf_major_version(), lib.libbpf_minor_version()
        out.append(Check("tools", "libbpf", True, f"{major}.{minor}"))
    except (OSError, AttributeError) as e:
        out.append(Check("tools", "libbpf", False, str(e)))
    return out


# --------------------------------------------------------------------------- loads


def program_loads() -> list[Check]:
    if os.geteuid() != 0:
        return [Check("load", t, None, "needs root") for t in PROGRAMS]
    if not shutil.which("bpftool") or not _is_mount(BPFFS, "bpf"):
        return [Check("load", t, None, "needs bpftool and a mounted bpffs") for t in PROGRAMS]
    checks = [_try_load(t, *spec) for t, spec in PROGRAMS.items()]
    if not Path("/sys/bus/event_source/devices/kprobe").exists():
        for c in checks:  # a kprobe program verifies without kprobes, but cannot attach
            if c.name == "kprobe" and c.ok:
                c.ok, c.detail = False, "verifier accepts it, but no kprobe PMU to attach to (CONFIG_KPROBES off)"
    return checks


def _program_source(signature: str, body: str) -> str:
    return ("#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
            f"{signature} {{ {body} }}\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n")


def _try_load(ptype: str, signature: str, body: str, _vmlinux: bool) -> Check:
    try:
        obj = build_bpf(_program_source(signature, body), name="probe").object
    except BuildError as e:
        return Check("load", ptype, None, f"could not build probe: {e}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.o"
        path.write_bytes(obj)
        pin = BPFFS / f"bpfpolicy-probe-{uuid.uuid4().hex[:8]}"
        proc = subprocess.run(["bpftool", "prog", "load", str(path), str(pin)], capture_output=True, text=True)
        pin.unlink(missing_ok=True)
    if proc.returncode == 0:
        return Check("load", ptype, True, "verifier accepted")
    return Check("load", ptype, False, _why(proc.stderr))


def _why(stderr: str) -> str:
    """The line of libbpf/bpftool output that says why, not its generic trailer."""
    noise = ("Warning:", "If it used to work", "libbpf: failed to load object", "Error: failed to load")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.strip().startswith(noise)]
    for ln in lines:
        if re.search(r"(-E\w+|Operation not permitted|Invalid argument|No such file|not supported|Permission denied|File exists)", ln):
            why = ln.removeprefix("libbpf: ")
            if "Operation not permitted" in why and _lockdown() not in (None, "none"):
                why += f" (kernel lockdown={_lockdown()})"
            return why[-160:]
    return (lines[-1] if lines else "load failed")[-160:]


def _lockdown() -> str | None:
    m = re.search(r"\[(\w+)\]", _read("/sys/kernel/security/lockdown") or "")
    return m.group(1) if m else None


# --------------------------------------------------------------------------- attach


def attach_checks() -> list[Check]:
    if os.geteuid() != 0:
        return [Check("attach", n, None, "needs root") for n in ("xdp (generic)", "tc clsact", "tcx", "cgroup_skb", "seccomp")]
    return [_xdp_attach(), _tc_attach(), _tcx_attach(), _cgroup_attach(), _seccomp_install()]


def _in_netns(commands: list[list[str]]) -> subprocess.CompletedProcess[str]:
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


def _probe_object(ptype: str) -> Path:
    sig, body, _ = PROGRAMS[ptype]
    obj = build_bpf(_program_source(sig, body), name="probe").object
    path = Path(tempfile.mkstemp(suffix=".o", prefix="bpfpolicy-probe-")[1])
    path.write_bytes(obj)
    return path


def _xdp_attach() -> Check:
    obj = _probe_object("xdp")
    try:
        proc = _in_netns([["ip", "link", "set", "lo", "xdpgeneric", "obj", str(obj), "sec", "xdp"]])
    finally:
        obj.unlink()
    return Check("attach", "xdp (generic)", proc.returncode == 0, "attached on lo in a throwaway netns" if proc.returncode == 0 else _why(proc.stderr))


def _tc_attach() -> Check:
    obj = _probe_object("tc (sched_cls)")
    try:
        proc = _in_netns([["tc", "qdisc", "add", "dev", "lo", "clsact"],
                          ["tc", "filter", "add", "dev", "lo", "ingress", "bpf", "da", "obj", str(obj), "sec", "tc"]])
    finally:
        obj.unlink()
    return Check("attach", "tc clsact", proc.returncode == 0, "cls_bpf direct-action on lo" if proc.returncode == 0 else _why(proc.stderr))


def _tcx_attach() -> Check:
    """tcx needs BPF_LINK_CREATE with BPF_TCX_INGRESS (6.6+); bookworm's bpftool cannot,
    so the probe asks the kernel through the kernel layer when it is available."""
    try:
        from .kernel import tc  # type: ignore[attr-defined]

        supported = getattr(tc, "tcx_supported", None)
        if supported is None:
            raise ImportError
        ok, detail = supported()
        return Check("attach", "tcx", ok, detail)
    except ImportError:
        release = platform.release().split(".")
        ok = (int(release[0]), int(re.sub(r"\D.*", "", release[1]) or 0)) >= (6, 6)
        return Check("attach", "tcx", ok, "by kernel version (6.6+); not tried")


def _cgroup_attach() -> Check:
    root = _cgroup2_root()
    if root is None:
        return Check("attach", "cgroup_skb", None, "no cgroup v2 mount")
    cg = root / f"bpfpolicy-probe-{uuid.uuid4().hex[:6]}"
    obj = _probe_object("cgroup_skb")
    pin = BPFFS / f"bpfpolicy-probe-{uuid.uuid4().hex[:8]}"
    try:
        cg.mkdir()
        load = subprocess.run(["bpftool", "prog", "load", str(obj), str(pin)], capture_output=True, text=True)
        if load.returncode != 0:
            return Check("attach", "cgroup_skb", False, _why(load.stderr))
        att = subprocess.run(["bpftool", "cgroup", "attach", str(cg), "ingress", "pinned", str(pin)],
                             capture_output=True, text=True)
        return Check("attach", "cgroup_skb", att.returncode == 0,
                     "attached to a throwaway cgroup" if att.returncode == 0 else _why(att.stderr))
    finally:
        pin.unlink(missing_ok=True)
        obj.unlink()
        try:
            cg.rmdir()
        except OSError:
            pass


def _seccomp_install() -> Check:
    """Install an allow-all filter in a throwaway child (NO_NEW_PRIVS + seccomp(2))."""
    from .kernel.seccomp import verify

    allow_all = bytes([0x06, 0, 0, 0, 0, 0, 0xFF, 0x7F])  # ret SECCOMP_RET_ALLOW
    error = verify(allow_all)
    return Check("attach", "seccomp", error is None, "filter installed in a child" if error is None else error)


# --------------------------------------------------------------------------- helpers


def _is_mount(path: Path, fstype: str) -> bool:
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[1] == str(path) and parts[2] == fstype:
                return True
    except OSError:
        pass
    return False


def _cgroup2_root() -> Path | None:
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    except OSError:
        pass
    return None


def _mount(fstype: str, where: str) -> None:
    if os.geteuid() == 0 and Path(where).is_dir() and not _is_mount(Path(where), fstype):
        subprocess.run(["mount", "-t", fstype, fstype, where], capture_output=True, check=False)


__all__ = ["Check", "run_all", "vmlinux_header"]
