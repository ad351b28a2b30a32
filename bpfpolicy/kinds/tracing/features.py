"""What a target kernel offers to a TracingPolicy: kprobes, BPF trampolines (fentry/fexit/
fmod_ret), BPF LSM, syscall tracepoints, bpf_override_return.

`probe_host_features()` reads only world-readable files (BTF, kernel config, securityfs
and tracefs when readable) — it never loads a program, so compilation stays
unprivileged. For `compile --kernel X.Y` the facts come from that kernel's own
Debian package in the kernel-test cache (config, System.map, lsm= of the matrix boot):
`features_from_facts`; `STATIC_FEATURES` is only the fallback when the cache has none, and
it never assumes error injection.

A feature set is a `KernelFeatures` (bpfpolicy/kinds/target.py): {"kernel": "6.12",
"source": ..., "btf", "kprobes", "kprobe_override", "error_injection", "trampoline",
"bpf_lsm", "syscall_tracepoints", "send_signal": bool, "reasons": {feature: why missing}}.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

from ..target import (
    KernelFacts,
    KernelFeatures,
    debian_arch,
    host_facts,
    matrix_facts,
    parse_kernel_version,
    running_kernel_version,
)

FEATURE_NAMES = ("btf", "kprobes", "kprobe_override", "error_injection", "trampoline",
                 "bpf_lsm", "syscall_tracepoints", "send_signal")

# Only when the kernel-test cache has no package of the target kernel (no config to
# read): the hook types Debian's amd64 kernels have built in since 5.10. Error injection
# is *not* assumed (Debian 6.12 ships without CONFIG_FUNCTION_ERROR_INJECTION), so a
# syscall Override for such a target is refused naming what to fetch.
_ASSUMED: KernelFeatures = {"btf": True, "kprobes": True, "kprobe_override": False, "error_injection": False,
           "trampoline": True, "bpf_lsm": True, "syscall_tracepoints": True, "send_signal": True}
STATIC_FEATURES: dict[str, KernelFeatures] = {
    version: {"kernel": version, "source": f"assumed (Debian {version} amd64, lsm=...,bpf): no "
              "package of this kernel in the kernel-test cache", **_ASSUMED, "error_injection_where": "unknown",
              "reasons": {"kprobe_override": "not determinable without the kernel's config",
                          "error_injection": f"not determinable: no config/System.map of kernel {version} "
                          f"in the kernel-test cache (`bpfpolicy kernel-test --kernels {version}` fetches it)"}}
    for version in ("5.10", "6.1", "6.12", "7.0", "7.1", "7.2")
}


def features_for(kernel: tuple[int, int] | None, options: dict[str, Any],
                 arch: str | None = None) -> KernelFeatures:
    """The feature set compilation targets: a probed set passed in by the caller, the
    target kernel's own facts (its package in the kernel-test cache, for `arch`), or
    this host (same kernel and same architecture only)."""
    given = options.get("features")
    if isinstance(given, dict):
        out = {k: bool(given.get(k, False)) for k in FEATURE_NAMES}
        out.update(kernel=str(given.get("kernel", "target")), source=given.get("source", "given"),
                   reasons=dict(given.get("reasons") or {}))
        if "error_injection_where" in given:
            out["error_injection_where"] = str(given["error_injection_where"])
        return out
    arch = arch or os.uname().machine
    same_arch = debian_arch(arch) == debian_arch(os.uname().machine)
    if same_arch and (kernel is None or kernel == running_kernel_version()):
        return probe_host_features()
    kernel = kernel or running_kernel_version()  # this kernel's version on another arch
    facts = matrix_facts(kernel, arch)
    if facts.config is not None:
        return features_from_facts(facts)
    key = f"{kernel[0]}.{kernel[1]}"
    if key in STATIC_FEATURES:
        return dict(STATIC_FEATURES[key])
    if kernel >= (5, 10):
        return {**STATIC_FEATURES["6.12"], "kernel": key,
                "reasons": {k: v.replace("6.12", key) for k, v in STATIC_FEATURES["6.12"]["reasons"].items()}}
    return {"kernel": key, "source": "assumed (older than the 5.10 baseline)", "btf": False, "kprobes": True,
            "kprobe_override": False, "error_injection": False, "trampoline": False,
            "bpf_lsm": False, "syscall_tracepoints": True, "send_signal": kernel >= (5, 3),
            "error_injection_where": "unknown",
            "reasons": {"trampoline": f"kernel {key} is older than the 5.10 baseline",
                        "bpf_lsm": f"kernel {key} is older than the 5.10 baseline",
                        "error_injection": f"not determinable for kernel {key} (no config at hand)"}}


def features_from_facts(facts: KernelFacts) -> KernelFeatures:
    """A matrix kernel's features from its own config, lsm= and System.map."""
    cfg = facts.config or {}
    src = facts.config_source
    reasons: dict[str, str] = {}

    def has(name: str, feature: str) -> bool:
        if cfg.get(name) in ("y", "m"):
            return True
        reasons[feature] = f"{name} is not set in {src}"
        return False

    btf = has("CONFIG_DEBUG_INFO_BTF", "btf")
    kprobes = has("CONFIG_KPROBES", "kprobes")
    override = has("CONFIG_BPF_KPROBE_OVERRIDE", "kprobe_override")
    injection = has("CONFIG_FUNCTION_ERROR_INJECTION", "error_injection")
    trampoline = btf and has("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "trampoline")
    lsm = facts.lsm or []
    bpf_lsm = has("CONFIG_BPF_LSM", "bpf_lsm") and trampoline
    if bpf_lsm and "bpf" not in lsm:
        bpf_lsm = False
        reasons["bpf_lsm"] = f'"bpf" is not in the active LSM list ({",".join(lsm)}, {facts.lsm_source})'
    tp = has("CONFIG_FTRACE_SYSCALLS", "syscall_tracepoints")
    return {"kernel": facts.kernel, "source": f"kernel {facts.release}: {src}, lsm= from {facts.lsm_source}",
            "btf": btf, "kprobes": kprobes, "kprobe_override": override and kprobes,
            "error_injection": injection, "trampoline": bool(trampoline), "bpf_lsm": bpf_lsm,
            "syscall_tracepoints": tp, "send_signal": True,
            "error_injection_where": f"matrix:{facts.kernel}" if facts.error_injection is not None else "unknown",
            "reasons": reasons}


def injectable(features: KernelFeatures, func: str) -> bool | None:
    """Is `func` on the target's error-injection list (fmod_ret / bpf_override_return may
    change its return value)? None when that cannot be told for this target."""
    where = features.get("error_injection_where")
    if where is None:  # a probe handed in: trust its error_injection bit
        return bool(features.get("error_injection"))
    if not features.get("error_injection"):
        return False
    if where == "host":
        names = host_facts().error_injection
    elif where.startswith("matrix:"):
        version = parse_kernel_version(where.removeprefix("matrix:"))
        names = matrix_facts(version).error_injection if version else None
    else:
        names = None
    return None if names is None else func in names


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def probe_host_features() -> KernelFeatures:
    """Probe this host from files only (no program loads, no root needed)."""
    facts = host_facts()
    cfg = facts.config or {}
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

    lsm_list = ",".join(facts.lsm or [])
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
        "error_injection_where": "host" if facts.error_injection is not None else "unknown",
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
