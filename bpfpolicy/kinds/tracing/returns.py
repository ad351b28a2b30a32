"""`return: true` (Tetragon's generic_retkprobe): which programs a hook with a return
value becomes, and its matchReturnArgs / matchReturnActions / returnCopy as IR.

Tetragon semantics: the entry selectors (matchArgs, matchPIDs, ...) decide at the call,
their matchActions run there (Sigkill, Signal, Override); the event is posted once, when
the function returns, with the arguments captured at entry and the return value, and
only if matchReturnArgs match; matchReturnActions (default: the selector's Post) run then.

Three shapes, by what the target kernel offers (docs/tracing.md "Return values"):

* **kprobes** → `kprobe/F` keeps the filled event per task in `tp_ret_map` (key:
  pid_tgid), `kretprobe/F` reads `PT_REGS_RC`, matches, posts and drops the entry.
* **no kprobes, syscall tracepoints** (a `sys_*` call) → the same pair on
  `tp/syscalls/sys_enter_X` and `tp/syscalls/sys_exit_X` (`ctx->ret`).
* **fentries, or no kprobes but BPF trampolines** → one `fexit/F` program: the
  arguments are still in `ctx`, the return value after them; matchReturnArgs are ANDed
  with the entry matchers there. Enforcement stays in an entry program.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import spec as S
from .backends import Backend, HookError, PathT, kprobe, tracepoint
from .ir import Actions, ArgRead, Capture, IntMatch, IntValue, Post, Program

if TYPE_CHECKING:
    from .lower import Lowering

# Entries of tp_ret_map: calls in flight at once (a thread is inside the function between
# its entry and its return). 8192 x sizeof(struct tp_event) (1688 B) = 13.2 MiB of kernel
# memory at most; an LRU map, so a thread that never returns (killed inside a function
# the kretprobe then misses) only ages out. Tetragon's retprobe map is sized alike.
RET_MAP_ENTRIES = 8192
RET_ONLY_ACTIONS = ("Post", "NoPost", "Sigkill", "Signal")  # what can run after the return

__all__ = ["RET_MAP_ENTRIES", "RET_ONLY_ACTIONS", "return_programs"]


def return_programs(low: Lowering, rule: str, backend: Backend, hook: dict[str, Any],
                    selectors: list[dict[str, Any]], path: PathT, hook_id: int, section: str,
                    enforce: bool) -> list[Program]:
    """The programs of one `return: true` hook (see the module docstring)."""
    from .selectors import ENFORCE

    feats = low.features
    if backend.remap is not None:
        raise HookError((*path, "return"), f"return: true with Override on {hook.get('call')}: this kernel "
                        f"enforces it at {backend.sec} (remapped), whose arguments are not the "
                        "syscall's; hook the syscall without Override, or security_file_open, to "
                        "see the return value")
    syscall = backend.syscall and section == "kprobes"
    pair: tuple[Backend, Backend] | None = None
    if section == "kprobes" and feats.get("kprobes"):
        func = backend.func if backend.kind in ("kprobe", "fentry", "fmod_ret") or not syscall \
            else low.chooser._syscall_func(str(hook["call"]))
        if backend.kind == "lsm":  # security_* enforced at lsm/X: keep the value at the function
            func = str(hook["call"])
        entry = backend if backend.kind == "kprobe" else kprobe.backend(
            func, "entry half of return: true (keeps the arguments for the kretprobe)", syscall=syscall)
        pair = (entry, kprobe.ret_backend(func, "return: true via kretprobe (Tetragon's retprobe)",
                                          syscall=syscall))
    elif section == "kprobes" and not feats.get("trampoline") and backend.kind == "tracepoint" \
            and backend.syscall and backend.sec.startswith("tp/syscalls/sys_enter_"):
        name = backend.sec.removeprefix("tp/syscalls/sys_enter_")
        pair = (backend, tracepoint.backend("syscalls", f"sys_exit_{name}",
                                            "return: true via the syscall's sys_exit tracepoint "
                                            f"(no kprobes: {(feats.get('reasons') or {}).get('kprobes', 'unavailable')})"))
    programs: list[Program] = []
    if pair is None:  # fexit: one program at the return, arguments still in ctx
        fexit = low.chooser.fexit(section, hook, path)
        if enforce:
            programs.append(low._program(rule, "_enter", backend, hook, selectors, path, hook_id,
                                         section, only=ENFORCE))
        p = low._program(rule, "_exit", fexit, hook, selectors, path, hook_id, section,
                         only=("Post", "NoPost"))
        _fexit_returns(low, p, hook, selectors, path)
        programs.append(p)
        return programs
    entry, exit_ = pair
    low.uses.ret_store = True
    if entry is not backend and enforce:  # lsm/X enforces; the kprobe only keeps the event
        programs.append(low._program(rule, "_enter", backend, hook, selectors, path, hook_id,
                                     section, only=ENFORCE))
        keep_only: tuple[str, ...] = ("Post",)
    else:
        keep_only = (*ENFORCE, "Post")
    store = low._program(rule, "_entry", entry, hook, selectors, path, hook_id, section, only=keep_only)
    ret = low._program(rule, "_exit", exit_, hook, selectors, path, hook_id, section,
                       only=("Post", "NoPost"))
    _split_returns(low, store, ret, hook, selectors, path, exit_)
    return [*programs, store, ret]


# ------------------------------------------------------------------ IR rewriting


def _ret_matchers(low: Lowering, hook: dict[str, Any], sel: dict[str, Any], spath: PathT) -> list[IntMatch]:
    """matchReturnArgs: integer matchers on the return value, truncated to returnArg's type."""
    rtype = str((hook.get("returnArg") or {}).get("type", "int"))
    size, signed = S.INT_TYPES.get(rtype, (8, True))
    from .capture import INT_CTYPES

    ctype = ("signed " if signed and size == 1 else "" if signed else "unsigned ") + INT_CTYPES[size]
    out = []
    for k, m in enumerate(sel.get("matchReturnArgs") or []):
        mpath = (*spath, "matchReturnArgs", k)
        op, values = str(m["operator"]), [str(v) for v in m.get("values") or []]
        if op not in ("Equal", "NotEqual", "GT", "LT", "Mask", "InRange", "NotInRange", "In", "NotIn"):
            raise HookError((*mpath, "operator"), f"matchReturnArgs operator {op} does not apply to "
                            f"an integer return value ({rtype})")
        direct = Capture(site=low._site(mpath), slot=-1, label="return", type=rtype, how="int",
                         read=ArgRead("retval"), ctype=ctype, signed=signed)
        value = IntValue("arg", -1, not signed, direct=direct)
        out.append(low.selectors._int(mpath, f"return {op} {', '.join(values)}", value, op, values))
    return out


