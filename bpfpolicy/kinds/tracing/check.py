"""Semantic checks for TracingPolicy: Tetragon's own rules (one hook section, limits,
operators, per-hook actions) plus what bpfpolicy implements.

Every problem is reported with its path (so `file:line:col`), and names are answered with
a did-you-mean. Features Tetragon has but bpfpolicy does not compile are reported through
`Reporter.unsupported`, whose lenient drop removes the whole hook (or a field whose
removal only loses information), so a lenient policy never enforces or reports *more*
than what was written.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ...policy.diagnostics import did_you_mean
from ..base import Reporter
from . import spec as S

Path_ = tuple[str | int, ...]

RATE_LIMIT = re.compile(r"^(\d{1,30})([smh]?)$")
SYSCALL_CALL = re.compile(r"^(__x64_|__arm64_|__ia32_|__se_|__do_)?sys_\w+$")
TRACEFS = "/sys/kernel/tracing/events"
# A C identifier, with the `.isra.0`/`.constprop.0` suffixes compiler clones carry (KSYM_NAME_LEN 512).
FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}(\.[A-Za-z0-9_]{1,64}){0,4}")

OPTIONS = {
    "disable-kprobe-multi": ("true", "false", "1", "0"),
    "override-method": ("fmod-ret", "override-return"),
    "policy-mode": ("enforce", "monitor"),
}

CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


def parse_int(value: Any) -> int | None:
    """Tetragon reads integer values with strconv base 0: decimal, 0x.., 0o.., 0b.."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if len(text) > S.MAX_INT_TEXT:  # int() of thousands of digits is slow, then refused
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def int_range(t: str) -> tuple[int, int]:
    """The values an integer argument of type `t` can hold (its C width and signedness);
    `auto` is captured as a signed 64-bit value."""
    size, signed = S.INT_TYPES.get(t, (8, True))
    bits = 8 * size
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def parse_rate_limit(value: Any) -> int | None:
    """`rateLimit` in seconds ("5" = 5 s, "1m", "2h")."""
    m = RATE_LIMIT.match(str(value).strip())
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _clip(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def canonical(name: str, table: Any, extra: dict[str, str] | None = None) -> str | None:
    """Tetragon's spelling when `name` is a case/spelling variant of it, else None."""
    if extra and name in extra:
        return extra[name]
    for known in table:
        if known.lower() == name.lower():
            return known
    return None


def hook_sections(spec: dict[str, Any]) -> list[str]:
    return [s for s in S.HOOK_SECTIONS if spec.get(s)]


def is_syscall_hook(section: str, hook: dict[str, Any]) -> bool:
    """Tetragon's CRD defaults `syscall` to true; a call that cannot be a syscall is
    treated as a plain function (with a warning from the checker)."""
    if section not in ("kprobes", "fentries"):
        return False
    return bool(hook.get("syscall", True)) and bool(SYSCALL_CALL.match(str(hook.get("call", ""))))


class TracingChecker:
    def __init__(self, report: Reporter, foreign_kind: str | None = None) -> None:
        self.r = report
        self.foreign_kind = foreign_kind
        self.macros: dict[str, Any] = {}
        self.lists: dict[str, dict[str, Any]] = {}
        self.unsupported_lists: set[str] = set()
        self.section = ""

    # ------------------------------------------------------------------ top level
    def check(self, data: dict[str, Any]) -> None:
        spec = data.get("spec") or {}
        if self.foreign_kind == "TracingPolicyNamespaced":
            self.r.unsupported(("kind",), "TracingPolicyNamespaced applies to the pods of one "
                               "Kubernetes namespace, which has no meaning on a single host "
                               "(use kind TracingPolicy)", drop=("spec",))
        namespace = (data.get("metadata") or {}).get("namespace")
        if namespace is not None and self.foreign_kind != "TracingPolicyNamespaced":
            self.r.warning(("metadata", "namespace"), "metadata.namespace has no effect: "
                           "TracingPolicy is cluster-scoped (it applies to the whole host)")
        for key in ("podSelector", "containerSelector"):
            if key in spec:
                self.r.unsupported(("spec", key), f"{key} selects Kubernetes pods/containers, "
                                   "which has no meaning on a single host", drop=("spec",))
        for key in ("hostSelector", "nodeSelector"):
            if key in spec:
                self.r.unsupported(("spec", key), f"{key} selects nodes by label; bpfpolicy "
                                   "applies a policy to the host it runs on", drop=("spec",))
        if spec.get("loader"):
            self.r.unsupported(("spec", "loader"), "loader (library load events) is not "
                               "implemented", drop=("spec", "loader"))
        self.lists = self._lists(spec.get("lists") or [])
        if "enforcers" in spec:
            self.r.unsupported(("spec", "enforcers"), "enforcers (NotifyEnforcer) are not "
                               "implemented; use Override or Sigkill in matchActions",
                               drop=("spec", "enforcers"))
        self._options(spec.get("options") or [])
        self.macros = spec.get("selectorsMacros") or {}
        for name, sel in self.macros.items():
            self._selector(("spec", "selectorsMacros", name), sel, None, "macros", {}, None)
        self._sections(spec)

    def _lists(self, lists: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from .lists import GENERATED_LISTS, LIST_TYPES, syscall_problem

        out: dict[str, dict[str, Any]] = {}
        for i, lst in enumerate(lists):
            path = ("spec", "lists", i)
            name, ltype = str(lst.get("name")), str(lst.get("type", "syscalls"))
            if name in out:
                self.r.error((*path, "name"), f'duplicate list name "{name}"')
            out[name] = lst
            if ltype not in LIST_TYPES:
                self.r.error((*path, "type"), f'unknown list type "{ltype}"'
                             f"{did_you_mean(ltype, LIST_TYPES, 0.6)}")
            elif ltype in GENERATED_LISTS:
                self._generated_list(path, lst, ltype)
            else:
                if not lst.get("values"):
                    self.r.error(path, "a syscalls list needs values")
                for k, v in enumerate(lst.get("values") or []):
                    why = syscall_problem(str(v))
                    if why and "32-bit" in why:  # valid for Tetragon: dropping it only narrows
                        self.r.unsupported((*path, "values", k), why, drop=(*path, "values", k))
                    elif why:
                        self.r.error((*path, "values", k), why)
        return out

    def _generated_list(self, path: Path_, lst: dict[str, Any], ltype: str) -> None:
        """generated_syscalls: every syscall of the target (filled at compile from its BTF);
        generated_ftrace: the target's ftrace-able functions matching `pattern` (a regex,
        searched, as Tetragon's ftrace.ReadAvailFuncs). Neither takes values (Tetragon:
        "error generated list '%s' has values")."""
        if lst.get("values"):
            self.r.error((*path, "values"), f"a {ltype} list takes no values: bpfpolicy fills it "
                         "when compiling for the target kernel" + (" (every syscall in its BTF)"
                         if ltype == "generated_syscalls" else " (its functions matching pattern)"))
        pattern = lst.get("pattern")
        if ltype == "generated_syscalls":
            if pattern is not None:
                self.r.warning((*path, "pattern"), "pattern has no effect on a generated_syscalls "
                               "list (only generated_ftrace lists are filtered)")
            return
        if not pattern:
            self.r.error(path, "a generated_ftrace list needs pattern (a regular expression "
                         "over the kernel's available_filter_functions)")
            return
        import re

        try:
            re.compile(str(pattern))
        except re.error as e:
            self.r.error((*path, "pattern"), f"pattern is not a regular expression: {e}")

    def _list_ref(self, path: Path_, ref: str, drop: Path_ | None = None) -> dict[str, Any] | None:
        name = ref.removeprefix("list:")
        if name in self.unsupported_lists:
            self.r.unsupported(path, f'list "{name}" is not supported (see spec.lists)',
                               drop=drop or path)
            return None
        if name not in self.lists:
            self.r.error(path, f'unknown list "{name}"{did_you_mean(name, self.lists)} '
                         "(define it in spec.lists)")
            return None
        return self.lists[name]

    def _options(self, options: list[dict[str, Any]]) -> None:
        for i, opt in enumerate(options):
            name, value = opt.get("name", ""), opt.get("value")
            if name not in OPTIONS:
                self.r.error(("spec", "options", i, "name"),
                             f'unknown option "{name}"{did_you_mean(name, OPTIONS, 0.6)}; '
                             f"known: {', '.join(OPTIONS)}")
                continue
            allowed = OPTIONS[name]
            if value is None or str(value) not in allowed:
                self.r.error(("spec", "options", i, "value"),
                             f'option {name} takes one of: {", ".join(allowed)}'
                             + (did_you_mean(str(value), allowed, 0.6) if value else ""))

    def _sections(self, spec: dict[str, Any]) -> None:
        present = hook_sections(spec)
        if not present:
            self.r.error(("spec",), "no hook section: expected one of kprobes, tracepoints, "
                         "lsmhooks, fentries, uprobes, usdts")
            return
        if len(present) > 1:
            self.r.error(("spec", present[1]),
                         "tracing policies with multiple sections of kprobes, tracepoints, lsm "
                         "hooks, uprobes or usdts are currently not supported (Tetragon's rule): "
                         f"found {' and '.join(present)}; split them into separate policies")
        for section in present:
            hooks = spec[section]
            for i, hook in enumerate(hooks):
                self._hook(section, i, hook)

    # ------------------------------------------------------------------ hooks
    def _hook(self, section: str, i: int, hook: dict[str, Any]) -> None:
        path: Path_ = ("spec", section, i)
        if section in ("uprobes", "usdts"):
            if not self._uprobe(path, hook):
                return
        elif section in ("kprobes", "fentries"):
            self._kprobe(section, path, hook)
        elif section == "tracepoints":
            self._tracepoint(path, hook)
        else:
            self._lsmhook(path, hook)
        self._args(section, path, hook)
        if "data" in hook:
            self.r.unsupported((*path, "data"), "data arguments (matchData) are not implemented",
                               drop=path)
        if len(hook.get("message") or "") > S.MAX_MESSAGE:
            self.r.error((*path, "message"), f"message is longer than {S.MAX_MESSAGE} characters")
        if len(hook.get("tags") or []) > S.MAX_TAGS:
            self.r.error((*path, "tags"), f"at most {S.MAX_TAGS} tags per hook")
        selectors = hook.get("selectors") or []
        if len(selectors) > S.MAX_SELECTORS:
            self.r.error((*path, "selectors", S.MAX_SELECTORS),
                         f"at most {S.MAX_SELECTORS} selectors per hook (has {len(selectors)}); "
                         "Tetragon rejects more (issue #5526)")
        for j, sel in enumerate(selectors):
            self._selector((*path, "selectors", j), sel, hook, section, self._arg_types(hook, section), path)

    def _kprobe(self, section: str, path: Path_, hook: dict[str, Any]) -> None:
        call = str(hook.get("call", ""))
        if not call.startswith("list:") and not FUNCTION_NAME.fullmatch(call):
            self.r.error((*path, "call"), f'"{_clip(call)}" is not a kernel function name '
                         "(letters, digits and _, optionally with .suffixes like .isra.0)")
            return
        if call.startswith("list:"):
            from .lists import MAX_LIST_CALLS

            lst = self._list_ref((*path, "call"), call, drop=path)
            if lst is not None and len(lst.get("values") or []) > MAX_LIST_CALLS:
                self.r.error((*path, "call"), f"{call} has {len(lst['values'])} entries: at most "
                             f"{MAX_LIST_CALLS} (one program each)")
        if hook.get("syscall", True) and not SYSCALL_CALL.match(call) and not call.startswith("list:"):
            how = "is true" if "syscall" in hook else "defaults to true (Tetragon's CRD)"
            self.r.warning((*path, "call"), f'syscall {how} but "{call}" is not a syscall '
                           "(sys_*); it is traced as a kernel function with syscall: false")
        if hook.get("return") and "returnArg" not in hook:
            self.r.error((*path, "return"), "return: true needs returnArg (the type of the "
                         "return value)")
        if "returnArg" in hook and not hook.get("return"):
            self.r.warning((*path, "returnArg"), "returnArg has no effect without return: true")
        if "returnArg" in hook and hook.get("return"):
            rtype = str(hook["returnArg"].get("type", "int"))
            if rtype not in S.INT_TYPES:
                self.r.unsupported((*path, "returnArg", "type"), f'return value type "{rtype}" '
                                   "is not captured (only integer return values are)", drop=path)
        if "returnArgAction" in hook:
            self.r.unsupported((*path, "returnArgAction"), "returnArgAction "
                               f"{hook['returnArgAction']} (socket tracking) is not implemented",
                               drop=path)

    def _uprobe(self, path: Path_, hook: dict[str, Any]) -> bool:
        """Tetragon's uprobe entry: an absolute path, symbols and/or offsets (refCtrOffsets
        pair with offsets). False when the entry was dropped."""
        from .uprobe_check import check_uprobe

        return check_uprobe(self.r, path, hook)

    def _tracepoint(self, path: Path_, hook: dict[str, Any]) -> None:
        sub, event = str(hook.get("subsystem")), str(hook.get("event"))
        for part, value in (("subsystem", sub), ("event", event)):
            if not re.fullmatch(r"[A-Za-z0-9_]+", value):
                self.r.error((*path, part), f'"{value}" is not a tracepoint {part} name')
                return
        root = os.environ.get("BPFPOLICY_TRACEFS", TRACEFS)
        if os.access(root, os.R_OK | os.X_OK):  # tracefs is root-only: check only when readable
            if not os.path.isdir(os.path.join(root, sub)):
                subs = os.listdir(root)
                self.r.error((*path, "subsystem"), f'no tracepoint subsystem "{sub}" on this '
                             f"host{did_you_mean(sub, subs, 0.6)}")
            elif not os.path.isdir(os.path.join(root, sub, event)):
                events = os.listdir(os.path.join(root, sub))
                self.r.error((*path, "event"), f'no tracepoint "{sub}/{event}" on this '
                             f"host{did_you_mean(event, events, 0.6)}")

    def _lsmhook(self, path: Path_, hook: dict[str, Any]) -> None:
        name = str(hook.get("hook", ""))
        if not FUNCTION_NAME.fullmatch(name):
            self.r.error((*path, "hook"), f'"{_clip(name)}" is not an LSM hook name')
            return
        if name.startswith("security_"):
            self.r.error((*path, "hook"), f'LSM hook names have no security_ prefix (did you '
                         f'mean "{name.removeprefix("security_")}"?)')
            return
        from ..btf import host_btf

        btf = host_btf()
        if btf is not None and f"bpf_lsm_{name}" not in btf.funcs:
            hooks = [f.removeprefix("bpf_lsm_") for f in btf.funcs if f.startswith("bpf_lsm_")]
            self.r.error((*path, "hook"), f'no LSM hook "{name}" in this kernel\'s BTF '
                         f"(bpf_lsm_{name}){did_you_mean(name, hooks, 0.6)}")

    # ------------------------------------------------------------------ args
    def _arg_types(self, hook: dict[str, Any], section: str = "") -> dict[int, str]:
        """matchArgs index -> type. On kprobes/lsmhooks matchArgs.index is the function's
        argument index; on tracepoints it is the position in `args` (Tetragon's rule)."""
        args = hook.get("args") or []
        if section == "tracepoints":
            return {k: str(a.get("type", "auto")) for k, a in enumerate(args)}
        return {int(a["index"]): str(a.get("type", "auto")) for a in args}

    def _args(self, section: str, path: Path_, hook: dict[str, Any]) -> None:
        args = hook.get("args") or []
        if len(args) + len(hook.get("data") or []) > S.MAX_ARGS:
            self.r.error((*path, "args", S.MAX_ARGS), f"at most {S.MAX_ARGS} args + data per hook")
        raw_tp = section == "tracepoints" and hook.get("raw")
        from .capture import check_max_data
        from .returns import check_return_copy

        for k, arg in enumerate(args):
            apath = (*path, "args", k)
            self._arg(section, path, apath, arg, bool(raw_tp))
            check_return_copy(self.r, section, hook, apath, arg, path)
            check_max_data(self.r, section, hook, apath, arg, path)
            if section == "tracepoints" and not raw_tp:
                self._syscall_tp_field(hook, apath, arg)

    def _syscall_tp_field(self, hook: dict[str, Any], apath: Path_, arg: dict[str, Any]) -> None:
        """syscalls/raw_syscalls tracepoints have a fixed layout: 4 = nr, then the six
        arguments (sys_enter_*) or ret (sys_exit_*); raw_syscalls' args is an array."""
        sub, event = str(hook.get("subsystem")), str(hook.get("event"))
        idx = int(arg["index"])
        if sub not in ("syscalls", "raw_syscalls") or str(arg.get("type")) == "nop" or idx <= 4:
            return
        exit_ = event.startswith("sys_exit")
        if exit_ and idx == 5:
            return
        if sub == "raw_syscalls" or exit_:
            self.r.unsupported((*apath, "index"), f"field {idx} of {sub}/{event} is the argument "
                               "array, which bpfpolicy does not decode (hook the per-syscall "
                               "tracepoint instead)" if not exit_ else f"{sub}/{event} has fields "
                               "4 (nr) and 5 (ret) only", drop=apath[:-2])
        elif idx > 10:
            self.r.error((*apath, "index"), f"field {idx} is out of range for {sub}/{event} "
                         "(4 = nr, 5..10 = the syscall's arguments)")

    def _arg(self, section: str, hpath: Path_, apath: Path_, arg: dict[str, Any], raw_tp: bool) -> None:
        t = str(arg.get("type", "auto"))
        idx = int(arg["index"])
        if t not in S.ARG_TYPES:
            self.r.error((*apath, "type"), f'unknown argument type "{t}"'
                         f"{did_you_mean(t, S.ARG_TYPES, 0.6)}")
            return
        if section in ("kprobes", "fentries", "lsmhooks", "uprobes") and idx > S.MAX_ARG_INDEX:
            self.r.error((*apath, "index"), f"argument index {idx} is out of range: "
                         f"functions have at most {S.MAX_ARG_INDEX + 1} arguments (0..{S.MAX_ARG_INDEX})")
        if raw_tp and idx > S.MAX_RAW_TP_INDEX:
            self.r.error((*apath, "index"), f"raw tracepoint argument index {idx} is out of "
                         f"range (0..{S.MAX_RAW_TP_INDEX})")
        if section in ("kprobes", "fentries") and t in ("auto", "syscall64"):
            self.r.error((*apath, "type"), f'type "{t}" is only valid for tracepoints '
                         "(Tetragon rejects it on kprobes)")
            return
        if section == "tracepoints" and not raw_tp and t != "nop" and idx < S.TP_FIRST_FIELD:
            self.r.unsupported((*apath, "index"), f"tracepoint field {idx} is a common_* field "
                               f"(common_type, flags, preempt_count, pid); bpfpolicy decodes the "
                               f"event's own fields, from index {S.TP_FIRST_FIELD}", drop=hpath)
            return
        if section == "tracepoints" and not raw_tp and t == "auto":
            return
        # Dropping one arg keeps the others' meaning on functions (matched by index), but
        # on tracepoints matchArgs count positions in `args`: drop the hook there.
        arg_drop = hpath if section == "tracepoints" else apath
        if t not in S.IMPLEMENTED_TYPES:
            self.r.unsupported((*apath, "type"), f'argument type "{t}" is recognised but not '
                               "decoded by bpfpolicy yet (supported: integers, string, char_buf, "
                               "file, path, dentry, linux_binprm, sock, skb, sockaddr, socket, "
                               "net_device, module, cred, user_namespace, nop)", drop=arg_drop)
        if "resolve" in arg and not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", str(arg["resolve"])):
            self.r.error((*apath, "resolve"), f'"{arg["resolve"]}" is not a member path like '
                         "mm.owner.comm")
        if "sizeArgIndex" in arg:
            size_idx = int(arg["sizeArgIndex"])
            if t != "char_buf":
                self.r.error((*apath, "sizeArgIndex"), "sizeArgIndex applies to char_buf arguments")
            elif not 1 <= size_idx <= S.MAX_ARG_INDEX + 1:
                self.r.error((*apath, "sizeArgIndex"), f"sizeArgIndex is 1-based: 1..{S.MAX_ARG_INDEX + 1}"
                             f" (got {size_idx})")
        for key in ("btfType", "source"):
            if key in arg:
                self.r.unsupported((*apath, key), f"{key} is not implemented", drop=hpath)

    # ------------------------------------------------------------------ selectors
    def _selector(self, path: Path_, sel: dict[str, Any], hook: dict[str, Any] | None,
                  section: str, types: dict[int, str], hpath: Path_ | None) -> None:
        drop = hpath or path
        self.section = section
        for name in sel.get("macros") or []:
            if name not in self.macros:
                self.r.error((*path, "macros"), f'unknown selector macro "{name}"'
                             f"{did_you_mean(name, self.macros)} (define it in spec.selectorsMacros)")
        n_args = len(sel.get("matchArgs") or []) + len(sel.get("matchData") or [])
        if n_args > S.MAX_ARG_MATCHERS:
            self.r.error((*path, "matchArgs"), f"at most {S.MAX_ARG_MATCHERS} matchArgs + matchData "
                         f"per selector (has {n_args})")
        for key, why in (
            ("matchData", "matchData is not implemented"),
            ("matchNamespaceChanges", "matchNamespaceChanges (tracking namespace changes per "
                                      "process) is not implemented"),
            ("matchCapabilityChanges", "matchCapabilityChanges (tracking capability changes per "
                                       "process) is not implemented"),
        ):
            if key in sel:
                self.r.unsupported((*path, key), why, drop=drop)
        from .returns import check_returns  # matchReturnArgs / matchReturnActions

        check_returns(self, path, sel, hook, section, drop)
        for k, m in enumerate(sel.get("matchArgs") or []):
            self._match_arg((*path, "matchArgs", k), m, types, hook is not None, drop)
        self._match_pids(path, sel.get("matchPIDs") or [], drop)
        for key in ("matchBinaries", "matchParentBinaries"):
            self._match_binaries(path, key, sel.get(key) or [], drop)
        self._match_namespaces(path, sel.get("matchNamespaces") or [], drop)
        self._match_capabilities(path, sel.get("matchCapabilities") or [], drop)
        actions = sel.get("matchActions") or []
        if len(actions) > S.MAX_ACTIONS:
            self.r.error((*path, "matchActions", S.MAX_ACTIONS), f"at most {S.MAX_ACTIONS} actions "
                         f"per selector (has {len(actions)})")
        for k, act in enumerate(actions):
            self._action((*path, "matchActions", k), act, hook, section, drop)

    def _operator(self, path: Path_, op: str, allowed: Any) -> str | None:
        if op in allowed:
            return op
        fixed = canonical(op, allowed, S.OPERATOR_DOC_SPELLINGS)
        if fixed and fixed in allowed:
            self.r.error(path, f'unknown operator "{op}" (did you mean "{fixed}"?)')
        elif op in S.OPERATORS:
            self.r.error(path, f'operator {op} is not valid here; expected one of: '
                         f"{', '.join(allowed)}")
        else:
            self.r.error(path, f'unknown operator "{op}"{did_you_mean(op, allowed, 0.6)}')
        return None

    def _match_arg(self, path: Path_, m: dict[str, Any], types: dict[int, str], in_hook: bool,
                   drop: Path_) -> None:
        op = self._operator((*path, "operator"), str(m.get("operator")), S.OPERATORS)
        if "args" in m and op != "CelExpr":
            self.r.error((*path, "args"), "args (several argument indexes) is only used by CelExpr")
        if "index" not in m:
            if op != "CelExpr":
                self.r.error(path, 'missing required field "index"')
            return
        idx = int(m["index"])
        if in_hook and idx not in types:
            known = ", ".join(str(i) for i in sorted(types)) or "none"
            what = "positions in args" if self.section == "tracepoints" else "args indexes"
            self.r.error((*path, "index"), f"matchArgs index {idx} is not a captured argument "
                         f"({what}: {known}); add it to the hook's args")
            return
        if op is None:
            return
        values = m.get("values") or []
        if not values and op not in ("SPortPriv", "NotSportPriv", "DPortPriv", "NotDPortPriv"):
            self.r.error((*path, "values"), f"operator {op} needs at least one value")
            return
        t = types.get(idx, "auto")
        if op in S.NETWORK_OPERATORS:
            if not in_hook or t == "auto":
                return
            if t not in S.NET_TYPES:
                self.r.error((*path, "operator"), f"operator {op} works only on sock, skb, sockaddr "
                             f'or socket arguments (argument {idx} is "{t}")')
                return
            from .net import NAMED, named_value, value_error

            for k, v in enumerate(values):
                why = value_error(op, str(v))
                if why:
                    self.r.error((*path, "values", k), why)
                elif op in NAMED:  # compared with a socket field of a fixed width
                    n, hi = named_value(op, str(v)), S.NET_FIELD_MAX[op]
                    if n is not None and not 0 <= n <= hi:
                        self.r.error((*path, "values", k), f"{_clip(v)} is out of range for "
                                     f"{op} (0..{hi}): the comparison could never be true")
            return
        if op in ("InMap", "NotInMap"):
            if in_hook and t not in S.INT_TYPES and t != "auto":
                self.r.error((*path, "operator"), f"{op} works on integer arguments here "
                             f'(argument {idx} is "{t}")')
            for k, v in enumerate(values):
                if str(v).startswith("list:"):
                    lst = self._list_ref((*path, "values", k), str(v), drop=drop)
                    if lst is not None and lst.get("type") == "generated_ftrace":
                        self.r.error((*path, "values", k), f"{_clip(v)} is a generated_ftrace list "
                                     f"(kernel functions): {op} takes syscall lists only (Tetragon: "
                                     "\"is not syscall type\")")
                elif parse_int(v) is None:
                    self.r.error((*path, "values", k), f'"{_clip(v)}" is not an integer or list:NAME')
                elif in_hook and t in S.INT_TYPES and not int_range(t)[0] <= parse_int(v) <= int_range(t)[1]:  # type: ignore[operator]
                    lo, hi = int_range(t)
                    self.r.error((*path, "values", k), f"{parse_int(v)} is out of range for a {t} "
                                 f"argument ({lo}..{hi})")
            return
        if op in ("SubString", "SubStringIgnCase", "CelExpr", "FileType",
                  "NotFileType", "CapabilitiesGained"):
            self.r.unsupported((*path, "operator"), f"operator {op} is not implemented", drop=drop)
            return
        if t == "nop" and in_hook:
            self.r.error((*path, "index"), f"argument {idx} has type nop (not captured), so it "
                         "cannot be matched; give it a type")
            return
        if in_hook and t == "auto":
            if op in S.INT_OPERATORS:
                self._int_values(path, op, values, "auto", strict=False)
            return
        if not in_hook:
            return
        if t not in S.IMPLEMENTED_TYPES:
            self.r.unsupported((*path, "index"), f'argument {idx} has type "{t}", which '
                               "bpfpolicy does not decode, so it cannot be matched", drop=drop)
            return
        if t in S.INT_TYPES:
            self._int_values(path, op, values, t)
        elif t in S.STRING_TYPES or t in S.PATH_TYPES or t in ("net_device", "module"):
            self._string_values(path, op, values, t, drop)
        elif t in S.REPORT_ONLY_TYPES:
            self.r.error((*path, "index"), f'argument {idx} is a "{t}": it is reported in events '
                         "but has no operators (match matchCapabilities/matchNamespaces instead)")
        elif t in S.NET_TYPES:
            self.r.error((*path, "operator"), f'argument {idx} is a "{t}": match it with a network '
                         "operator (SAddr, DAddr, SPort, DPort, Protocol, Family, State, ...)")

    def _int_values(self, path: Path_, op: str, values: list[Any], t: str,
                    strict: bool = True) -> None:
        """Integer operands: parse like Tetragon (base 0), and refuse what compiles to C that
        clang rejects or to a test that can never be true: values outside the argument's
        type, empty or reversed ranges, Mask 0. `strict` is False for `auto` tracepoint
        fields, which may be strings: only values that are integers are checked."""
        if op not in S.IMPLEMENTED_INT_OPERATORS:
            if strict:
                self.r.error((*path, "operator"), f"operator {op} works on strings and paths; this "
                             f"argument is an integer (use one of: {', '.join(sorted(S.IMPLEMENTED_INT_OPERATORS))})")
            return
        if len(values) > S.MAX_INT_VALUES:
            self.r.error((*path, "values", S.MAX_INT_VALUES), f"at most {S.MAX_INT_VALUES} values "
                         f"per integer operator (has {len(values)}); Tetragon uses InMap beyond that")
        lo_t, hi_t = int_range(t)
        tname = "auto (int64)" if t == "auto" else t

        def in_type(k: int, n: int, what: str = "") -> bool:
            if lo_t <= n <= hi_t:
                return True
            self.r.error((*path, "values", k), f"{what}{n} is out of range for a {tname} argument "
                         f"({lo_t}..{hi_t}): the comparison could never be true")
            return False

        for k, v in enumerate(values):
            if op in ("InRange", "NotInRange"):
                lo_s, sep, hi_s = str(v).partition(":")
                lo, hi = parse_int(lo_s), parse_int(hi_s)
                if not sep or lo is None or hi is None:
                    if strict or parse_int(v) is not None or sep:
                        self.r.error((*path, "values", k), f'"{v}" is not a range MIN:MAX')
                    continue
                if not (in_type(k, lo, "range start ") and in_type(k, hi, "range end ")):
                    continue
                if lo > hi:
                    self.r.error((*path, "values", k), f'range "{v}" is empty: MIN must not be '
                                 f"greater than MAX (write {hi}:{lo})")
                continue
            n = parse_int(v)
            if n is None:
                if strict:
                    self.r.error((*path, "values", k), f'"{_clip(v)}" is not an integer (decimal or 0x hex)')
                continue
            if not in_type(k, n):
                continue
            if op == "Mask" and n == 0:
                self.r.error((*path, "values", k), "Mask 0 tests no bits: it can never match "
                             "(the operator is true when arg & mask != 0)")

    def _string_values(self, path: Path_, op: str, values: list[Any], t: str, drop: Path_) -> None:
        if op not in S.IMPLEMENTED_STRING_OPERATORS:
            self.r.error((*path, "operator"), f"operator {op} works on integers; this argument is "
                         f"a {t} (use one of: {', '.join(sorted(S.IMPLEMENTED_STRING_OPERATORS))})")
            return
        if t in S.PATH_TYPES and len(values) > S.MAX_FILE_VALUES:
            self.r.error((*path, "values", S.MAX_FILE_VALUES), f"at most {S.MAX_FILE_VALUES} "
                         f"values for a {t} argument (has {len(values)})")
        limit = {"Prefix": S.MAX_PREFIX, "NotPrefix": S.MAX_PREFIX, "Postfix": S.MAX_POSTFIX,
                 "NotPostfix": S.MAX_POSTFIX}.get(op, S.MAX_STRING_EQUAL)
        ours = S.CAPTURE_STRING - 1
        for k, v in enumerate(values):
            n = len(str(v).rstrip("\0").encode())
            if n > limit:
                self.r.error((*path, "values", k), f"{op} values are limited to {limit} bytes "
                             f"(this one has {n})")
            elif n > ours:
                self.r.unsupported((*path, "values", k), f"bpfpolicy captures {ours} bytes of a "
                                   f"string argument; this {n}-byte value can never match",
                                   drop=drop)

    def _match_pids(self, path: Path_, pids: list[dict[str, Any]], drop: Path_) -> None:
        for k, m in enumerate(pids):
            p = (*path, "matchPIDs", k)
            self._operator((*p, "operator"), str(m.get("operator")), S.PID_OPERATORS)
            values = m.get("values") or []
            if not values:
                self.r.error((*p, "values"), "matchPIDs needs at least one PID (an empty list "
                             "matches nothing with In and everything with NotIn)")
            if len(values) > S.MAX_PID_VALUES:
                self.r.error((*p, "values", S.MAX_PID_VALUES), f"at most {S.MAX_PID_VALUES} "
                             f"matchPIDs values (has {len(values)})")
            for v, value in enumerate(values):
                n = parse_int(value)
                if n is None or isinstance(value, str) and not str(value).strip().isdigit():
                    self.r.error((*p, "values", v), f'"{_clip(value)}" is not a PID (a decimal number)')
                elif not 0 <= n <= S.MAX_PID:
                    self.r.error((*p, "values", v), f"PID {n} is out of range (0..{S.MAX_PID})")


    def _match_binaries(self, path: Path_, key: str, sels: list[dict[str, Any]], drop: Path_) -> None:
        if len(sels) > S.MAX_BINARY_SELECTORS:
            self.r.error((*path, key, S.MAX_BINARY_SELECTORS), f"at most {S.MAX_BINARY_SELECTORS} "
                         f"{key} entry per selector (has {len(sels)}); list the paths in one entry's values")
        for k, m in enumerate(sels):
            p = (*path, key, k)
            op = self._operator((*p, "operator"), str(m.get("operator")), S.BINARY_OPERATORS)
            if m.get("followChildren"):
                if op not in ("In", "NotIn"):
                    self.r.error((*p, "followChildren"), "followChildren works only with In/NotIn")
                elif key != "matchBinaries":
                    self.r.unsupported((*p, "followChildren"), f"followChildren on {key} is not "
                                       "implemented (only on matchBinaries, as in Tetragon)", drop=drop)
            values = m.get("values") or []
            if not values:
                self.r.error((*p, "values"), f"{key} needs at least one path")
            for v, value in enumerate(values):
                if len(value.encode()) > S.CAPTURE_STRING - 1:
                    self.r.error((*p, "values", v), f"paths are limited to {S.CAPTURE_STRING - 1} bytes")

    def _match_namespaces(self, path: Path_, sels: list[dict[str, Any]], drop: Path_) -> None:
        if len(sels) > 10:
            self.r.error((*path, "matchNamespaces", 10), "at most 10 matchNamespaces entries")
        for k, m in enumerate(sels):
            p = (*path, "matchNamespaces", k)
            ns = str(m.get("namespace"))
            if ns not in S.NAMESPACES:
                fixed = canonical(ns, S.NAMESPACES)
                hint = f' (did you mean "{fixed}"?)' if fixed else did_you_mean(ns, S.NAMESPACES, 0.6)
                self.r.error((*p, "namespace"), f'unknown namespace "{ns}"{hint}')
                continue
            self._operator((*p, "operator"), str(m.get("operator")), S.NAMESPACE_OPERATORS)
            values = m.get("values") or []
            if not values:
                self.r.error((*p, "values"), "matchNamespaces needs at least one value (an inode "
                             "number or host_ns)")
            if len(values) > S.MAX_NS_VALUES:
                self.r.error((*p, "values", S.MAX_NS_VALUES), f"at most {S.MAX_NS_VALUES} values "
                             f"per matchNamespaces entry (has {len(values)})")
            for v, value in enumerate(values):
                if str(value) == "host_ns":
                    if ns not in S.HOST_NS_INUM:
                        self.r.unsupported((*p, "values", v), f"host_ns for the {ns} namespace has "
                                           "no fixed inode number; give the inode (ls -Li "
                                           f"/proc/1/ns/{ns.lower()})", drop=drop)
                elif parse_int(value) is None:
                    self.r.error((*p, "values", v), f'"{_clip(value)}" is not a namespace inode number or host_ns')
                elif not 0 <= parse_int(value) <= 0xFFFFFFFF:  # type: ignore[operator]
                    self.r.error((*p, "values", v), f"{parse_int(value)} is out of range for a namespace "
                                 "inode number (0..4294967295)")

    def _match_capabilities(self, path: Path_, sels: list[dict[str, Any]], drop: Path_) -> None:
        for k, m in enumerate(sels):
            p = (*path, "matchCapabilities", k)
            ctype = str(m.get("type", "Effective"))
            if ctype not in S.CAPABILITY_TYPES:
                self.r.error((*p, "type"), f'unknown capability set "{ctype}"'
                             f"{did_you_mean(ctype, S.CAPABILITY_TYPES, 0.6)}")
            self._operator((*p, "operator"), str(m.get("operator")), ("In", "NotIn"))
            for v, value in enumerate(m.get("values") or []):
                if str(value).upper() not in CAPABILITIES:
                    self.r.error((*p, "values", v), f'unknown capability "{value}"'
                                 f"{did_you_mean(str(value).upper(), CAPABILITIES, 0.6)}")

    # ------------------------------------------------------------------ actions
    def _action(self, path: Path_, act: dict[str, Any], hook: dict[str, Any] | None,
                section: str, drop: Path_) -> None:
        name = str(act.get("action"))
        if name in S.REMOVED_ACTIONS:
            # Accepted with one meaning (docs/tracing.md "fd arguments"): no kernel-side fd map.
            self.r.warning((*path, "action"), f"{name} runs nothing in the kernel: `fd` arguments are "
                           "resolved to their path when the event is decoded (/proc/<pid>/fd/<n> "
                           "while the process lives; the argument says resolved_at: decode)")
            return
        if name not in S.ACTIONS:
            fixed = canonical(name, S.ACTIONS)
            hint = f' (did you mean "{fixed}"?)' if fixed else did_you_mean(name, S.ACTIONS, 0.6)
            self.r.error((*path, "action"), f'unknown action "{name}"{hint}')
            return
        if section == "lsmhooks" and name not in S.LSM_ACTIONS:
            self.r.error((*path, "action"), f"action {name} is not available on lsmhooks "
                         f"(allowed: {', '.join(sorted(S.LSM_ACTIONS))})")
            return
        if name == "Override":
            self._override(path, act, hook, section)
        if name == "Signal" and "argSig" not in act:
            self.r.error(path, "Signal needs argSig (the signal number)")
        if name in ("Signal",) and not 1 <= int(act.get("argSig", 9)) <= 64:
            self.r.error((*path, "argSig"), "argSig must be a signal number 1..64")
        if name in S.UNSUPPORTED_ACTIONS:
            # GetUrl/DnsLookup only add a side effect: dropping the action keeps the rest.
            only_action = name in ("GetUrl", "DnsLookup")
            self.r.unsupported((*path, "action"), S.UNSUPPORTED_ACTIONS[name],
                               drop=path if only_action else drop)
        if "rateLimit" in act and parse_rate_limit(act["rateLimit"]) is None:
            self.r.error((*path, "rateLimit"), f'"{_clip(act["rateLimit"])}" is not a rate limit '
                         '(N seconds, or Ns, Nm, Nh)')
        elif "rateLimit" in act and parse_rate_limit(act["rateLimit"]) > S.MAX_RATE_LIMIT_S:  # type: ignore[operator]
            self.r.error((*path, "rateLimit"), f"rateLimit {_clip(act['rateLimit'])} is longer than "
                         f"{S.MAX_RATE_LIMIT_S} s: the window is kept in 64-bit nanoseconds")
        scope = act.get("rateLimitScope")
        if scope is not None and scope not in ("thread", "process", "global"):
            self.r.error((*path, "rateLimitScope"), f'"{scope}" is not one of: thread, process, '
                         f"global{did_you_mean(str(scope), ('thread', 'process', 'global'), 0.6)}")
        if act.get("imaHash"):
            self.r.unsupported((*path, "imaHash"), "imaHash is not implemented (events carry no "
                               "file hashes)", drop=(*path, "imaHash"))
        for key in ("kernelStackTrace", "userStackTrace"):
            if act.get(key) and name != "Post":
                self.r.error((*path, key), f"{key} applies to the Post action")

    def _override(self, path: Path_, act: dict[str, Any], hook: dict[str, Any] | None,
                  section: str) -> None:
        if hook is None:
            return
        if section == "tracepoints":
            self.r.error((*path, "action"), "Override is not available on tracepoints (they "
                         "cannot change a return value); use Sigkill, or hook the syscall")
            return
        if section in ("uprobes", "usdts"):
            self.r.error((*path, "action"), "Override is not available on uprobes (a user "
                         "function's return value cannot be changed); use Sigkill or Signal")
            return
        if section == "fentries":
            self.r.error((*path, "action"), "enforcement is not supported for fentry yet "
                         "(Tetragon's rule): Override needs kprobes or lsmhooks")
            return
        if section == "kprobes":
            call = str(hook.get("call", ""))
            if not (is_syscall_hook(section, hook) or call.startswith("security_")):
                self.r.error((*path, "action"), "override action can be used only with syscalls "
                             f'and security_ hooks ("{call}" is neither)')
                return
        err = act.get("argError", 0)
        if section == "lsmhooks" and not -4095 <= int(err) <= 0:
            self.r.error((*path, "argError"), f"an LSM hook returns 0 or -errno: argError must be "
                         f"in -4095..0 (got {err})")
