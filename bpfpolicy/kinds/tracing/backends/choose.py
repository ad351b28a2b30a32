"""Backend choice per hook, from the target kernel's features (docs/tracing.md):
syscalls → kprobe, else syscall tracepoint, else fentry; `security_*` enforcement → BPF
LSM (fmod_ret for positive argError), monitoring → kprobe, else LSM, else fentry; other
functions → kprobe, else fentry; `return: true` → fexit. When nothing fits, compilation
fails naming the missing kernel feature. The backend modules build what is chosen."""

from __future__ import annotations

from typing import Any

from ...btf import Btf
from ..check import SYSCALL_CALL, is_syscall_hook
from ..features import injectable
from . import fentry, kprobe, lsm, tracepoint, uprobe
from .base import Backend, HookError, PathT, fmt

ARCH_PREFIX = {"x86_64": "__x64_", "aarch64": "__arm64_", "arm64": "__arm64_"}
# Syscalls whose Override can be expressed as an LSM hook instead (the Tetragon mapping).
LSM_REMAP = {"openat": "file_open", "open": "file_open", "openat2": "file_open",
             "connect": "socket_connect", "linkat": "path_link", "link": "path_link",
             "init_module": "kernel_load_data", "finit_module": "kernel_read_file"}
# The remaps bpfpolicy performs itself: syscall -> (LSM hook, pathname arg index). The
# pathname becomes the opened file (arg 0 of file_open), matched as its full path.
LSM_PATH_REMAP = {"openat": ("file_open", 1), "openat2": ("file_open", 1), "open": ("file_open", 0),
                  "creat": ("file_open", 0)}


