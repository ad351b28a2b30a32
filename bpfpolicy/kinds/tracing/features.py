"""What a target kernel offers to a TracingPolicy: kprobes, BPF trampolines (fentry/fexit/
fmod_ret), BPF LSM, syscall tracepoints, bpf_override_return.

`probe_host_features()` reads only world-readable files (BTF, kernel config, securityfs
and tracefs when readable) — it never loads a program, so compilation stays
unprivileged. `STATIC_FEATURES` describes the Debian kernels the matrix boots (booted
with `lsm=...,bpf`), for `compile --kernel X.Y`.

A feature set is a `KernelFeatures` (bpfpolicy/kinds/target.py): {"kernel": "6.12",
"source": ..., "btf", "kprobes", "kprobe_override", "error_injection", "trampoline",
"bpf_lsm", "syscall_tracepoints", "send_signal": bool, "reasons": {feature: why missing}}.
"""

from __future__ import annotations

import gzip
import os
import platform
import re
from pathlib import Path
from typing import Any

from ..target import KernelFeatures, parse_kernel_version

FEATURE_NAMES = ("btf", "kprobes", "kprobe_override", "error_injection", "trampoline",
                 "bpf_lsm", "syscall_tracepoints", "send_signal")

# Debian amd64 kernels (bullseye 5.10, bookworm 6.1, trixie 6.12, sid 7.x): KPROBES=y,
# FUNCTION_ERROR_INJECTION=y, BPF_LSM=y (active with lsm=...,bpf, which the matrix
# passes), BPF_KPROBE_OVERRIDE not set, DEBUG_INFO_BTF=y.
_DEBIAN: KernelFeatures = {"btf": True, "kprobes": True, "kprobe_override": False, "error_injection": True,
           "trampoline": True, "bpf_lsm": True, "syscall_tracepoints": True, "send_signal": True}
_DEBIAN_REASONS = {"kprobe_override": "CONFIG_BPF_KPROBE_OVERRIDE is not set in Debian's kernel config"}
STATIC_FEATURES: dict[str, KernelFeatures] = {
    version: {"kernel": version, "source": f"static table: Debian {version} amd64 booted with lsm=...,bpf",
              **_DEBIAN, "reasons": dict(_DEBIAN_REASONS)}
    for version in ("5.10", "6.1", "6.12", "7.0", "7.1", "7.2")
}


def features_for(kernel: tuple[int, int] | None, options: dict[str, Any]) -> KernelFeatures:
    """The feature set compilation targets: a probed set passed in by the caller, the
    static table for `--kernel X.Y`, or this host."""
    given = options.get("features")
    if isinstance(given, dict):
        out = {k: bool(given.get(k, False)) for k in FEATURE_NAMES}
        out.update(kernel=str(given.get("kernel", "target")), source=given.get("source", "given"),
                   reasons=dict(given.get("reasons") or {}))
        return out
    if kernel is not None:
        key = f"{kernel[0]}.{kernel[1]}"
        if key in STATIC_FEATURES:
            return dict(STATIC_FEATURES[key])
        if kernel >= (5, 10):
            return {**STATIC_FEATURES["6.12"], "kernel": key,
                    "source": f"static table: assumed like Debian 6.12 (no entry for {key})"}
        return {"kernel": key, "source": "static table", "btf": False, "kprobes": True,
                "kprobe_override": False, "error_injection": True, "trampoline": False,
                "bpf_lsm": False, "syscall_tracepoints": True, "send_signal": kernel >= (5, 3),
                "reasons": {"trampoline": f"kernel {key} is older than the 5.10 baseline",
                            "bpf_lsm": f"kernel {key} is older than the 5.10 baseline"}}
    return probe_host_features()


