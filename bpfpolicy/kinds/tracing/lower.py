"""Lower a validated TracingPolicy to C: build the selector IR (`ir.py`) once — a backend
per hook (`backends/`), its captures (`capture.py`), its selectors' matchers and actions
(`selectors.py`) — and render `codegen/templates/tracing_policy.bpf.c.j2` with the
partials in `codegen/templates/tracing/`. No C text is written here.

Program names say the backend, the hook target and the policy rule
(`tp_sys_enter_openat_k0` is kprobes[0] on the sys_enter_openat tracepoint); the kernel
keeps 15 characters of them (BPF_OBJ_NAME_LEN), the `@policy` marker above each program
the full rule path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...artifact import program_hash, stamp_program_hash
from ...codegen.build import build_bpf, vmlinux_header
from ...codegen.render import render
from ...policy.diagnostics import Diagnostic, PolicyError
from ...policy.load import Document
from ..base import Artifact, CompileContext
from ..btf import Btf, host_btf, load, target_btf
from ..target import debian_arch
from ..vectors import KernelTestScript
from . import spec as S
from .backends import PREFIXES, Backend, HookError, PathT, module
from .backends.base import fmt
from .backends.choose import ARCH_PREFIX, BackendChooser
from .capture import MAX_DATA, CaptureBuilder
from .check import hook_sections
from .events import event_layout
from .features import features_for
from .ir import Literal, Program, Site, Tunable, Uses
from .lists import GENERATED_LISTS, expand_generated
from .order import MAX_MATCH_STRING, plan
from .returns import RET_MAP_ENTRIES, return_programs
from .selectors import ENFORCE, SelectorBuilder

TARGET_ARCH = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64"}
SECTION_LETTER = {"kprobes": "k", "tracepoints": "t", "lsmhooks": "l", "fentries": "f", "uprobes": "u", "usdts": "s"}
TITLES = {"kprobes": ("kprobe", "call"), "fentries": ("fentry", "call"), "lsmhooks": ("lsm hook", "hook"),
          "uprobes": ("uprobe", "call"), "usdts": ("usdt", "call")}
# An expanded `call: list:NAME` hook remembers its list (the manifest's hook table, one
# backend note per list); not a Tetragon field, so it cannot clash with one.
LIST_KEY = "__bpfpolicy_list"
PLAIN_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:@,=~ ")

__all__ = ["ARCH_PREFIX", "HookError", "Lowering", "compile_tracing_policy", "render_source"]


# ------------------------------------------------------------------------ entry point


def compile_tracing_policy(doc: Document, ctx: CompileContext) -> Artifact:
    lowering = Lowering(doc, ctx)
    source = lowering.render()
    header = vmlinux_header(lowering.header_btf) if lowering.header_btf else vmlinux_header()
    extra = (f"-D__TARGET_ARCH_{TARGET_ARCH.get(ctx.arch, 'x86')}", "-I", str(header.parent))
    result = build_bpf(source, name=lowering.name, extra_flags=extra)
    return lowering.artifact(source, result.object)


def render_source(doc: Document, ctx: CompileContext) -> tuple[str, list[tuple[str, str, str, int]],
                                                               list[dict[str, Any]], list[str]]:
    """The C text without building it, with (name, section, backend, hook) per program."""
    lowering = Lowering(doc, ctx)
    source = lowering.render()
    return source, [(p.name, p.sec, p.kind, p.hook_id) for p in lowering.programs], lowering.hooks, lowering.warnings


class Lowering:
    """The IR of one policy: programs, shared literal helpers, tunables, used helpers."""

    def __init__(self, doc: Document, ctx: CompileContext) -> None:
        self.doc = doc
        self.ctx = ctx
        self.data = doc.data
        self.name = str(self.data["metadata"]["name"])
        self.spec = self.data.get("spec") or {}
        self.features = features_for(ctx.kernel, ctx.options, ctx.arch)
        self.warnings: list[str] = []
        self.header_btf: Path | None = None  # BTF for vmlinux.h when the host's does not fit
        self.btf, self.btf_source = self._target_btf(ctx)
        opts = {o.get("name"): str(o.get("value")) for o in self.spec.get("options") or []}
        self.monitor = opts.get("policy-mode") == "monitor"
        self.chooser = BackendChooser(self.features, self.btf, self.btf_source, ctx.arch,
                                      opts.get("override-method"), self.warnings)
        self.programs: list[Program] = []
        self.hooks: list[dict[str, Any]] = []
        self.uses = Uses()
        self.literals: dict[tuple[str, bytes], Literal] = {}
        self.tunables: list[Tunable] = []
        self._generated_lists: dict[str, list[tuple[str, bool]]] = {}
        self.selectors = SelectorBuilder(self._site, self.uses, self.monitor, self.literals,
                                         self.tunables, self._map_values)
        self._lower()

    def _target_btf(self, ctx: CompileContext) -> tuple[Btf | None, str]:
        """Function names and parameter counts come from the target's BTF: a given file,
        the matrix's cached image of that kernel, or (same or unknown kernel) this host's."""
        if ctx.options.get("btf"):
            if ctx.target.foreign_arch:
                self.header_btf = Path(ctx.options["btf"])
            return load(Path(ctx.options["btf"])), str(ctx.options["btf"])
        if ctx.target.foreign_arch:
            return self._foreign_btf(ctx)
        host = _host_version()
        if ctx.kernel is not None and ctx.kernel != host:
            btf = target_btf(ctx.kernel)
            if btf is not None:
                return btf, f"cached image of kernel {ctx.kernel[0]}.{ctx.kernel[1]}"
            self.warnings.append(f"no BTF of kernel {ctx.kernel[0]}.{ctx.kernel[1]} at hand: function "
                                 "parameter counts are taken from this host's BTF")
        return host_btf(), "host /sys/kernel/btf/vmlinux"

    def _foreign_btf(self, ctx: CompileContext) -> tuple[Btf, str]:
        """Another arch than the host's: hook names, parameters and `vmlinux.h` (CO-RE
        `PT_REGS_*` need that arch's `struct user_pt_regs`/`pt_regs`) must all come from a
        kernel of that arch — the matrix cache's image; refused when there is none."""
        path = ctx.target.btf if ctx.kernel is not None else None
        if path is None:
            which = (f"kernel {ctx.target.version_text} is not in the kernel-test cache for {ctx.arch}"
                     if ctx.kernel is not None else "no --kernel was given")
            raise PolicyError([self.doc.diag(("spec",), (
                f"compiling for {ctx.arch} needs the BTF of an {ctx.arch} kernel and {which}: "
                f"`bpfpolicy kernel-test --arch {debian_arch(ctx.arch)} --kernels X.Y` caches one, "
                "or give its BTF file as the btf option"))])
        self.header_btf = path
        return load(path), f"cached {ctx.arch} image of kernel {ctx.target.version_text}"

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
        if "path" in hook:  # uprobes / usdts: one hook per probe point
            from .backends.uprobe import expand

            return expand(hook)
        call = str(hook.get("call", ""))
        if not call.startswith("list:"):
            return [hook]
        from .lists import lists_by_name

        lst = lists_by_name(self.spec).get(call.removeprefix("list:"))
        if lst is not None and lst.get("type") in GENERATED_LISTS:
            return [{**hook, "call": c, "syscall": sc, LIST_KEY: call} for c, sc in self._generated(lst, path)]
        if lst is None or not lst.get("values"):
            raise HookError((*path, "call"), f"{call}: no such list with values")
        return [{**hook, "call": str(v), "syscall": True, LIST_KEY: call} for v in lst["values"]]

    def _generated(self, lst: dict[str, Any], path: PathT) -> list[tuple[str, bool]]:
        """generated_syscalls / generated_ftrace filled for this target (lists.py)."""
        key = str(lst.get("name"))
        if key not in self._generated_lists:
            on_host = not self.ctx.target.foreign_arch and self.ctx.kernel in (None, _host_version())
            self._generated_lists[key] = expand_generated(
                lst, (*path, "call"), arch=self.ctx.arch, features=self.features,
                btf_funcs=self.btf.funcs if self.btf is not None else None,
                prefix=ARCH_PREFIX.get(self.ctx.arch, "__x64_"), on_host=on_host, warnings=self.warnings)
        return self._generated_lists[key]

    def _hook(self, section: str, i: int, hook: dict[str, Any], path: PathT, suffix: str = "") -> None:
        selectors = [self._expand_macros(s) for s in hook.get("selectors") or []]
        actions = {a.get("action") for s in selectors for a in s.get("matchActions") or []}
        enforce = bool(actions & set(ENFORCE)) and not self.monitor
        override = "Override" in actions and not self.monitor
        ret_probe = bool(hook.get("return")) and section in ("kprobes", "fentries")
        backend = self.chooser.choose(section, hook, path, enforce, override, selectors)
        if backend is None:
            return
        if backend.remap is not None:
            hook, selectors = self._remap_to_file(hook, selectors, backend.remap, path)
        hook_id = len(self.hooks)
        self.hooks.append(self._hook_meta(section, hook, path, backend))
        rule = f"{SECTION_LETTER[section]}{i}{suffix}"
        if ret_probe:  # kretprobe / sys_exit_* pair / fexit: returns.py
            self.programs += return_programs(self, rule, backend, hook, selectors, path, hook_id,
                                             section, enforce)
            self.hooks[hook_id]["return_attach"] = self.programs[-1].sec
        else:
            self.programs.append(self._program(rule, "", backend, hook, selectors, path, hook_id, section))

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
            "name": name, "section": section, "path": fmt(path), "line": line, "col": col,
            "backend": b.kind, "attach": b.sec, "why": b.why,
            "message": hook.get("message"), "tags": hook.get("tags") or [],
            "args": [{"index": a["index"], "type": a.get("type", "auto"), "label": a.get("label")}
                     for a in hook.get("args") or []],
            "return": bool(hook.get("return")),
            **({"return_type": str((hook.get("returnArg") or {}).get("type", "int"))} if hook.get("return") else {}),
            **({"list": hook[LIST_KEY]} if LIST_KEY in hook else {}),  # one backend note per list
        }

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

    # -------------------------------------------------------------- programs
    def _program(self, rule: str, half: str, b: Backend, hook: dict[str, Any],
                 selectors: list[dict[str, Any]], path: PathT, hook_id: int, section: str,
                 only: tuple[str, ...] | None = None) -> Program:
        name = program_name(b, rule + half)
        shape = module(b).shape(b, self.btf)
        p = Program(name=name, sec=b.sec, kind=b.kind, hook_id=hook_id, site=self._site(path),
                    title=_title(section, hook), why=b.why, ctx=shape.ctx, tp_event=shape.tp_event,
                    verdict_index=shape.verdict_index, retval_index=shape.retval_index,
                    syscall_regs=shape.syscall_regs)
        p.captures, positions = CaptureBuilder(b, section, self.btf, self._site, self.uses).build(hook, path)
        for j, sel in enumerate(selectors):
            p.selectors.append(self.selectors.selector(name, b, sel, (*path, "selectors", j), j, positions, only))
        if not selectors and only is not None and "Post" not in only:
            p.nothing_to_enforce = True
        plan(p, {lit.name: (lit.op, len(lit.data)) for lit in self.literals.values()})
        return p

    def _where(self, path: PathT) -> str:
        line, col = self.doc.pos(path)
        return f"{self.doc.source_name}:{line}:{col}"  # reaches C only through policy_marker

    def _site(self, path: PathT) -> Site:
        return Site(self._where(path), fmt(path))

    def _map_values(self, values: list[str], path: PathT) -> list[str]:
        """InMap values: integers, and `list:NAME` syscall lists as syscall numbers."""
        from .lists import lists_by_name, syscall_numbers

        out: list[str] = []
        for v in values:
            if v.startswith("list:"):
                lst = lists_by_name(self.spec).get(v.removeprefix("list:")) or {}
                names = [c for c, _ in self._generated(lst, path)] if lst.get("type") == "generated_syscalls" \
                    else [str(x) for x in lst.get("values") or []]
                out += [str(n) for n in syscall_numbers(names, self.ctx.arch)]
            else:
                out.append(v)
        if not out:
            raise HookError(path, "InMap has no values left")
        return out

    # -------------------------------------------------------------- output
    def render(self) -> str:
        policy_id = f"TracingPolicy/{self.name}"
        u = self.uses
        # bpf_metadata_bpfpolicy_hash is the program hash, as in every kind (bpfpolicy/artifact.py)
        source = render("tracing_policy.bpf.c.j2", policy_name=self.name, policy_id=policy_id,
                      source_hash="", programs=self.programs,
                      literals=list(self.literals.values()), tunables=self.tunables,
                      plain_bytes=PLAIN_BYTES,
                      str_max=S.CAPTURE_STRING, match_max=MAX_MATCH_STRING, max_args=S.MAX_ARGS, ringbuf_size=256 * 1024,
                      uses_rate_limit=u.rate_limit, uses_parent_binary=u.parent_binary,
                      uses_sock=u.sock, uses_cred=u.cred, uses_pid_tree=u.pid_tree,
                      uses_stacks=u.stacks, uses_ret_store=u.ret_store, ret_entries=RET_MAP_ENTRIES,
                      uses_data=u.data, data_max=MAX_DATA, last_mask=S.LAST_ACTION_MASK)
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
                *([{"name": "tp_rate_limit", "type": "lru_hash"}] if self.uses.rate_limit else []),
                *([{"name": "stacks", "type": "stack_trace"}] if self.uses.stacks else []),
                *([{"name": "tp_ret_map", "type": "lru_hash"}] if self.uses.ret_store else []),
                *([{"name": "tp_data_map", "type": "percpu_array"}] if self.uses.data else []),
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
        for p in self.programs:  # the backend this kernel gets, so the matrix log says what ran
            script.comment(f"{p.title} runs as {p.sec} on kernel {self.features.get('kernel')}")
            script.attach(p.name)
        annotation = ((self.data.get("metadata") or {}).get("annotations") or {}).get("bpfpolicy.io/kernel-test")
        for line in str(annotation or "").splitlines():
            if line.strip().startswith(("exec-expect ", "event-expect ")):  # matrix/expect.py
                script.raw(line.strip())
        return script.text()


# ------------------------------------------------------------------------ names


def program_name(b: Backend, rule: str) -> str:
    """`<backend>_<target>_<rule>`: `kprobe_sys_openat_k0`, `lsm_file_open_l1`,
    `tp_sys_enter_openat_k0` (syscall wrappers lose their arch prefix)."""
    target = b.sec.split("/")[-1]
    target = re.sub(r"^__(x64|arm64|ia32|se|do)_", "", target)
    return re.sub(r"[^a-z0-9_]", "_", f"{PREFIXES[b.kind]}_{target}_{rule}".lower())


def _title(section: str, hook: dict[str, Any]) -> str:
    if section == "tracepoints":
        return f"tracepoint {hook.get('subsystem')}/{hook.get('event')}"
    label, key = TITLES[section]
    return f"{label} {hook.get(key)}"


def _host_version() -> tuple[int, int] | None:
    import platform

    m = re.match(r"(\d+)\.(\d+)", platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else None