def _ret_actions(low: Lowering, prog: str, b: Backend, sel: dict[str, Any], spath: PathT,
                 j: int) -> Actions:
    """matchReturnActions when given, else the selector's own Post/NoPost."""
    given = sel.get("matchReturnActions")
    if not given:
        return low.selectors._actions(prog, b, sel, spath, j, ("Post", "NoPost"))
    acts = low.selectors._actions(f"{prog}_r", b, {"matchActions": given}, spath, j, RET_ONLY_ACTIONS)
    # _actions names its sites matchActions[k]: point them at matchReturnActions[k]
    ks = [k for k, a in enumerate(given) if str(a.get("action")) in ("Sigkill", "Signal")]
    effects = tuple(replace(x, site=low._site((*spath, "matchReturnActions", k)))
                    for x, k in zip(acts.effects, ks, strict=False))
    return replace(acts, effects=effects)


def _mark_copies(p: Program, hook: dict[str, Any], path: PathT, how: str) -> None:
    """returnCopy arguments: where this program reads them (ir.Capture.ret_copy)."""
    from .backends.base import fmt

    wanted = {fmt((*path, "args", k)) for k, a in enumerate(hook.get("args") or []) if a.get("returnCopy")}

    def fix(c: Capture) -> Capture:
        return replace(c, ret_copy=how) if c.how == "bytes" and c.site.path in wanted else c

    p.captures = [fix(c) for c in p.captures]
    p.early = [fix(c) for c in p.early]
    p.late = [fix(c) for c in p.late]


def _fexit_returns(low: Lowering, p: Program, hook: dict[str, Any], selectors: list[dict[str, Any]],
                   path: PathT) -> None:
    b = Backend("fexit", p.sec, p.why)
    for j, (s, sel) in enumerate(zip(p.selectors, selectors, strict=True)):
        spath = (*path, "selectors", j)
        s.matchers = [*s.matchers, *_ret_matchers(low, hook, sel, spath)]
        if sel.get("matchReturnActions"):
            s.actions = _ret_actions(low, p.name, b, sel, spath, j)
    _mark_copies(p, hook, path, "at_exit")


def _split_returns(low: Lowering, store: Program, ret: Program, hook: dict[str, Any],
                   selectors: list[dict[str, Any]], path: PathT, exit_: Backend) -> None:
    store.ret_mode = "store"
    ret.ret_mode = "stored"
    ret.ret_read = "regs_rc" if exit_.kind == "kretprobe" else "tp_ret"
    for j, (s_in, s_out, sel) in enumerate(zip(store.selectors, ret.selectors, selectors, strict=True)):
        spath = (*path, "selectors", j)
        s_out.ret_matchers = _ret_matchers(low, hook, sel, spath)
        if sel.get("matchReturnActions"):
            s_out.ret_actions = _ret_actions(low, ret.name, exit_, sel, spath, j)
        else:  # the selector's own Post; its rateLimit already applied at the entry
            post = s_out.actions.post
            s_out.ret_actions = replace(s_out.actions, post=post and replace(post, rate_limit_s=None))
        needs = s_out.ret_actions.post is not None or bool(s_out.ret_actions.effects)
        s_in.actions = _keep(s_in.actions, needs)
    _mark_copies(store, hook, path, "pointer")
    _mark_copies(ret, hook, path, "stored")


