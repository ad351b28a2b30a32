"""Lower a validated TracingPolicy to C: pick a backend per hook from the target's
features, turn each selector into straight-line matchers, and render
`codegen/templates/tracing_policy.bpf.c.j2`.

Backend order (docs/tracing.md): syscalls → kprobe, else syscall tracepoint, else fentry;
`security_*` enforcement → BPF LSM (fmod_ret for positive argError), monitoring → kprobe,
else LSM, else fentry; other functions → kprobe, else fentry; `return: true` → fexit.
When nothing fits, compilation fails naming the missing kernel feature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...artifact import program_hash, stamp_program_hash
from ...codegen.build import build_bpf, vmlinux_header
from ...codegen.render import c_comment, c_ident, policy_marker, render
from ...policy.diagnostics import Diagnostic, PolicyError
from ...policy.load import Document
from ..base import Artifact, CompileContext
from ..btf import Btf, host_btf, load, target_btf
from ..vectors import KernelTestScript
from . import spec as S
from .check import SYSCALL_CALL, hook_sections, is_syscall_hook, parse_int, parse_rate_limit
from .events import event_layout
from .features import features_for

ARCH_PREFIX = {"x86_64": "__x64_", "aarch64": "__arm64_", "arm64": "__arm64_"}
TARGET_ARCH = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64"}
# Syscalls whose Override can be expressed as an LSM hook instead (ANCHORS §2.4 mapping).
LSM_REMAP = {"openat": "file_open", "open": "file_open", "openat2": "file_open",
             "connect": "socket_connect", "linkat": "path_link", "link": "path_link",
             "init_module": "kernel_load_data", "finit_module": "kernel_read_file"}
# The remaps bpfpolicy performs itself: syscall -> (LSM hook, pathname arg index). The
# pathname becomes the opened file (arg 0 of file_open), matched as its full path.
LSM_PATH_REMAP = {"openat": ("file_open", 1), "openat2": ("file_open", 1), "open": ("file_open", 0),
                  "creat": ("file_open", 0)}
ENFORCE = ("Sigkill", "Signal", "Override")
PathT = tuple[str | int, ...]


class HookError(Exception):
    def __init__(self, path: PathT, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass
class Backend:
    kind: str  # kprobe, tracepoint, raw_tracepoint, lsm, fentry, fexit, fmod_ret
    sec: str
    why: str
    func: str = ""  # attach target (function or hook)
    syscall: bool = False  # arguments in the syscall wrapper's pt_regs
    nparams: int = 0  # BTF parameter count (LSM / fexit return value follows them)
    user: bool = False  # pointer arguments point to user memory
    remap: int | None = None  # syscall pathname index remapped to LSM arg 0 (file)


@dataclass
class Program:
    name: str
    sec: str
    kind: str
    hook_id: int
    where: str
    path: str
    title: str
    why: str
    ctx_decl: str
    pass_ret: str = "0"
    decls: list[str] = field(default_factory=list)
    prologue: list[str] = field(default_factory=list)
    captures: list[str] = field(default_factory=list)
    selectors: list[dict[str, Any]] = field(default_factory=list)
    needs_binary: bool = False


# ------------------------------------------------------------------------ entry point


def compile_tracing_policy(doc: Document, ctx: CompileContext) -> Artifact:
    lowering = Lowering(doc, ctx)
    source = lowering.render()
    extra = (f"-D__TARGET_ARCH_{TARGET_ARCH.get(ctx.arch, 'x86')}", "-I", str(vmlinux_header().parent))
    result = build_bpf(source, name=lowering.name, extra_flags=extra)
    return lowering.artifact(source, result.object)


class Lowering:
    def __init__(self, doc: Document, ctx: CompileContext) -> None:
        self.doc = doc
        self.ctx = ctx
        self.data = doc.data
        self.name = str(self.data["metadata"]["name"])
        self.spec = self.data.get("spec") or {}
        self.features = features_for(ctx.kernel, ctx.options)
        self.warnings: list[str] = []
        self.btf, self.btf_source = self._target_btf(ctx)
        opts = {o.get("name"): str(o.get("value")) for o in self.spec.get("options") or []}
        self.monitor = opts.get("policy-mode") == "monitor"
        self.override_method = opts.get("override-method")
        self.arch_prefix = ARCH_PREFIX.get(ctx.arch, "__x64_")
        self.programs: list[Program] = []
        self.hooks: list[dict[str, Any]] = []
        self.uses_rate_limit = False
        self.uses_parent_binary = False
        self.uses_sock = False
        self.uses_cred = False
        self.uses_pid_tree = False
        self.uses_stacks = False
        self.literals: dict[tuple[str, bytes], dict[str, str]] = {}
        self._lower()

    def _target_btf(self, ctx: CompileContext) -> tuple[Btf | None, str]:
        """Function names and parameter counts come from the target's BTF: a given file,
        the matrix's cached image of that kernel, or (same or unknown kernel) this host's."""
        if ctx.options.get("btf"):
            return load(Path(ctx.options["btf"])), str(ctx.options["btf"])
        host = _host_version()
        if ctx.kernel is not None and ctx.kernel != host:
            btf = target_btf(ctx.kernel)
            if btf is not None:
                return btf, f"cached image of kernel {ctx.kernel[0]}.{ctx.kernel[1]}"
            self.warnings.append(f"no BTF of kernel {ctx.kernel[0]}.{ctx.kernel[1]} at hand: function "
                                 "parameter counts are taken from this host's BTF")
        return host_btf(), "host /sys/kernel/btf/vmlinux"

    # -------------------------------------------------------------- hooks
    def _lower(self) -> None:
        sections = hook_sections(self.spec)
        if not sections:
            raise PolicyError([self.doc.diag(("spec",), "nothing to compile: the policy has no "
                                             "hooks left (all were dropped or none was given)")])
        section = sections[0]
        errors: list[Diagnostic] = []
        for i, hook in enumerate(self.spec[section]):
            path: PathT = ("spec", section, i)
            try:
                for j, one in enumerate(self._expand_list_call(hook, path)):
                    self._hook(section, i, one, path, suffix=f"_{j}" if one is not hook else "")
            except HookError as e:
                errors.append(self.doc.diag(e.path, e.message))
        if errors:
            raise PolicyError(errors)
        if not self.programs:
            raise PolicyError([self.doc.diag(("spec", section), "nothing to compile: every hook "
                                             "was skipped (ignore.callNotFound)")])

    def _expand_list_call(self, hook: dict[str, Any], path: PathT) -> list[dict[str, Any]]:
        """`call: list:NAME` is one hook per syscall in the list (Tetragon's semantics)."""
        call = str(hook.get("call", ""))
        if not call.startswith("list:"):
            return [hook]
        from .lists import lists_by_name

        lst = lists_by_name(self.spec).get(call.removeprefix("list:"))
        if lst is None or not lst.get("values"):
            raise HookError((*path, "call"), f"{call}: no such list with values")
        return [{**hook, "call": str(v), "syscall": True} for v in lst["values"]]

    def _hook(self, section: str, i: int, hook: dict[str, Any], path: PathT, suffix: str = "") -> None:
        selectors = [self._expand_macros(s) for s in hook.get("selectors") or []]
        actions = {a.get("action") for s in selectors for a in s.get("matchActions") or []}
        enforce = bool(actions & set(ENFORCE)) and not self.monitor
        override = "Override" in actions and not self.monitor
        ret_probe = bool(hook.get("return")) and section in ("kprobes", "fentries")
        backend = self._backend(section, hook, path, enforce, override, selectors)
        if backend is None:
            return
        if backend.remap is not None:
            hook, selectors = self._remap_to_file(hook, selectors, backend.remap, path)
        hook_id = len(self.hooks)
        self.hooks.append(self._hook_meta(section, hook, path, backend))
        base = f"{section.rstrip('s')}_{i}{suffix}"
        if ret_probe:
            fexit = self._fexit_backend(section, hook, path)
            if enforce:
                self.programs.append(self._program(base + "_enter", backend, hook, selectors, path,
                                                   hook_id, section, only=ENFORCE))
            self.programs.append(self._program(base + "_exit", fexit, hook, selectors, path,
                                               hook_id, section, only=("Post", "NoPost")))
        else:
            self.programs.append(self._program(base, backend, hook, selectors, path, hook_id, section))

    def _expand_macros(self, sel: dict[str, Any]) -> dict[str, Any]:
        macros = self.spec.get("selectorsMacros") or {}
        out = {k: (list(v) if isinstance(v, list) else v) for k, v in sel.items() if k != "macros"}
        for name in sel.get("macros") or []:
            for key, value in (macros.get(name) or {}).items():
                out.setdefault(key, []).extend(value)
        return out

    def _hook_meta(self, section: str, hook: dict[str, Any], path: PathT, b: Backend) -> dict[str, Any]:
        name = hook.get("call") or hook.get("hook") or f"{hook.get('subsystem')}/{hook.get('event')}"
        line, col = self.doc.pos(path)
        return {
            "name": name, "section": section, "path": _fmt(path), "line": line, "col": col,
            "backend": b.kind, "attach": b.sec, "why": b.why,
            "message": hook.get("message"), "tags": hook.get("tags") or [],
            "args": [{"index": a["index"], "type": a.get("type", "auto"), "label": a.get("label")}
                     for a in hook.get("args") or []],
            "return": bool(hook.get("return")),
        }

    # -------------------------------------------------------------- backend choice
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
                self.warnings.append(f"{_fmt(path)}: {func} not found in kernel BTF; hook skipped "
                                     "(ignore.callNotFound)")
                return None
            raise HookError((*path, "call") if "call" in hook else path,
                            f'kernel {self.features.get("kernel")} lacks function "{func}" (not in '
                            f"its BTF, {self.btf_source}: not traceable there; set "
                            "ignore.callNotFound to skip the hook)")
        return self.btf.funcs[func]

    def _backend(self, section: str, hook: dict[str, Any], path: PathT, enforce: bool,
                 override: bool, selectors: list[dict[str, Any]]) -> Backend | None:
        if section == "tracepoints":
            return self._tracepoint_backend(hook, path)
        if section == "lsmhooks":
            return self._lsm_backend(str(hook["hook"]), path, hook, "lsmhooks")
        call = str(hook["call"])
        if section == "fentries":
            if not self._need("trampoline"):
                raise HookError(path, f"fentries need BPF trampolines: missing {self._missing('trampoline')}")
            func = self._syscall_func(call) if is_syscall_hook(section, hook) else call
            n = self._func_params(func, path, hook)
            if n is None:
                return None
            return Backend("fentry", f"fentry/{func}", "fentries section", func,
                           is_syscall_hook(section, hook), n, is_syscall_hook(section, hook))
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
        if override:
            prefer_fmod = self.override_method == "fmod-ret"
            if self._need("kprobes", "kprobe_override") and not prefer_fmod:
                return Backend("kprobe", f"kprobe/{func}", "Override via bpf_override_return",
                               func, True, 0, True)
            if self._need("trampoline", "error_injection"):
                n = self._func_params(func, path, hook)
                if n is None:
                    return None
                return Backend("fmod_ret", f"fmod_ret/{func}", "Override via fmod_ret (syscalls are "
                               "on the error-injection list)", func, True, n, True)
            if name in LSM_PATH_REMAP and self._need("bpf_lsm"):
                lsm_hook, _ = LSM_PATH_REMAP[name]
                b = self._lsm_backend(lsm_hook, path, hook, f"Override on {name} remapped to BPF LSM "
                                      f"(no kprobe override or fmod_ret: {self._missing('kprobe_override', 'trampoline', 'error_injection')})")
                if b is not None:
                    b.remap = LSM_PATH_REMAP[name][1]
                    self.warnings.append(f"{_fmt(path)}: {name} with Override is enforced at lsm/{lsm_hook}: the "
                                         "pathname is matched as the opened file's full path, and the hook "
                                         "also sees opens by exec and by other syscalls")
                return b
            hint = ""
            if name in LSM_REMAP:
                hint = (f"; on kernels with BPF LSM express it as lsmhooks: hook "
                        f"{LSM_REMAP[name]} (the ANCHORS mapping for {name})")
            raise HookError(self._override_path(path, selectors),
                            f"Override on syscall {name} needs kprobes with CONFIG_BPF_KPROBE_OVERRIDE "
                            f"or BPF trampolines with CONFIG_FUNCTION_ERROR_INJECTION (fmod_ret); "
                            f"kernel {self.features.get('kernel')} lacks "
                            f"{self._missing('kprobe_override', 'trampoline', 'error_injection')}{hint}")
        if hook.get("return") and not self._need("trampoline"):
            raise HookError((*path, "return"), f"return: true needs fexit (BPF trampolines); kernel "
                            f"{self.features.get('kernel')} lacks {self._missing('trampoline')}")
        if self._need("kprobes"):
            return Backend("kprobe", f"kprobe/{func}", "kprobes available", func, True, 0, True)
        if self._need("syscall_tracepoints"):
            return Backend("tracepoint", f"tp/syscalls/sys_enter_{name}",
                           f"no kprobes: {self._reason('kprobes')}", func, True, 0, True)
        if self._need("trampoline"):
            n = self._func_params(func, path, hook)
            return None if n is None else Backend("fentry", f"fentry/{func}",
                                                  "no kprobes, no syscall tracepoints", func, True, n, True)
        raise HookError(path, f"syscall {name} cannot be traced: kernel lacks "
                        f"{self._missing('kprobes', 'syscall_tracepoints', 'trampoline')}")

    def _remap_to_file(self, hook: dict[str, Any], selectors: list[dict[str, Any]], index: int,
                       path: PathT) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """sys_open* + Override on a kernel without syscall override: the pathname argument
        becomes file_open's `struct file *` (arg 0); nothing else can be carried over."""
        args = hook.get("args") or []
        for k, a in enumerate(args):
            if int(a["index"]) != index:
                raise HookError((*path, "args", k), f"argument {a['index']} has no equivalent at "
                                "lsm/file_open (only the pathname is remapped); drop it to enforce "
                                "Override on a kernel without syscall override")
        label = next((a.get("label") for a in args if a.get("label")), "pathname")
        new_hook = {**hook, "args": [{"index": 0, "type": "file", "label": label}] if args else []}
        new_selectors = []
        for sel in selectors:
            new_sel = dict(sel)
            if "matchArgs" in sel:
                new_sel["matchArgs"] = [{**m, "index": 0} for m in sel["matchArgs"]]
            new_selectors.append(new_sel)
        return new_hook, new_selectors

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
        return Backend("lsm", f"lsm/{hook_name}", why, hook_name, False, self.btf.funcs[func], False)

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
                return None if n is None else Backend("fmod_ret", f"fmod_ret/{call}", why, call, False, n)
            raise HookError(self._override_path(path, selectors),
                            f"Override on {call} needs BPF LSM or fmod_ret (BPF trampolines); kernel "
                            f"{self.features.get('kernel')} lacks {self._missing('bpf_lsm', 'trampoline')} "
                            "(bpf_override_return cannot override security_ functions)")
        if enforce and self._need("bpf_lsm"):
            return self._lsm_backend(lsm, path, hook, "security_ enforcement via BPF LSM")
        if self._need("kprobes"):
            return Backend("kprobe", f"kprobe/{call}", "kprobes available", call)
        if self._need("bpf_lsm"):
            return self._lsm_backend(lsm, path, hook, f"no kprobes: {self._reason('kprobes')}")
        if self._need("trampoline"):
            n = self._func_params(call, path, hook)
            return None if n is None else Backend("fentry", f"fentry/{call}", "no kprobes, no BPF LSM", call, False, n)
        raise HookError(path, f"{call} cannot be hooked: kernel {self.features.get('kernel')} lacks "
                        f"{self._missing('kprobes', 'bpf_lsm', 'trampoline')}")

    def _function_backend(self, call: str, hook: dict[str, Any], path: PathT) -> Backend | None:
        if self._need("kprobes") and not hook.get("return"):
            if self.btf is not None and call not in self.btf.funcs:
                n = self._func_params(call, path, hook)  # raises, or None for callNotFound
                if n is None:
                    return None
            return Backend("kprobe", f"kprobe/{call}", "kprobes available", call)
        if self._need("trampoline"):
            n = self._func_params(call, path, hook)
            why = "return: true via fexit" if hook.get("return") else f"no kprobes: {self._reason('kprobes')}"
            return None if n is None else Backend("fentry", f"fentry/{call}", why, call, False, n)
        raise HookError(path, f"kernel function {call} cannot be hooked: kernel "
                        f"{self.features.get('kernel')} lacks {self._missing('kprobes', 'trampoline')}")

    def _fexit_backend(self, section: str, hook: dict[str, Any], path: PathT) -> Backend:
        if not self._need("trampoline"):
            raise HookError((*path, "return"), f"return: true needs fexit (BPF trampolines); kernel "
                            f"{self.features.get('kernel')} lacks {self._missing('trampoline')}")
        call = str(hook["call"])
        syscall = is_syscall_hook(section, hook)
        func = self._syscall_func(call) if syscall else call
        n = self._func_params(func, path, {})
        return Backend("fexit", f"fexit/{func}", "return value via fexit", func, syscall, n or 0, syscall)

    def _tracepoint_backend(self, hook: dict[str, Any], path: PathT) -> Backend:
        sub, event = str(hook["subsystem"]), str(hook["event"])
        if hook.get("raw"):
            return Backend("raw_tracepoint", f"raw_tp/{event}", "raw: true", event)
        user = sub in ("syscalls", "raw_syscalls")
        return Backend("tracepoint", f"tp/{sub}/{event}", "tracepoints section", f"{sub}/{event}",
                       False, 0, user)

    # -------------------------------------------------------------- programs
    def _program(self, base: str, b: Backend, hook: dict[str, Any], selectors: list[dict[str, Any]],
                 path: PathT, hook_id: int, section: str, only: tuple[str, ...] | None = None) -> Program:
        line, col = self.doc.pos(path)
        name = re.sub(r"[^a-z0-9_]", "_", f"{base}_{b.kind}")
        title = {"kprobes": f"kprobe {hook.get('call')}", "fentries": f"fentry {hook.get('call')}",
                 "lsmhooks": f"lsm hook {hook.get('hook')}",
                 "tracepoints": f"tracepoint {hook.get('subsystem')}/{hook.get('event')}"}[section]
        p = Program(name=name, sec=b.sec, kind=b.kind, hook_id=hook_id, where=self._where(path),
                    path=_fmt(path), title=title, why=b.why, ctx_decl=self._ctx_decl(b, hook))
        self._prologue(p, b)
        positions = self._capture(p, b, hook, path, section)
        for j, sel in enumerate(selectors):
            spath = (*path, "selectors", j)
            p.selectors.append(self._selector(p, b, sel, spath, j, positions, hook, only))
        if not selectors and only is not None and "Post" not in only:
            p.selectors = []
            p.captures.append("return 0; /* no selectors: nothing to enforce */")
        return p

    def _where(self, path: PathT) -> str:
        line, col = self.doc.pos(path)
        return f"{self.doc.file}:{line}:{col}"  # reaches C only through policy_marker

    def _ctx_decl(self, b: Backend, hook: dict[str, Any]) -> str:
        if b.kind == "kprobe":
            return "struct pt_regs *ctx"
        if b.kind == "raw_tracepoint":
            return "struct bpf_raw_tracepoint_args *ctx"
        if b.kind == "tracepoint":
            sub, event = b.func.split("/", 1) if "/" in b.func else ("syscalls", "")
            if sub == "syscalls" and event.startswith("sys_exit_") or (sub == "raw_syscalls" and event == "sys_exit"):
                return "struct tp_sys_exit *ctx"
            if sub in ("syscalls", "raw_syscalls") or b.syscall:
                return "struct tp_sys_enter *ctx"
            if self._tp_struct(event) is not None:
                return f"struct trace_event_raw_{event} *ctx"
            return "void *ctx"
        return "unsigned long long *ctx"

    def _tp_struct(self, event: str) -> list[str] | None:
        return None if self.btf is None else self.btf.structs.get(f"trace_event_raw_{event}")

    def _prologue(self, p: Program, b: Backend) -> None:
        if b.kind == "lsm":
            p.decls.append(f"int ret = (int)ctx[{b.nparams}];  /* the verdict of earlier LSMs */")
            p.pass_ret = "ret"
        if b.kind == "fexit":
            p.prologue.append(f"e->ret = (long)ctx[{b.nparams}];  /* the function's return value */")
        if b.syscall and b.kind == "kprobe":
            p.decls.append("struct pt_regs *regs = (struct pt_regs *)PT_REGS_PARM1(ctx);  /* the syscall's own registers */")
        elif b.syscall and b.kind in ("fentry", "fexit", "fmod_ret"):
            p.decls.append("struct pt_regs *regs = (struct pt_regs *)ctx[0];  /* the syscall's own registers */")

    def _raw(self, b: Backend, idx: int, path: PathT, section: str, hook: dict[str, Any]) -> str:
        """C expression for the raw 64-bit value of argument `idx`."""
        if section == "tracepoints" and b.kind == "tracepoint":
            return self._tp_field(b, idx, path)
        if b.kind == "raw_tracepoint":
            return f"ctx->args[{idx}]"
        if b.kind == "tracepoint":  # a kprobe sys_X lowered to its sys_enter tracepoint
            return f"ctx->args[{idx}]"
        if b.syscall:
            return f"PT_REGS_PARM{idx + 1}_CORE_SYSCALL(regs)"
        if b.kind == "kprobe":
            return f"PT_REGS_PARM{idx + 1}(ctx)"
        if b.nparams and idx >= b.nparams:
            raise HookError(path, f"argument index {idx} is out of range: {b.func} takes "
                            f"{b.nparams} argument(s)")
        return f"ctx[{idx}]"

    def _tp_field(self, b: Backend, idx: int, path: PathT) -> str:
        sub, event = b.func.split("/", 1)
        if idx < 4:
            raise HookError(path, f"tracepoint field {idx} is a common_* field; arguments start at index 4")
        if sub in ("syscalls", "raw_syscalls"):
            exit_ = event.startswith("sys_exit")
            if idx == 4:
                return "ctx->nr"
            if exit_ and idx == 5:
                return "ctx->ret"
            if sub == "raw_syscalls" or exit_:
                raise HookError(path, f"field {idx} of {sub}/{event} is the argument array, which "
                                "bpfpolicy does not decode (hook the per-syscall tracepoint instead)")
            if idx - 5 > 5:
                raise HookError(path, f"field {idx} is out of range for {sub}/{event} (4 = nr, 5..10 = args)")
            return f"ctx->args[{idx - 5}]"
        members = self._tp_struct(event)
        if members is None:
            raise HookError(path, f"struct trace_event_raw_{event} is not in the kernel's BTF; "
                            "its fields cannot be read (use raw: true)")
        fields = members[1:]  # members[0] is `ent` (4 common_* fields)
        k = idx - 4
        if k >= len(fields) or fields[k] == "__data":
            raise HookError(path, f"tracepoint {sub}/{event} has no field {idx}")
        return f"ctx->{fields[k]}"

    def _capture(self, p: Program, b: Backend, hook: dict[str, Any], path: PathT, section: str) -> dict[int, tuple[int, str]]:
        """Capture statements; returns matchArgs index -> (event slot, type)."""
        positions: dict[int, tuple[int, str]] = {}
        args = hook.get("args") or []
        for k, arg in enumerate(args):
            apath = (*path, "args", k)
            idx, t = int(arg["index"]), str(arg.get("type", "auto"))
            key = k if section == "tracepoints" else idx
            positions[key] = (k, t)
            label = arg.get("label") or f"arg{idx}"
            p.captures.append(f"/* {policy_marker(self._where(apath), _fmt(apath))} -- {c_comment(label)} ({c_comment(t)}) */")
            if t == "nop":
                p.captures.append(f"tp_capture_int(e, {k}, 0, TP_ARG_NONE);")
                continue
            raw = self._raw(b, idx, apath, section, hook)
            user = "true" if b.user else "false"
            close_block = False
            if arg.get("resolve"):
                raw, array_addr = self._resolve(p, b, idx, str(arg["resolve"]), raw, apath)
                close_block = True
                if array_addr is not None:
                    if t not in ("string", "filename", "char_buf"):
                        raise HookError((*apath, "resolve"), f"resolve ends at an array: type must be string (got {t})")
                    p.captures.append(f"\ttp_capture_str(e, {k}, (const void *){array_addr}, false);")
                    p.captures.append("}")
                    continue
            if raw.startswith("ctx->__data_loc_"):
                p.captures.append(f"tp_capture_str(e, {k}, (const void *)ctx + ({raw} & 0xffff), false);")
                positions[key] = (k, "string")
            elif t == "data_loc":
                raise HookError((*apath, "type"), "data_loc applies to __data_loc tracepoint fields")
            elif t in S.INT_TYPES or t == "auto":
                size, signed = S.INT_TYPES.get(t, (8, True))
                ctype = {1: "char", 2: "short", 4: "int", 8: "long long"}[size]
                ctype = ("signed " if signed and size == 1 else "" if signed else "unsigned ") + ctype
                kind = "TP_ARG_INT" if signed else "TP_ARG_UINT"
                p.captures.append(f"tp_capture_int(e, {k}, (__s64)({ctype}){raw}, {kind});")
                positions[key] = (k, t if t != "auto" else "int64")
            elif t in ("string", "filename"):
                p.captures.append(f"tp_capture_str(e, {k}, (const void *){raw}, {user});")
            elif t == "char_buf":
                size_idx = arg.get("sizeArgIndex")
                size = (f"(__u64){self._raw(b, int(size_idx) - 1, apath, section, hook)}"
                        if size_idx else "TP_STR_MAX")
                p.captures.append(f"tp_capture_bytes(e, {k}, (const void *){raw}, {size}, {user});")
            elif t in ("cred", "user_namespace", "module"):
                if b.user:
                    raise HookError((*apath, "type"), f"type {t} needs a kernel pointer, but "
                                    f"argument {idx} of a syscall is a user value")
                self.uses_cred = self.uses_cred or t != "module"
                p.captures.append({
                    "cred": f"tp_capture_cred(e, {k}, (const struct cred *){raw});",
                    "user_namespace": f"tp_capture_userns(e, {k}, (struct user_namespace *){raw});",
                    "module": f"tp_capture_str(e, {k}, (const void *)((struct module *){raw})->name, false);",
                }[t])
                if t == "module":
                    positions[key] = (k, "string")
            elif t in S.NET_TYPES or t == "net_device":
                if b.user and t != "sockaddr":
                    raise HookError((*apath, "type"), f"type {t} needs a kernel pointer, but "
                                    f"argument {idx} of a syscall is a user value")
                self.uses_sock = self.uses_sock or t != "net_device"
                p.captures.append({
                    "sock": f"tp_capture_sock(e, {k}, (struct sock *){raw});",
                    "socket": f"tp_capture_sock(e, {k}, BPF_CORE_READ((struct socket *){raw}, sk));",
                    "skb": f"tp_capture_skb(e, {k}, (struct sk_buff *){raw});",
                    "sockaddr": f"tp_capture_sockaddr(e, {k}, (const void *){raw}, {user});",
                    "net_device": f"tp_capture_str(e, {k}, (const void *)((struct net_device *){raw})->name, false);",
                }[t])
            elif t in S.PATH_TYPES:
                if b.user:
                    raise HookError((*apath, "type"), f"type {t} needs a kernel pointer, but "
                                    f"argument {idx} of a syscall is a user value (use string or fd)")
                p.captures.append(self._path_capture(k, t, raw))
            else:
                raise HookError((*apath, "type"), f"argument type {t} is not decoded by bpfpolicy")
            if close_block:
                p.captures[-1] = "\t" + p.captures[-1]
                p.captures.append("}")
        return positions

    def _resolve(self, p: Program, b: Backend, idx: int, resolve: str, raw: str,
                 apath: PathT) -> tuple[str, str | None]:
        """Tetragon's `resolve: a.b.c`: follow BTF members from the argument's own type.
        Opens a `{` block with one typed pointer per dereference; returns the C value of
        the last member (or the address of a final array, for strings)."""
        path = (*apath, "resolve")
        if b.user or b.kind in ("tracepoint", "raw_tracepoint"):
            raise HookError(path, "resolve needs a kernel function or LSM argument with BTF types")
        if self.btf is None:
            raise HookError(path, "resolve needs kernel BTF, which is unavailable")
        func = f"bpf_lsm_{b.func}" if b.kind == "lsm" else b.func
        base = self.btf.param(func, idx)
        if base is None or base.kind != "ptr" or not base.target:
            raise HookError(path, f"argument {idx} of {func} is not a pointer to a struct; nothing to resolve")
        p.captures.append("{")
        p.captures.append(f"\tstruct {base.target} *r0 = (struct {base.target} *){raw};")
        cur, var, pending, n = base.target, "r0", [], 0
        parts = resolve.split(".")
        for i, part in enumerate(parts):
            m = self.btf.member(cur, part)
            if m is None:
                raise HookError(path, f'struct {cur.lstrip("#")} has no member "{part}" (resolve "{resolve}")')
            pending.append(part)
            access = ".".join(pending)
            if i == len(parts) - 1:
                if m.kind == "array":
                    return "0", f"&{var}->{access}"
                if m.kind == "struct":
                    return f"(unsigned long)&{var}->{access}", None
                return f"BPF_CORE_READ({var}, {access})", None
            if m.kind == "ptr" and m.target:
                n += 1
                p.captures.append(f"\tstruct {m.target} *r{n} = BPF_CORE_READ({var}, {access});")
                cur, var, pending = m.target, f"r{n}", []
            elif m.kind == "struct":
                cur = m.target
            else:
                raise HookError(path, f'cannot resolve through "{part}": it is neither a pointer to '
                                "a struct nor an embedded struct")
        raise HookError(path, "empty resolve path")

    @staticmethod
    def _path_capture(k: int, t: str, raw: str) -> str:
        if t == "file":
            return f"tp_capture_file(e, {k}, (struct file *){raw});"
        if t == "path":
            return (f"tp_capture_path(e, {k}, BPF_CORE_READ((struct path *){raw}, dentry), "
                    f"BPF_CORE_READ((struct path *){raw}, mnt));")
        if t == "dentry":
            return f"tp_capture_path(e, {k}, (struct dentry *){raw}, NULL);"
        return f"tp_capture_file(e, {k}, BPF_CORE_READ((struct linux_binprm *){raw}, file));"

    # -------------------------------------------------------------- selectors
    def _selector(self, p: Program, b: Backend, sel: dict[str, Any], spath: PathT, j: int,
                  positions: dict[int, tuple[int, str]], hook: dict[str, Any],
                  only: tuple[str, ...] | None) -> dict[str, Any]:
        matchers: list[dict[str, Any]] = []
        scratch = False
        for key, items in sel.items():
            for k, m in enumerate(items if isinstance(items, list) else []):
                mpath = (*spath, key, k)
                if key == "matchArgs":
                    matchers.append(self._match_arg(m, mpath, positions))
                elif key == "matchPIDs":
                    matchers.append(self._match_pids(m, mpath))
                elif key == "matchBinaries":
                    mm = self._match_strings(m, mpath, "e->binary", "e->binary_len", binary=True)
                    mm["pre"] = ["tp_fill_binary(e);  /* once per event: walks mm->exe_file */"]
                    matchers.append(mm)
                elif key == "matchParentBinaries":
                    scratch = True
                    self.uses_parent_binary = True
                    mm = self._match_strings(m, mpath, "scratch", "scratch_len", binary=True)
                    mm["pre"] = ["scratch_len = tp_parent_binary(scratch);"]
                    matchers.append(mm)
                elif key == "matchNamespaces":
                    matchers.append(self._match_ns(m, mpath))
                elif key == "matchCapabilities":
                    matchers.append(self._match_caps(m, mpath))
        return {"index": j, "where": self._where(spath), "path": _fmt(spath), "matchers": matchers,
                "scratch": scratch, "actions": self._actions(b, sel, spath, j, only)}

    def _matcher(self, path: PathT, text: str, expr: str) -> dict[str, Any]:
        return {"where": self._where(path), "path": _fmt(path), "text": text, "expr": expr, "pre": []}

    def _match_arg(self, m: dict[str, Any], path: PathT, positions: dict[int, tuple[int, str]]) -> dict[str, Any]:
        idx = int(m["index"])
        if idx not in positions:
            raise HookError((*path, "index"), f"matchArgs index {idx} is not a captured argument")
        slot, t = positions[idx]
        op, values = str(m["operator"]), [str(v) for v in m.get("values") or []]
        text = f"arg {idx} {op} {', '.join(values)}"
        if t in S.INT_TYPES or t == "int64":
            unsigned = not S.INT_TYPES.get(t, (8, True))[1]
            v = f"(__u64)e->args[{slot}].ival" if unsigned else f"e->args[{slot}].ival"
            if op in ("InMap", "NotInMap"):
                op, values = ("In" if op == "InMap" else "NotIn"), self._map_values(values, path)
            return self._matcher(path, text, _int_expr(v, op, values, unsigned))
        if t in S.NET_TYPES and op in S.NETWORK_OPERATORS:
            from .net import expr

            return self._matcher(path, text, expr(f"TP_SOCK(e, {slot})", op, values))
        if t in S.STRING_TYPES or t in S.PATH_TYPES or t == "net_device":
            return self._match_strings({"operator": op, "values": values}, path,
                                       f"e->args[{slot}].buf", f"e->args[{slot}].len", text=text)
        raise HookError(path, f"argument {idx} of type {t} cannot be matched")

    def _map_values(self, values: list[str], path: PathT) -> list[str]:
        """InMap values: integers, and `list:NAME` syscall lists as syscall numbers."""
        from .lists import lists_by_name, syscall_numbers

        out: list[str] = []
        for v in values:
            if v.startswith("list:"):
                lst = lists_by_name(self.spec).get(v.removeprefix("list:")) or {}
                out += [str(n) for n in syscall_numbers([str(x) for x in lst.get("values") or []],
                                                        self.ctx.arch)]
            else:
                out.append(v)
        if not out:
            raise HookError(path, "InMap has no values left")
        return out

    def _match_strings(self, m: dict[str, Any], path: PathT, buf: str, length: str,
                       binary: bool = False, text: str | None = None) -> dict[str, Any]:
        op = str(m["operator"])
        values = [str(v) for v in m.get("values") or []]
        if binary:
            op = {"In": "Equal", "NotIn": "NotEqual"}.get(op, op)
        text = text or f"binary {m['operator']} {', '.join(values)}"
        negate = op.startswith("Not")
        base = {"NotEqual": "Equal", "NotIn": "Equal", "In": "Equal", "NotPrefix": "Prefix",
                "NotPostfix": "Postfix"}.get(op, op)
        terms = [f"{self._literal(base, v)}({buf}, {length})" for v in values]
        anyof = " || ".join(terms) or "0"
        return self._matcher(path, text, f"!({anyof})" if negate else anyof)

    def _literal(self, op: str, value: str) -> str:
        """One helper function per (operator, value), shared by every matcher using it."""
        data = value.rstrip("\0").encode()
        key = (op, data)
        if key not in self.literals:
            name = c_ident(data.decode(errors="replace"), prefix=f"tp_{op.lower()}")
            self.literals[key] = {"name": name, "op": op, "value": data.decode(errors="replace"),
                                  "body": literal_body(op, data)}
        return self.literals[key]["name"]

    def _match_pids(self, m: dict[str, Any], path: PathT) -> dict[str, Any]:
        isns = bool(m.get("isNamespacePID"))
        pid = "tp_ns_tgid()" if isns else "e->pid"
        values = [int(v) for v in m["values"]]
        text = f"pid {m['operator']} {values}" + (" (namespace pid)" if isns else "")
        if m.get("followForks"):
            self.uses_pid_tree = True
            vals = (values + values * 4)[:4]
            call = f"tp_tree_has_pid({', '.join(f'{v}U' for v in vals)}, {'true' if isns else 'false'})"
            expr = call if m["operator"] == "In" else f"!{call}"
            if isns:  # Tetragon: a process outside any PID namespace never matches
                expr = f"tp_ns_tgid() != 0 && {expr}"
            return self._matcher(path, text + " or an ancestor's (followForks)", expr)
        return self._matcher(path, text, _int_expr(pid, "In" if m["operator"] == "In" else "NotIn",
                                                   [str(v) for v in values], True))

    def _match_ns(self, m: dict[str, Any], path: PathT) -> dict[str, Any]:
        ns = str(m["namespace"])
        values = []
        for v in m["values"]:
            values.append(str(S.HOST_NS_INUM[ns]) if str(v) == "host_ns" else str(parse_int(v)))
        expr = _int_expr(f"tp_ns_inum(TP_NS_{ns.upper()})", m["operator"], values, True)
        return self._matcher(path, f"{ns} namespace {m['operator']} {m['values']}", expr)

    def _match_caps(self, m: dict[str, Any], path: PathT) -> dict[str, Any]:
        from .check import CAPABILITIES

        mask = 0
        for v in m["values"]:
            mask |= 1 << CAPABILITIES.index(str(v).upper())
        which = {"Effective": "cap_effective", "Inheritable": "cap_inheritable",
                 "Permitted": "cap_permitted"}[str(m.get("type", "Effective"))]
        expr = f"(tp_caps_{which}() & {mask:#x}ULL) != 0"
        if m["operator"] == "NotIn":
            expr = f"!({expr})"
        if m.get("isNamespaceCapability"):  # Tetragon: only tasks outside the host user namespace
            expr = f"tp_ns_inum(TP_NS_USER) != {S.HOST_NS_INUM['User']:#x} && {expr}"
        return self._matcher(path, f"{m.get('type', 'Effective')} caps {m['operator']} {m['values']}", expr)

    # -------------------------------------------------------------- actions
    def _actions(self, b: Backend, sel: dict[str, Any], spath: PathT, j: int,
                 only: tuple[str, ...] | None) -> list[str]:
        acts = sel.get("matchActions") or [{"action": "Post"}]
        bits, out, post, ret = 0, [], None, None
        for k, a in enumerate(acts):
            name = str(a["action"])
            if only is not None and name not in only:
                continue
            bits |= 1 << S.ACTIONS[name]
            apath = (*spath, "matchActions", k)
            if name in ENFORCE and self.monitor:
                continue
            if name == "Sigkill":
                out.append(f"bpf_send_signal(9);  /* {policy_marker(self._where(apath), _fmt(apath))} -- Sigkill */")
            elif name == "Signal":
                out.append(f"bpf_send_signal({int(a['argSig'])});  /* {policy_marker(self._where(apath), _fmt(apath))} -- Signal */")
            elif name == "Override":
                err = int(a.get("argError", 0))
                if b.kind == "kprobe":
                    out.append(f"bpf_override_return(ctx, {err});  /* {policy_marker(self._where(apath), _fmt(apath))} -- Override */")
                elif b.kind == "lsm":
                    ret = f"ret ? ret : {max(-4095, min(0, err))}"
                elif b.kind == "fmod_ret":
                    ret = str(err)
            elif name == "Post":
                post = a
        if self.monitor:
            bits |= 1 << 31
        names = [n for n, b in S.ACTIONS.items() if bits & (1 << b)] + (["monitor"] if self.monitor else [])
        lines = [f"e->actions = {bits:#x};  /* {' | '.join(names)} */"]
        if post is not None:
            if post.get("kernelStackTrace"):
                self.uses_stacks = True
                lines.append("e->kernel_stack = bpf_get_stackid(ctx, &stacks, 0);  /* kernelStackTrace */")
            if post.get("userStackTrace"):
                self.uses_stacks = True
                lines.append("e->user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);  /* userStackTrace */")
            limit = parse_rate_limit(post["rateLimit"]) if "rateLimit" in post else None
            if limit:
                self.uses_rate_limit = True
                scope = {"thread": "e->tid", "process": "e->pid", "global": "0"}[post.get("rateLimitScope", "thread")]
                lines.append(f"if (tp_rate_ok(e, {j}, {scope}, {limit}ULL * 1000000000ULL))  /* rateLimit {limit}s */")
                lines.append("\ttp_post(e);")
            else:
                lines.append("tp_post(e);")
        lines += out
        if ret is not None:
            lines.append(f"return {ret};  /* Override: argError (an earlier LSM's denial stands) */"
                         if b.kind == "lsm" else f"return {ret};  /* Override: argError */")
        else:
            lines.append(f"return {'ret' if b.kind == 'lsm' else '0'};")
        return lines

    # -------------------------------------------------------------- output
    def render(self) -> str:
        policy_id = f"TracingPolicy/{self.name}"
        # bpf_metadata_bpfpolicy_hash is the program hash, as in every kind (bpfpolicy/artifact.py)
        source = render("tracing_policy.bpf.c.j2", policy_name=self.name, policy_id=policy_id,
                      source_hash="", programs=self.programs,
                      literals=list(self.literals.values()),
                      str_max=S.CAPTURE_STRING, max_args=S.MAX_ARGS, ringbuf_size=256 * 1024,
                      uses_rate_limit=self.uses_rate_limit, uses_parent_binary=self.uses_parent_binary,
                      uses_sock=self.uses_sock, uses_cred=self.uses_cred,
                      uses_pid_tree=self.uses_pid_tree, uses_stacks=self.uses_stacks)
        return stamp_program_hash(source)[0]

    def artifact(self, source: str, obj: bytes) -> Artifact:
        programs = [{"name": p.name, "type": p.kind, "section": p.sec, "hook": p.hook_id} for p in self.programs]
        manifest = {
            "object": "prog.bpf.o",
            "program_hash": program_hash(source),
            "programs": programs,
            "maps": [
                {"name": "events", "type": "ringbuf"},
                {"name": "tp_heap", "type": "percpu_array"},
                {"name": "tp_scratch_map", "type": "percpu_array"},
                *([{"name": "tp_rate_limit", "type": "lru_hash"}] if self.uses_rate_limit else []),
                *([{"name": "stacks", "type": "stack_trace"}] if self.uses_stacks else []),
            ],
            "attachments": [{"program": p.name, "type": p.kind} for p in self.programs],
            "events": {"map": "events", "type": "ringbuf", "layout": "tracing_event_v1",
                       **event_layout(), "hooks": self.hooks},
            "features": self.features,
            "btf": self.btf_source,
            "metadata": {"policy": f"TracingPolicy/{self.name}", "revision": self.ctx.revision,
                         "mode": "monitor" if self.monitor else "enforce"},
        }
        files = {"prog.bpf.c": source.encode(), "prog.bpf.o": obj,
                 "kernel-test.txt": self.kernel_test().encode()}
        art = Artifact("TracingPolicy", self.name, files=files, manifest=manifest)
        art.warnings.extend(self.warnings)
        return art

    def kernel_test(self) -> str:
        script = KernelTestScript().comment(f"TracingPolicy/{self.name}: load every program, attach by SEC()")
        script.object()
        for p in self.programs:
            script.attach(p.name)
        annotation = ((self.data.get("metadata") or {}).get("annotations") or {}).get("bpfpolicy.io/kernel-test")
        for line in str(annotation or "").splitlines():
            if line.strip().startswith("exec-expect "):
                script.raw(line.strip())
        return script.text()


# ------------------------------------------------------------------------ C expressions


def _int_expr(v: str, op: str, values: list[str], unsigned: bool) -> str:
    suffix = "ULL" if unsigned else "LL"

    def lit(x: str) -> str:
        n = parse_int(x)
        if n is None:
            raise ValueError(x)
        return f"{n & 0xFFFFFFFFFFFFFFFF if unsigned else n}{suffix}"

    if op in ("Equal", "In"):
        return " || ".join(f"{v} == {lit(x)}" for x in values)
    if op in ("NotEqual", "NotIn"):
        return " && ".join(f"{v} != {lit(x)}" for x in values)
    if op == "GT":
        return " || ".join(f"{v} > {lit(x)}" for x in values)
    if op == "LT":
        return " || ".join(f"{v} < {lit(x)}" for x in values)
    if op == "Mask":
        return " || ".join(f"({v} & {lit(x)}) != 0" for x in values)
    if op in ("InRange", "NotInRange"):
        terms = []
        for x in values:
            lo, _, hi = x.partition(":")
            terms.append(f"({v} >= {lit(lo)} && {v} <= {lit(hi)})")
        expr = " || ".join(terms)
        return f"!({expr})" if op == "NotInRange" else expr
    raise ValueError(op)


_PLAIN = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:@,=~ ")


def _char(b: int) -> str:
    """A byte as C: 'x' for plain printable characters, (char)N otherwise."""
    return f"'{chr(b)}'" if b in _PLAIN else f"(char){b}"


def literal_body(op: str, data: bytes) -> str:
    """Straight-line byte compares of `s` (length `len`) against a policy value. The
    value never becomes a C string literal: plain characters are char constants, the rest
    numbers."""
    n = len(data)
    head = f"len == {n}" if op == "Equal" else f"len >= {n}"
    if op == "Postfix":
        body = [f"TP_TAIL(s, len, {n}, {i}) == {_char(b)}" for i, b in enumerate(data)]
    else:
        body = [f"s[{i}] == {_char(b)}" for i, b in enumerate(data)]
    lines, line = [], head
    for term in body:
        if len(line) + len(term) > 80:
            lines.append(line)
            line = term
        else:
            line += " && " + term
    lines.append(line)
    return " &&\n\t       ".join(lines)


def _host_version() -> tuple[int, int] | None:
    import platform

    m = re.match(r"(\d+)\.(\d+)", platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else None


def _fmt(path: PathT) -> str:
    from ...policy.diagnostics import format_path

    return format_path(path)
