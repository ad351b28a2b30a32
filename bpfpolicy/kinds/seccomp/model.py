"""The compiler's input: a resolved OCI profile turned into per-ABI syscall rules.

Semantics (documented in docs/seccomp.md):

* Within one profile the rules for a syscall are a **union**: the conditions of one
  rule are ANDed, rules are ORed. Precedence, libseccomp-compatible where libseccomp
  is deterministic: an **argument-free rule decides its syscall** -- the first such
  rule in profile order wins, later argument-free rules and all argument rules for
  that syscall are ignored (libseccomp 2.5.4 behaves exactly so). Among argument rules
  the **most restrictive matching action wins**, using the kernel's order for stacked
  filters (KILL_PROCESS < KILL_THREAD < TRAP < ERRNO < NOTIFY < TRACE < LOG < ALLOW;
  for two ERRNO/TRACE actions the lower data value); libseccomp's answer there depends
  on its internal tree layout, and it refuses identical comparisons with -EEXIST.
* A rule whose action equals the default is dropped (libseccomp fails such a profile
  with -EACCES; validation warns).
* Argument values are 64-bit unsigned. For arguments the kernel declares narrower
  (`int`, `unsigned int`, `pid_t`, `uid_t`: 32 bits; `umode_t`: 16 bits; generated
  from the kernel's prototypes per ABI, see `arg_bits`) -- and for every argument of
  the 32-bit i386 ABI -- only the low bits the kernel uses are compared, which is what the
  kernel itself uses: `value: 4294967295` and `value: -1` then mean the same thing and
  match whether the caller sign-extended or not (libseccomp#69/#383).  Everywhere
  else the full 64-bit value is compared and a negative value is its two's complement
  (`-1` = 0xffffffffffffffff, distinct from 4294967295).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import bpf
from .arch import ACTIONS, EPERM, X32_SYSCALL_BIT, Abi, abi
from .argtypes import ARGS

U64 = (1 << 64) - 1
U32 = 0xFFFFFFFF



def arg_bits(abi_name: str, syscall: str, index: int) -> int:
    """How many low bits of args[index] the kernel uses for `syscall` on `abi_name`:
    the width of the C type its handler declares (generated from the kernel's
    SYSCALL_DEFINE prototypes, `argtypes.ARGS`). i386 registers are 32 bits wide;
    an argument the handler does not declare (or a syscall without a prototype)
    is compared in full."""
    args = ARGS.get(abi_name, {}).get(syscall)
    full = 32 if abi_name == "i386" else 64
    if args is None or index >= len(args):
        return full
    return min(args[index][1], full)


def narrow_args(abi_name: str) -> dict[str, frozenset[int]]:
    """syscall -> indices of the arguments the kernel truncates below 64 bits."""
    return {name: frozenset(i for i, (_t, b) in enumerate(args) if b < 64)
            for name, args in ARGS.get(abi_name, {}).items()}


# Arguments the kernel declares narrower than 64 bits on x86_64 (kept for callers that
# ask "is this argument 32-bit" without an ABI; the compiler uses `arg_bits`).
ARG32: dict[str, frozenset[int]] = narrow_args("x86_64")


@dataclass(frozen=True)
class Cond:
    """One argument comparison. `value`/`datum` are already reduced to the compared width."""

    index: int
    op: str  # SCMP_CMP_*
    value: int  # for MASKED_EQ: the mask
    datum: int = 0  # MASKED_EQ only: the value compared after masking
    bits: int = 64  # the kernel uses only the low `bits` bits: 64, 32, 16 or 8

    @property
    def wide(self) -> bool:
        return self.bits == 64


@dataclass(frozen=True)
class Rule:
    action: int  # 32-bit seccomp return value
    conds: tuple[Cond, ...]


@dataclass(frozen=True)
class SyscallRules:
    """Everything the filter must decide for one syscall number (hashable: it is the
    dispatch leaf's identity, so equal neighbours merge into one range)."""

    rules: tuple[Rule, ...]  # conditional rules, most restrictive first
    fallback: int  # unconditional rule's action, or the default

    @property
    def arg_free(self) -> bool:
        return not self.rules


@dataclass
class Block:
    """All ABIs selected by one AUDIT_ARCH value (x86_64 and x32 share one)."""

    audit_arch: int
    label: str  # e.g. "x86_64+x32"
    syscalls: dict[int, SyscallRules] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # nr -> "x32:read" for comments
    domains: list[tuple[int, int, str]] = field(default_factory=list)  # (lo, hi, abi) served


@dataclass
class FilterModel:
    default: int
    bad_arch: int
    blocks: list[Block]
    warnings: list[str] = field(default_factory=list)


def action_value(action: str, errno_ret: int | None, default_errno: int | None = None) -> int:
    base = ACTIONS[action]
    if base in (bpf.RET_ERRNO, bpf.RET_TRACE):
        data = errno_ret if errno_ret is not None else (default_errno if default_errno is not None else EPERM)
        return base | (int(data) & bpf.RET_DATA)
    return base


def to_u64(v: int) -> int:
    """Profile integers: negative values are two's complement (validation bounds them)."""
    return int(v) & U64


def make_cond(arg: dict[str, Any], syscall: str, abi_name: str) -> Cond:
    index, op = int(arg["index"]), arg["op"]
    bits = arg_bits(abi_name, syscall, index)
    mask = (1 << bits) - 1
    value = to_u64(arg.get("value", 0)) & mask
    datum = to_u64(arg.get("valueTwo", 0)) & mask if op == "SCMP_CMP_MASKED_EQ" else 0
    return Cond(index, op, value, datum, bits)


def build_model(profile: dict[str, Any], bad_arch: int = bpf.RET_KILL_PROCESS) -> FilterModel:
    """Resolved OCI profile → per-block syscall rules. Unknown names are skipped (as runc
    does); validation is where they are reported."""
    default = action_value(profile["defaultAction"], profile.get("defaultErrnoRet"))
    abis: list[Abi] = []
    warnings: list[str] = []
    for oci in profile.get("architectures") or []:
        a = abi(oci)
        if a is None:
            warnings.append(f"{oci}: no syscall table for this architecture; it is left out "
                            f"of the filter (its calls get the bad-arch action)")
        elif a not in abis:
            abis.append(a)
    blocks: dict[int, Block] = {}
    collected: dict[tuple[int, int], list[Rule]] = {}
    for a in abis:
        blk = blocks.setdefault(a.audit_arch, Block(a.audit_arch, a.name))
        if blk.label != a.name:
            blk.label += "+" + a.name
        lo, hi = (X32_SYSCALL_BIT, U32) if a.name == "x32" else (0, X32_SYSCALL_BIT - 1) \
            if a.name == "x86_64" else (0, U32)
        blk.domains.append((lo, hi, a.name))
        for rule in profile.get("syscalls") or []:
            act = action_value(rule["action"], rule.get("errnoRet"), None)
            if act == default:
                continue
            args = list(rule.get("args") or [])
            # runc: when one argument is compared twice, every comparison of the rule
            # becomes a rule of its own (ORed) -- libseccomp cannot AND them.
            indices = [int(x["index"]) for x in args]
            groups = [[x] for x in args] if len(set(indices)) < len(indices) else [args]
            for name in rule["names"]:
                nr = a.table.get(name)
                if nr is None:
                    continue
                for group in groups:
                    conds = tuple(make_cond(arg, name, a.name) for arg in group)
                    collected.setdefault((a.audit_arch, nr), []).append(Rule(act, conds))
                blk.names[nr] = name if a.name in ("x86_64", "i386", "aarch64") else f"{a.name}:{name}"
    for (audit, nr), rules in collected.items():
        blocks[audit].syscalls[nr] = normalise(rules, default)
    return FilterModel(default, bad_arch, list(blocks.values()), warnings)


def normalise(rules: list[Rule], default: int) -> SyscallRules:
    """Apply the precedence rules (in profile order, libseccomp-compatible):

    * an argument-free rule decides the syscall: the first one wins, later
      argument-free rules and every argument rule of that syscall are ignored;
    * otherwise argument rules are ORed and the most restrictive matching action wins
      (libseccomp's answer for overlapping argument rules depends on its internal tree
      layout; ours is the kernel's order for stacked filters, so it never widens).
    """
    uncond = [r.action for r in rules if not r.conds]
    if uncond:
        return SyscallRules((), uncond[0])
    key = bpf.action_precedence
    kept: list[Rule] = []
    seen: set[Rule] = set()
    for r in sorted(rules, key=lambda r: key(r.action)):
        if r not in seen:
            seen.add(r)
            kept.append(r)
    # trailing rules whose action equals the default add nothing: once every more
    # restrictive rule has failed, matching or not they give the default
    while kept and kept[-1].action == default:
        kept.pop()
    return SyscallRules(tuple(kept), default)


def shadowed(profile: dict[str, Any]) -> list[str]:
    """Human-readable notes for rules that an earlier argument-free rule overrides."""
    first: dict[str, tuple[int, str]] = {}
    notes = []
    rules = profile.get("syscalls") or []
    for i, rule in enumerate(rules):
        if rule.get("args"):
            continue
        for name in rule["names"]:
            first.setdefault(name, (i, rule["action"]))
    for i, rule in enumerate(rules):
        for name in rule["names"]:
            j, act = first.get(name, (i, ""))
            if j != i and (rule["action"], rule.get("errnoRet")) != (act, rules[j].get("errnoRet")):
                notes.append(f"syscalls[{i}] ({rule['action']}) for {name} is overridden by the "
                             f"argument-free rule syscalls[{j}] ({act}): the first argument-free rule "
                             "for a syscall decides it (as in libseccomp)")
    return notes