def _keep(a: Actions, needs: bool) -> Actions:
    """The entry half posts nothing: a selector whose return half acts keeps its event
    (Post's stacks and rateLimit apply at the entry, where the call is seen)."""
    if not needs:
        return replace(a, post=None)
    return replace(a, post=replace(a.post or Post(), store=True))


# ------------------------------------------------------------------ validation (check.py calls these)
RET_INT_OPERATORS = ("Equal", "NotEqual", "GT", "LT", "Mask", "InRange", "NotInRange", "In", "NotIn")


def check_returns(checker: Any, path: PathT, sel: dict[str, Any], hook: dict[str, Any] | None,
                  section: str, drop: PathT) -> None:
    """matchReturnArgs / matchReturnActions of one selector (Tetragon semantics, above).
    `checker` is check.py's TracingChecker (its reporter `r` and `_match_arg`)."""
    r = checker.r
    for key in ("matchReturnArgs", "matchReturnActions"):
        if key not in sel:
            continue
        if section == "lsmhooks":
            r.error((*path, key), f"{key} is not available on lsmhooks (an LSM hook's return value "
                    "is its verdict: use matchActions Override)")
        elif section == "tracepoints":
            r.unsupported((*path, key), f"{key}: a tracepoint has no return value; hook "
                          "syscalls/sys_exit_* and use matchArgs on field 5 (ret), or a kprobe with "
                          "return: true", drop=drop)
        elif section in ("uprobes", "usdts"):
            r.unsupported((*path, key), f"{key} needs a uretprobe, which is not implemented", drop=drop)
        elif hook is not None and not hook.get("return"):
            r.error((*path, key), f"{key} needs return: true (and returnArg) on the hook: the return "
                    "value exists only when the function returns")
    if section not in ("kprobes", "fentries") or hook is None or not hook.get("return"):
        return
    rarg = hook.get("returnArg") or {}
    ridx, rtype = int(rarg.get("index", 0)), str(rarg.get("type", "int"))
    for k, m in enumerate(sel.get("matchReturnArgs") or []):
        mpath = (*path, "matchReturnArgs", k)
        if "index" in m and int(m["index"]) != ridx:
            r.error((*mpath, "index"), f"matchReturnArgs index {m['index']} is not the return value "
                    f"(returnArg index {ridx})")
            continue
        op = str(m.get("operator"))
        if op in S.OPERATORS and op not in RET_INT_OPERATORS:
            r.error((*mpath, "operator"), f"matchReturnArgs operator {op} does not apply to the "
                    f"integer return value (use one of {', '.join(RET_INT_OPERATORS)})")
            continue
        checker._match_arg(mpath, {**m, "index": ridx}, {ridx: rtype}, True, drop)
    for k, a in enumerate(sel.get("matchReturnActions") or []):
        name = str(a.get("action"))
        apath = (*path, "matchReturnActions", k, "action")
        if name == "Override":
            r.unsupported(apath, "Override cannot run at the return: the function has already "
                          "returned (put Override in matchActions, which runs at the call)", drop=drop)
        elif name in S.ACTIONS and name not in RET_ONLY_ACTIONS:
            r.unsupported(apath, f"{name} in matchReturnActions is not implemented (on return: "
                          f"{', '.join(RET_ONLY_ACTIONS)})", drop=drop)


def check_return_copy(r: Any, section: str, hook: dict[str, Any], apath: PathT, arg: dict[str, Any],
                      drop: PathT) -> None:
    """returnCopy: a char_buf read when the function returns, its size the return value."""
    if not arg.get("returnCopy"):
        return
    if section not in ("kprobes", "fentries"):
        r.unsupported((*apath, "returnCopy"), "returnCopy needs a kernel function with return: true "
                      f"(not {section})", drop=drop)
    elif not hook.get("return"):
        r.error((*apath, "returnCopy"), "returnCopy needs return: true on the hook (the buffer is "
                "read when the function returns)")
    elif str(arg.get("type", "auto")) != "char_buf":
        r.error((*apath, "returnCopy"), "returnCopy applies to char_buf arguments (the return value "
                "is the number of bytes copied)")
    elif "sizeArgIndex" in arg:
        r.error((*apath, "sizeArgIndex"), "sizeArgIndex and returnCopy conflict: with returnCopy the "
                "return value is the size")
