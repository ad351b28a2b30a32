"""Selectors as IR: each matcher a typed node (ints, strings, network, PID trees,
capabilities), each selector's actions one ir.Actions. The templates in
`codegen/templates/tracing/` own every character of the C they become."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from . import net
from . import spec as S
from .backends import Backend, HookError, PathT
from .capture import Positions
from .check import CAPABILITIES, parse_int, parse_rate_limit
from .ir import (
    Actions,
    CapsMatch,
    Effect,
    IntMatch,
    IntValue,
    Literal,
    Matcher,
    NetMatch,
    NetTerm,
    PidTreeMatch,
    Post,
    Selector,
    Site,
    StringMatch,
    Tunable,
    Uses,
)

ENFORCE = ("Sigkill", "Signal", "Override")
STRING_BASE = {"NotEqual": "Equal", "NotIn": "Equal", "In": "Equal", "NotPrefix": "Prefix",
               "NotPostfix": "Postfix"}
CAP_SETS = {"Effective": "cap_effective", "Inheritable": "cap_inheritable", "Permitted": "cap_permitted"}
INT_OPS = {"In": "Equal", "NotIn": "NotEqual"}


class SelectorBuilder:
    """Turns the selectors of one program into ir.Selector nodes. Literal helpers and
    tunables are shared across the whole policy (`literals`, `tunables`)."""

    def __init__(self, site: Callable[[PathT], Site], uses: Uses, monitor: bool,
                 literals: dict[tuple[str, bytes], Literal], tunables: list[Tunable],
                 map_values: Callable[[list[str], PathT], list[str]]) -> None:
        self.site = site
        self.uses = uses
        self.monitor = monitor
        self.literals = literals
        self.tunables = tunables
        self.map_values = map_values

    def selector(self, prog: str, b: Backend, sel: dict[str, Any], spath: PathT, j: int,
                 positions: Positions, only: tuple[str, ...] | None) -> Selector:
        matchers: list[Matcher] = []
        for key, items in sel.items():
            build = self._BUILDERS.get(key)
            for k, m in enumerate(items if isinstance(items, list) and build else []):
                matchers.append(build(self, m, (*spath, key, k), positions))
        return Selector(self.site(spath), j, matchers, self._actions(prog, b, sel, spath, j, only))

    # ------------------------------------------------------------------ matchers
    def _match_arg(self, m: dict[str, Any], path: PathT, positions: Positions) -> Matcher:
        idx = int(m["index"])
        if idx not in positions:
            raise HookError((*path, "index"), f"matchArgs index {idx} is not a captured argument")
        slot, t = positions[idx]
        op, values = str(m["operator"]), [str(v) for v in m.get("values") or []]
        text = f"arg {idx} {op} {', '.join(values)}"
        if t in S.INT_TYPES or t == "int64":
            unsigned = not S.INT_TYPES.get(t, (8, True))[1]
            if op in ("InMap", "NotInMap"):
                op, values = ("In" if op == "InMap" else "NotIn"), self.map_values(values, path)
            return self._int(path, text, IntValue("arg", slot, unsigned), op, values)
        if t in S.NET_TYPES and op in S.NETWORK_OPERATORS:
            return self._net(path, text, slot, op, values)
        if t in S.STRING_TYPES or t in S.PATH_TYPES or t == "net_device":
            return self._strings(path, text, "arg", slot, op, values)
        raise HookError(path, f"argument {idx} of type {t} cannot be matched")

    def _match_binaries(self, m: dict[str, Any], path: PathT, positions: Positions) -> Matcher:
        # In/NotIn compare whole paths, so a path's last component must equal the executable's
        # file name (d_name, what tp_path_walk ends with): the name is read first (one read)
        # and the path walked only when it is a listed one's (match.j2). Empty names (a value
        # ending in "/") and Prefix/Postfix operators walk every time.
        bases = sorted({str(v).rstrip("\0").rsplit("/", 1)[-1] for v in m.get("values") or []})
        names = tuple(self._literal("Equal", b) for b in bases) \
            if bases and all(bases) and str(m["operator"]) in ("In", "NotIn") else ()
        if m.get("followChildren"):  # In/NotIn only (check.py)
            # Tetragon: also the children of a matching binary. Compared in the kernel: the
            # process's executable, else an ancestor's (spec.FOLLOW_CHILDREN_DEPTH tasks up
            # real_parent), into per-CPU scratch like matchParentBinaries.
            self.uses.parent_binary = True
            match = self._binary(m, path, "parent")
            return replace(match, text=match.text + " or an ancestor's (followChildren)",
                           follow=S.FOLLOW_CHILDREN_DEPTH, follow_names=names)
        return replace(self._binary(m, path, "binary"), follow_names=names)

    def _match_parent_binaries(self, m: dict[str, Any], path: PathT, positions: Positions) -> Matcher:
        self.uses.parent_binary = True
        return self._binary(m, path, "parent")

    def _binary(self, m: dict[str, Any], path: PathT, buffer: str) -> Matcher:
        values = [str(v) for v in m.get("values") or []]
        op = {"In": "Equal", "NotIn": "NotEqual"}.get(str(m["operator"]), str(m["operator"]))
        return self._strings(path, f"binary {m['operator']} {', '.join(values)}", buffer, 0, op, values)

    def _match_pids(self, m: dict[str, Any], path: PathT, positions: Positions) -> Matcher:
        isns = bool(m.get("isNamespacePID"))
        values = [int(v) for v in m["values"]]
        text = f"pid {m['operator']} {values}" + (" (namespace pid)" if isns else "")
        if m.get("followForks"):
            self.uses.pid_tree = True
            four = tuple((values + values * 4)[:4])
            return PidTreeMatch(self.site(path), text + " or an ancestor's (followForks)",
                                four, isns, m["operator"] != "In")  # type: ignore[arg-type]
        value = IntValue("ns_tgid" if isns else "pid")
        return self._int(path, text, value, "In" if m["operator"] == "In" else "NotIn",
                         [str(v) for v in values])

    def _match_namespaces(self, m: dict[str, Any], path: PathT, positions: Positions) -> Matcher:
        ns = str(m["namespace"])
        values = [str(S.HOST_NS_INUM[ns]) if str(v) == "host_ns" else str(parse_int(v)) for v in m["values"]]
        return self._int(path, f"{ns} namespace {m['operator']} {m['values']}",
                         IntValue("ns_inum", namespace=ns.upper()), str(m["operator"]), values)

    def _match_capabilities(self, m: dict[str, Any], path: PathT, positions: Positions) -> Matcher:
        mask = 0
        for v in m["values"]:
            mask |= 1 << CAPABILITIES.index(str(v).upper())
        kind = str(m.get("type", "Effective"))
        host_user = S.HOST_NS_INUM["User"] if m.get("isNamespaceCapability") else None
        return CapsMatch(self.site(path), f"{kind} caps {m['operator']} {m['values']}", CAP_SETS[kind],
                         mask, m["operator"] == "NotIn", host_user)

    _BUILDERS: dict[str, Callable[..., Matcher]] = {
        "matchArgs": _match_arg, "matchPIDs": _match_pids, "matchBinaries": _match_binaries,
        "matchParentBinaries": _match_parent_binaries, "matchNamespaces": _match_namespaces,
        "matchCapabilities": _match_capabilities,
    }

    # ------------------------------------------------------------------ node helpers
    def _int(self, path: PathT, text: str, value: IntValue, op: str, values: list[str]) -> IntMatch:
        op = INT_OPS.get(op, op)
        mask = 0xFFFFFFFFFFFFFFFF if value.unsigned else -1
        if op in ("InRange", "NotInRange"):
            ranges = tuple((_int(lo) & mask, _int(hi) & mask) for lo, _, hi in (x.partition(":") for x in values))
            return IntMatch(self.site(path), text, value, op, ranges=ranges)
        if op not in ("Equal", "NotEqual", "GT", "LT", "Mask"):
            raise ValueError(op)
        return IntMatch(self.site(path), text, value, op, tuple(_int(x) & mask for x in values))

    def _strings(self, path: PathT, text: str, buffer: str, slot: int, op: str,
                 values: list[str]) -> StringMatch:
        base = STRING_BASE.get(op, op)
        names = tuple(self._literal(base, v) for v in values)
        return StringMatch(self.site(path), text, buffer, slot, op.startswith("Not"), names)

    def _literal(self, op: str, value: str) -> str:
        from ...codegen.render import c_ident

        data = value.rstrip("\0").encode()
        key = (op, data)
        if key not in self.literals:
            text = data.decode(errors="replace")
            self.literals[key] = Literal(c_ident(text, prefix=f"tp_{op.lower()}"), op, text, data)
        return self.literals[key].name

    def _net(self, path: PathT, text: str, slot: int, op: str, values: list[str]) -> NetMatch:
        terms, negate = net.terms(op, values)
        return NetMatch(self.site(path), text, slot, negate, tuple(NetTerm(**t) for t in terms))

    # ------------------------------------------------------------------ actions
    def _actions(self, prog: str, b: Backend, sel: dict[str, Any], spath: PathT, j: int,
                 only: tuple[str, ...] | None) -> Actions:
        bits, effects, post, verdict, error = 0, [], None, "pass", 0
        given = sel.get("matchActions") or [{"action": "Post"}]
        # Tetragon's do_actions() (docs/upstream.md §2.3): every matching selector posts
        # unless NoPost; its event names the last action run. The action bits are the
        # selector's (a sibling program may run the enforcing ones: `only`), so the posted
        # event says Sigkill/Override ran wherever it ran.
        run = [str(a["action"]) for a in given if str(a["action"]) not in S.REMOVED_ACTIONS]
        for name in run:
            bits |= 1 << S.ACTIONS[name]
        if run:
            bits |= (S.ACTIONS[run[-1]] + 1) << S.LAST_ACTION_SHIFT
        for k, a in enumerate(given):
            name = str(a["action"])
            if (only is not None and name not in only) or name in S.REMOVED_ACTIONS:
                continue  # FollowFD/CopyFD/UnfollowFD: decode-time fd resolution (check.py)
            site = self.site((*spath, "matchActions", k))
            if name in ENFORCE and self.monitor:
                continue
            if name == "Post":
                post = a
            elif name in ("Sigkill", "Signal"):  # NoPost is no effect (it only clears post)
                effects.append(Effect(site, name, 9 if name == "Sigkill" else int(a.get("argSig", 0))))
            elif name != "Override":
                continue
            elif b.kind == "kprobe":
                effects.append(Effect(site, "Override", int(a.get("argError", 0))))
            elif b.kind in ("lsm", "fmod_ret"):
                verdict, error = f"{b.kind}_error", int(a.get("argError", 0))
        if "NoPost" in run:
            post = None  # NoPost wins over Post in either order (it clears `post`)
        elif post is None and (only is None or "Post" in only):
            post = {}  # the default: post with Post's defaults (no rateLimit, no stacks)
        if self.monitor:
            bits |= 1 << 31
        names = tuple([n for n, bit in S.ACTIONS.items() if bits & (1 << bit)] + (["monitor"] if self.monitor else []))
        if verdict == "lsm_error":
            error = max(-4095, min(0, error))
        return Actions(bits, names, self._post(prog, post, j), tuple(effects), verdict, error)

    def _post(self, prog: str, post: dict[str, Any] | None, j: int) -> Post | None:
        if post is None:
            return None
        kernel, user = bool(post.get("kernelStackTrace")), bool(post.get("userStackTrace"))
        self.uses.stacks = self.uses.stacks or kernel or user
        limit = parse_rate_limit(post["rateLimit"]) if "rateLimit" in post else None
        if not limit:
            return Post(kernel, user)
        self.uses.rate_limit = True
        tunable = f"{prog}_s{j}_rate_ns"
        self.tunables.append(Tunable(tunable, "__u64", limit * 1_000_000_000, f"rateLimit {limit}s"))
        return Post(kernel, user, limit, str(post.get("rateLimitScope", "thread")), tunable)


def _int(text: str) -> int:
    n = parse_int(text)
    if n is None:
        raise ValueError(text)
    return n