def _kernel_config() -> dict[str, str]:
    release = platform.release()
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{release}")):
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = gzip.decompress(raw).decode(errors="replace") if path.suffix == ".gz" else raw.decode(errors="replace")
        return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M))
    return {}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def probe_host_features() -> KernelFeatures:
    """Probe this host from files only (no program loads, no root needed)."""
    cfg = _kernel_config()
    reasons: dict[str, str] = {}
    release = platform.release()
    version = parse_kernel_version(release) or (0, 0)

    def flag(name: str) -> bool | None:
        return None if not cfg else cfg.get(name) == "y"

    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    if not btf:
        reasons["btf"] = "/sys/kernel/btf/vmlinux is missing (CONFIG_DEBUG_INFO_BTF)"

    kprobes = os.path.exists("/sys/kernel/tracing/kprobe_events") or bool(flag("CONFIG_KPROBES"))
    if not kprobes:
        reasons["kprobes"] = "CONFIG_KPROBES is not set (no kprobe_events in tracefs)"
    override = bool(flag("CONFIG_BPF_KPROBE_OVERRIDE")) and kprobes
    if not override:
        reasons["kprobe_override"] = ("CONFIG_BPF_KPROBE_OVERRIDE is not set" if kprobes
                                      else "bpf_override_return needs kprobes (CONFIG_BPF_KPROBE_OVERRIDE depends on KPROBES)")
    injection = bool(flag("CONFIG_FUNCTION_ERROR_INJECTION"))
    if not injection:
        reasons["error_injection"] = "CONFIG_FUNCTION_ERROR_INJECTION is not set (it depends on KPROBES)"

    lockdown = _lockdown(cfg)
    trampoline = btf and version >= (5, 5) and flag("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") is not False
    if trampoline and lockdown:
        trampoline = False
        reasons["trampoline"] = (f"kernel lockdown ({lockdown}) is enforced: fentry/fexit/LSM "
                                 "program loads are refused (EPERM, measured on such hosts)")
    elif not trampoline:
        reasons["trampoline"] = "BPF trampolines need BTF, kernel >= 5.5 and DYNAMIC_FTRACE_WITH_DIRECT_CALLS"

    lsm_list = _read("/sys/kernel/security/lsm")
    if lsm_list is None:
        cmdline = _read("/proc/cmdline") or ""
        m2 = re.search(r"\blsm=(\S+)", cmdline)
        lsm_list = m2.group(1) if m2 else cfg.get("CONFIG_LSM", "").strip('"')
    bpf_lsm = bool(flag("CONFIG_BPF_LSM")) and "bpf" in lsm_list.split(",") and trampoline
    if not bpf_lsm:
        if not flag("CONFIG_BPF_LSM"):
            reasons["bpf_lsm"] = "CONFIG_BPF_LSM is not set"
        elif "bpf" not in lsm_list.split(","):
            reasons["bpf_lsm"] = f'"bpf" is not in the active LSM list ({lsm_list}); boot with lsm=...,bpf'
        else:
            reasons["bpf_lsm"] = "BPF LSM programs attach through BPF trampolines (see trampoline)"
    syscall_tp = flag("CONFIG_FTRACE_SYSCALLS") is not False
    if not syscall_tp:
        reasons["syscall_tracepoints"] = "CONFIG_FTRACE_SYSCALLS is not set"
    return {
        "kernel": f"{version[0]}.{version[1]}", "source": f"probed host ({release})",
        "btf": btf, "kprobes": kprobes, "kprobe_override": override, "error_injection": injection,
        "trampoline": bool(trampoline), "bpf_lsm": bpf_lsm, "syscall_tracepoints": syscall_tp,
        "send_signal": version >= (5, 3), "reasons": reasons,
    }


def _lockdown(cfg: dict[str, str]) -> str | None:
    text = _read("/sys/kernel/security/lockdown")
    if text:
        m = re.search(r"\[(\w+)\]", text)
        return None if not m or m.group(1) == "none" else m.group(1)
    if cfg.get("CONFIG_LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY") == "y":
        return "confidentiality"
    if cfg.get("CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY") == "y":
        return "integrity"
    return None