class BackendChooser:
    """Picks one Backend per hook; collects warnings (skipped hooks, remaps)."""

    def __init__(self, features: dict[str, Any], btf: Btf | None, btf_source: str, arch: str,
                 override_method: str | None, warnings: list[str]) -> None:
        self.features = features
        self.btf = btf
        self.btf_source = btf_source
        self.arch_prefix = ARCH_PREFIX.get(arch, "__x64_")
        self.override_method = override_method
        self.warnings = warnings

    def _need(self, *names: str) -> bool:
        return all(self.features.get(n) for n in names)

    def _reason(self, name: str) -> str:
        return (self.features.get("reasons") or {}).get(name, f"{name} unavailable")

    def _missing(self, *names: str) -> str:
        reasons = self.features.get("reasons") or {}
        parts = [f"{n} ({reasons[n]})" if n in reasons else n for n in names if not self.features.get(n)]
        return "; ".join(parts)

    def _func_params(self, func: str, path: PathT, hook: dict[str, Any]) -> int | None:
        """Parameter count from BTF; None when the hook should be skipped (callNotFound)."""
        if self.btf is None:
            raise HookError(path, f"{func}: BPF trampolines need kernel BTF, which is unavailable")
        if func not in self.btf.funcs:
            if (hook.get("ignore") or {}).get("callNotFound"):
                self.warnings.append(f"{fmt(path)}: {func} not found in kernel BTF; hook skipped "
                                     "(ignore.callNotFound)")
                return None
            raise HookError((*path, "call") if "call" in hook else path,
                            f'kernel {self.features.get("kernel")} lacks function "{func}" (not in '
                            f"its BTF, {self.btf_source}: not traceable there; set "
                            "ignore.callNotFound to skip the hook)")
        return self.btf.funcs[func]

    def choose(self, section: str, hook: dict[str, Any], path: PathT, enforce: bool,
                 override: bool, selectors: list[dict[str, Any]]) -> Backend | None:
        if section == "tracepoints":
            return self._tracepoint_backend(hook, path)
        if section == "lsmhooks":
            return self._lsm_backend(str(hook["hook"]), path, hook, "lsmhooks")
        if section in ("uprobes", "usdts"):
            return uprobe.choose(hook, path, self.features)
        call = str(hook["call"])
        if section == "fentries":
            if not self._need("trampoline"):
                raise HookError(path, f"fentries need BPF trampolines: missing {self._missing('trampoline')}")
            func = self._syscall_func(call) if is_syscall_hook(section, hook) else call
            n = self._func_params(func, path, hook)
            if n is None:
                return None
            return fentry.backend("fentry", func, "fentries section", n, syscall=is_syscall_hook(section, hook))
        if is_syscall_hook(section, hook):
            return self._syscall_backend(call, hook, path, override, selectors)
        if call.startswith("security_"):
            return self._security_backend(call, hook, path, enforce, override, selectors)
        return self._function_backend(call, hook, path)

    def _syscall_func(self, call: str) -> str:
        m = SYSCALL_CALL.match(call)
        prefix = m.group(1) if m else None
        if prefix in ("__ia32_", "__se_", "__do_"):
            return call  # a specific entry point (compat, inner): keep it as written
        base = call[len(prefix):] if prefix else call
        return self.arch_prefix + base

    def _syscall_backend(self, call: str, hook: dict[str, Any], path: PathT, override: bool,
                         selectors: list[dict[str, Any]]) -> Backend | None:
        func = self._syscall_func(call)
        name = func.split("sys_", 1)[1]
        _exists_on_arch(self.arch_prefix, name, func, path, hook)
        if override:
            prefer_fmod = self.override_method == "fmod-ret"
            modifiable = self._injectable(func, path, selectors)
            if modifiable and self._need("kprobes", "kprobe_override") and not prefer_fmod:
                return kprobe.backend(func, "Override via bpf_override_return", syscall=True)
            if modifiable and self._need("trampoline", "error_injection"):
                n = self._func_params(func, path, hook)
                if n is None:
                    return None
                return fentry.backend("fmod_ret", func, "Override via fmod_ret (syscalls are on the "
                                  "error-injection list)", n, syscall=True)
            if name in LSM_PATH_REMAP and self._need("bpf_lsm"):
                lsm_hook, _ = LSM_PATH_REMAP[name]
                b = self._lsm_backend(lsm_hook, path, hook, f"Override on {name} remapped to BPF LSM "
                                      f"(no kprobe override or fmod_ret: {self._missing('kprobe_override', 'trampoline', 'error_injection')})")
                if b is not None:
                    b.remap = LSM_PATH_REMAP[name][1]
                    self.warnings.append(f"{fmt(path)}: {name} with Override is enforced at lsm/{lsm_hook}: the "
                                         "pathname is matched as the opened file's full path, and the hook "
                                         "also sees opens by exec and by other syscalls")
                return b
            hint = ""
            if name in LSM_REMAP:
                hint = (f"; on kernels with BPF LSM express it as lsmhooks: hook "
                        f"{LSM_REMAP[name]} (the mapping for {name} in docs/upstream.md §2.4)")
            lacks = self._missing('kprobe_override', 'trampoline', 'error_injection') or \
                f"{func} on its error-injection list (the kernel refuses it: \"{func}() is not modifiable\")"
            raise HookError(self._override_path(path, selectors),
                            f"Override on syscall {name} needs kprobes with CONFIG_BPF_KPROBE_OVERRIDE "
                            f"or BPF trampolines with CONFIG_FUNCTION_ERROR_INJECTION (fmod_ret), and "
                            f"{func} on the kernel's error-injection list; kernel "
                            f"{self.features.get('kernel')} lacks {lacks}{hint}")
        if hook.get("return") and not any(map(self._need, ("kprobes", "trampoline", "syscall_tracepoints"))):
            raise HookError((*path, "return"), "return: true needs a kretprobe, fexit or the sys_exit "
                            f"tracepoint; kernel {self.features.get('kernel')} lacks "
                            f"{self._missing('kprobes', 'trampoline', 'syscall_tracepoints')}")
        if self._need("kprobes"):
            return kprobe.backend(func, "kprobes available", syscall=True)
        # The per-syscall tracepoint, not raw_tp/tp_btf sys_enter with a syscall-id test:
        # those run on every syscall of every process (~95 ns more per unrelated syscall
        # on the bench host, against ~25 ns saved on the hooked one; docs/tracing.md
        # Performance), while sys_enter_X costs unrelated syscalls a few ns.
        if self._need("syscall_tracepoints"):
            return tracepoint.backend("syscalls", f"sys_enter_{name}",
                                     f"no kprobes: {self._reason('kprobes')}", syscall=True, func=func)
        if self._need("trampoline"):
            n = self._func_params(func, path, hook)
            return None if n is None else fentry.backend(
                "fentry", func, "no kprobes, no syscall tracepoints", n, syscall=True)
        raise HookError(path, f"syscall {name} cannot be traced: kernel lacks "
                        f"{self._missing('kprobes', 'syscall_tracepoints', 'trampoline')}")

    def _injectable(self, func: str, path: PathT, selectors: list[dict[str, Any]]) -> bool:
        """fmod_ret and bpf_override_return change only functions on the target's
        error-injection list; when the list cannot be read for this target, refuse
        rather than compile an object the kernel rejects at load ("not modifiable")."""
        if not self._need("error_injection"):
            return False  # the caller's error names CONFIG_FUNCTION_ERROR_INJECTION
        known = injectable(self.features, func)
        if known is None:
            raise HookError(self._override_path(path, selectors),
                            f"Override on {func}: cannot tell whether kernel {self.features.get('kernel')} "
                            f"may modify it (its error-injection list is not readable here: "
                            f"{self._reason('error_injection')}); fetch the kernel "
                            f"(`bpfpolicy kernel-test --kernels {self.features.get('kernel')}`) or mount debugfs")
        return known

    def _override_path(self, path: PathT, selectors: list[dict[str, Any]]) -> PathT:
        for j, s in enumerate(selectors):
            for k, a in enumerate(s.get("matchActions") or []):
                if a.get("action") == "Override":
                    return (*path, "selectors", j, "matchActions", k, "action")
        return path

    def _lsm_name(self, call: str) -> str:
        hook = call.removeprefix("security_")
        if self.btf is not None and f"bpf_lsm_{hook}" not in self.btf.funcs \
                and f"bpf_lsm_{hook}_security" in self.btf.funcs:
            return f"{hook}_security"  # security_bprm_check -> bprm_check_security
        return hook

    def _lsm_backend(self, hook_name: str, path: PathT, hook: dict[str, Any], why: str) -> Backend | None:
        if not self._need("bpf_lsm"):
            raise HookError(path, f"LSM hook {hook_name} needs BPF LSM; kernel "
                            f"{self.features.get('kernel')} lacks {self._missing('bpf_lsm', 'trampoline')}")
        if self.btf is None:
            raise HookError(path, "BPF LSM needs kernel BTF, which is unavailable")
        func = f"bpf_lsm_{hook_name}"
        if func not in self.btf.funcs:
            raise HookError((*path, "hook") if "hook" in hook else (*path, "call"),
                            f"no LSM hook {hook_name} in the kernel's BTF ({func})")
        return lsm.backend(hook_name, why, self.btf.funcs[func])

    def _security_backend(self, call: str, hook: dict[str, Any], path: PathT, enforce: bool,
                          override: bool, selectors: list[dict[str, Any]]) -> Backend | None:
        lsm = self._lsm_name(call)
        errs = [int(a.get("argError", 0)) for s in selectors for a in s.get("matchActions") or []
                if a.get("action") == "Override"]
        positive = any(e > 0 for e in errs)
        if override:
            if not positive and self.override_method != "fmod-ret" and self._need("bpf_lsm"):
                return self._lsm_backend(lsm, path, hook, "Override of a security_ hook via BPF LSM")
            if self._need("trampoline"):
                n = self._func_params(call, path, hook)
                why = ("positive argError needs fmod_ret (LSM programs return 0 or -errno)"
                       if positive else "no BPF LSM: Override via fmod_ret")
                return None if n is None else fentry.backend("fmod_ret", call, why, n)
            raise HookError(self._override_path(path, selectors),
                            f"Override on {call} needs BPF LSM or fmod_ret (BPF trampolines); kernel "
                            f"{self.features.get('kernel')} lacks {self._missing('bpf_lsm', 'trampoline')} "
                            "(bpf_override_return cannot override security_ functions)")
        if enforce and self._need("bpf_lsm"):
            return self._lsm_backend(lsm, path, hook, "security_ enforcement via BPF LSM")
        if self._need("kprobes"):
            return kprobe.backend(call, "kprobes available")
        if self._need("bpf_lsm"):
            return self._lsm_backend(lsm, path, hook, f"no kprobes: {self._reason('kprobes')}")
        if self._need("trampoline"):
            n = self._func_params(call, path, hook)
            return None if n is None else fentry.backend("fentry", call, "no kprobes, no BPF LSM", n)
        raise HookError(path, f"{call} cannot be hooked: kernel {self.features.get('kernel')} lacks "
                        f"{self._missing('kprobes', 'bpf_lsm', 'trampoline')}")

    def _function_backend(self, call: str, hook: dict[str, Any], path: PathT) -> Backend | None:
        if self._need("kprobes"):  # return: true adds a kretprobe (returns.py)
            if self.btf is not None and call not in self.btf.funcs:
                n = self._func_params(call, path, hook)  # raises, or None for callNotFound
                if n is None:
                    return None
            return kprobe.backend(call, "kprobes available")
        if self._need("trampoline"):
            n = self._func_params(call, path, hook)
            why = "return: true via fexit" if hook.get("return") else f"no kprobes: {self._reason('kprobes')}"
            return None if n is None else fentry.backend("fentry", call, why, n)
        raise HookError(path, f"kernel function {call} cannot be hooked: kernel "
                        f"{self.features.get('kernel')} lacks {self._missing('kprobes', 'trampoline')}")

    def fexit(self, section: str, hook: dict[str, Any], path: PathT) -> Backend:
        if not self._need("trampoline"):
            raise HookError((*path, "return"), f"return: true needs fexit (BPF trampolines); kernel "
                            f"{self.features.get('kernel')} lacks {self._missing('trampoline')}")
        call = str(hook["call"])
        syscall = is_syscall_hook(section, hook)
        func = self._syscall_func(call) if syscall else call
        n = self._func_params(func, path, {})
        return fentry.backend("fexit", func, "return value via fexit", n or 0, syscall=syscall)

    def _tracepoint_backend(self, hook: dict[str, Any], path: PathT) -> Backend:
        sub, event = str(hook["subsystem"]), str(hook["event"])
        if hook.get("raw"):
            return tracepoint.raw_backend(event)
        return tracepoint.backend(sub, event, "tracepoints section")


