"""What this host supports, found by trying: each program type is compiled and loaded
through the verifier, each attach type attached in a throwaway netns or cgroup.

Reading config files says what a kernel was built with; only a real load says what it
accepts today (lockdown, LSM stacking, missing BTF all change the answer). This module
writes the probe programs (code generator) and turns answers into rows; the loading and
attaching itself is `kernel.probe`'s job, the system needs are `hostreqs`'.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from .codegen.build import build_bpf, clang_version, vmlinux_header
from .hostreqs import check_all
from .kernel import probe
from .kernel.probe import BPFFS, ProbeResult, cgroup2_root, is_mount
from .policy.diagnostics import BuildError


@dataclass
class Check:
    area: str
    name: str
    ok: bool | None  # None = could not be tried here
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def of(cls, area: str, name: str, result: ProbeResult) -> Check:
        return cls(area, name, result.ok, result.detail)


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


def host_facts() -> list[Check]:
    out = [Check("kernel", "release", True, platform.release())]
    btf = Path("/sys/kernel/btf/vmlinux").exists()
    out.append(Check("kernel", "BTF", btf, "/sys/kernel/btf/vmlinux" if btf else "absent: CO-RE/fentry/LSM unavailable"))
    probe.ensure_securityfs()
    mode = probe.lockdown()
    out.append(Check("kernel", "lockdown", mode is None or mode == "none", mode or "unknown (securityfs unreadable)"))
    lsm = probe.read("/sys/kernel/security/lsm") or ""
    out.append(Check("kernel", "BPF LSM active", "bpf" in lsm.split(","),
                     lsm or "unknown" if "bpf" in lsm.split(",") else f"lsm={lsm or '?'} (boot with lsm=...,bpf)"))
    kprobes = _has_kprobes()
    out.append(Check("kernel", "kprobes", kprobes, "kprobe PMU present" if kprobes else "no kprobe PMU (CONFIG_KPROBES off)"))
    jit = probe.read("/proc/sys/net/core/bpf_jit_enable")
    out.append(Check("kernel", "BPF JIT", jit in ("1", "2"), f"bpf_jit_enable={jit}"))
    out.append(Check("mounts", "bpffs", is_mount(BPFFS, "bpf"), str(BPFFS)))
    out.append(Check("mounts", "tracefs", is_mount(Path("/sys/kernel/tracing"), "tracefs"), "/sys/kernel/tracing"))
    cg = cgroup2_root()
    out.append(Check("mounts", "cgroup v2", cg is not None, str(cg) if cg else "no cgroup2 mount"))
    return out


def _has_kprobes() -> bool:
    return Path("/sys/bus/event_source/devices/kprobe").exists()


def requirements() -> list[Check]:
    """Every system need named in bpfpolicy/hostreqs.py: found where, or the package."""
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
    out.append(Check.of("tools", "libbpf", probe.libbpf_version()))
    return out


# --------------------------------------------------------------------------- loads


def program_loads() -> list[Check]:
    if os.geteuid() != 0:
        return [Check("load", t, None, "needs root") for t in PROGRAMS]
    if not shutil.which("bpftool") or not is_mount(BPFFS, "bpf"):
        return [Check("load", t, None, "needs bpftool and a mounted bpffs") for t in PROGRAMS]
    checks = [_try_load(t) for t in PROGRAMS]
    if not _has_kprobes():
        for c in checks:  # a kprobe program verifies without kprobes, but cannot attach
            if c.name == "kprobe" and c.ok:
                c.ok, c.detail = False, "verifier accepts it, but no kprobe PMU to attach to (CONFIG_KPROBES off)"
    return checks


def _program_source(signature: str, body: str) -> str:
    return ("#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
            f"{signature} {{ {body} }}\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n")


def probe_object(ptype: str) -> bytes:
    """The compiled probe program for one row of PROGRAMS (raises BuildError)."""
    sig, body, _ = PROGRAMS[ptype]
    return build_bpf(_program_source(sig, body), name="probe").object


def _try_load(ptype: str) -> Check:
    try:
        obj = probe_object(ptype)
    except BuildError as e:
        return Check("load", ptype, None, f"could not build probe: {e}")
    return Check.of("load", ptype, probe.load(obj))


# --------------------------------------------------------------------------- attach

ALLOW_ALL_SECCOMP = bytes([0x06, 0, 0, 0, 0, 0, 0xFF, 0x7F])  # one insn: ret SECCOMP_RET_ALLOW


def attach_checks() -> list[Check]:
    if os.geteuid() != 0:
        return [Check("attach", n, None, "needs root") for n in ("xdp (generic)", "tc clsact", "tcx", "cgroup_skb", "seccomp")]
    return [Check.of("attach", "xdp (generic)", probe.attach_xdp_generic(probe_object("xdp"))),
            Check.of("attach", "tc clsact", probe.attach_tc_clsact(probe_object("tc (sched_cls)"))),
            Check.of("attach", "tcx", probe.tcx()),
            _cgroup_attach(),
            Check.of("attach", "seccomp", probe.install_seccomp(ALLOW_ALL_SECCOMP))]


def _cgroup_attach() -> Check:
    if cgroup2_root() is None:  # nothing to build for
        return Check("attach", "cgroup_skb", None, "no cgroup v2 mount")
    return Check.of("attach", "cgroup_skb", probe.attach_cgroup_skb(probe_object("cgroup_skb")))


__all__ = ["Check", "run_all", "vmlinux_header"]