# ------------------------------------------------------------------ what runs where
# The backend each section asks for; a hook that runs as something else changes meaning.
REQUESTED = {"kprobes": "kprobe", "lsmhooks": "lsm", "tracepoints": "tracepoint", "fentries": "fentry",
             "uprobes": "uprobe", "usdts": "uprobe"}
SAME = {("tracepoint", "raw_tracepoint")}
# What changes when a hook runs as another backend (docs/tracing.md "What runs where").
DIFFERENCE = {
    ("kprobe", "tracepoint"): "the syscall tracepoint fires at syscall entry with the raw user "
        "arguments (args[]), never an in-kernel resolved argument; it cannot change a return value "
        "(no Override), and it sees only what the sys_enter record carries",
    ("kprobe", "lsm"): "a BPF LSM program runs only if no earlier LSM in lsm= denied the operation "
        "and only while `bpf` is in the kernel's lsm= list; it sees the LSM hook's arguments (kernel "
        "objects), not the syscall's, and its return value (0 or -errno) is the access decision",
    ("kprobe", "fmod_ret"): "fmod_ret runs on a BPF trampoline before the function; a non-zero "
        "return skips the function and becomes its return value, and only functions on the kernel's "
        "error-injection list may be attached",
    ("kprobe", "fentry"): "fentry runs on a BPF trampoline at function entry with BTF-typed "
        "arguments; functions without BTF (or inlined) cannot be hooked, and it cannot override",
    ("kprobe", "fexit"): "fexit runs after the function returns, with the arguments and the "
        "return value",
}


def backend_report(hooks: list[dict[str, Any]], kernel: str) -> list[tuple[tuple[int, int], str, str, str]]:
    """Per hook: a note saying where it runs, and a warning (prefixed BACKEND_CHANGE, so
    --strict-backend can make it an error) when that is not the backend the policy asked
    for. Returns ((line, col), path, severity, message) rows."""
    import os

    from ...target import BACKEND_CHANGE

    def key(h: dict[str, Any]) -> tuple[Any, ...] | None:
        """`call: list:NAME` hooks on one backend for one reason: one note for all of them
        (a generated_syscalls list is ~340 hooks)."""
        if not h.get("list"):
            return None
        return (h["list"], h["path"], h["backend"], h["why"], bool(h.get("return")), h.get("return_attach"))

    groups: list[list[dict[str, Any]]] = []
    for h in hooks:
        if groups and key(h) is not None and key(groups[-1][0]) == key(h):
            groups[-1].append(h)
        else:
            groups.append([h])
    rows = []
    for group in groups:
        h = group[0]
        asked, got = REQUESTED.get(h["section"], h["backend"]), h["backend"]
        targets = [g["attach"].split("/", 1)[1] if "/" in g["attach"] else g["attach"] for g in group]
        target = targets[0] if len(group) == 1 else os.path.commonprefix(targets) + "*"
        names = [g["name"] for g in group]
        shown = ", ".join(names if len(names) <= 3 else [names[0], names[1], "…", names[-1]])
        name = h["name"] if len(group) == 1 else f"{h['list']} ({len(group)} hooks: {shown})"
        verb = "runs" if len(group) == 1 else "run"
        ret = f" (return value via {h.get('return_attach', 'fexit')})" if h.get("return") else ""
        where = (h["line"], h["col"])
        rows.append((where, h["path"], "note",
                     f"{name} {verb} as {got} {target}{ret} on kernel {kernel} ({h['why']})"))
        if asked != got and (asked, got) not in SAME:
            why = DIFFERENCE.get((asked, got), f"{got} is not a {asked}: its arguments and timing differ")
            rows.append((where, h["path"], "warning",
                         f"{BACKEND_CHANGE}{asked} → {got}: {name} {verb} as {got} {target}: {why}"))
    return rows


def _exists_on_arch(prefix: str, name: str, func: str, path: PathT, hook: dict[str, Any]) -> None:
    """arm64 has no open, mkdir, stat, ... (asm-generic unistd): their __arm64_sys_ functions
    are built and in BTF but no syscall number reaches them, so a hook there never fires."""
    from ....syscalls.tables import TABLES

    if prefix != ARCH_PREFIX["aarch64"] or not func.startswith(prefix):
        return
    table = TABLES["aarch64"]
    if name in table or name.removeprefix("new") in table:
        return
    raise HookError((*path, "call") if "call" in hook else path,
                    f"syscall {name} does not exist on aarch64: the arm64 kernel lacks syscall {name} "
                    f"(not in its syscall table: {func} is never called there; arm64 has only the "
                    "*at forms, e.g. openat, mkdirat)")
