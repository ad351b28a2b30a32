"""FilterModel → classic BPF.

Layout of the generated filter::

    ld [4]                       ; arch
    jeq AUDIT_ARCH_<native>, B0  ; one jeq per block, native first
    ...
    ret KILL_PROCESS             ; an architecture the profile does not list
  B0:
    ld [0]                       ; nr
    <search tree over merged nr ranges>   ; jge/jeq #k only
    <leaves: ret #action, or the argument checks of one syscall>

* The syscall number space of a block (0 .. 2^32-1) is cut into maximal ranges of
  equal outcome. On x86_64 the x32 half (nr >= 0x40000000) is one more range: the
  bad-arch action unless X32 is listed (then x32's own rules live there); nr -1 (a
  tracer's "skip this call") always gets the default.
* The tree is an optimal alphabetic search tree (dynamic programming over the ranges)
  weighted by how many *allowed* syscalls each range holds, so the common case -- an
  allowed call -- resolves in few jumps, while every other range still costs a bounded
  depth. A leaf may also be a short `jeq` chain that punches single-number holes into
  a range ("everything in 20..40 is allowed except 31").
* Argument-free syscalls reach their `ret` through `ld [0]`/`ld [4]`/`jeq`/`jge` only,
  the shape the kernel's action cache (5.11+) proves constant; argument loads appear
  only inside the leaf of a syscall that has argument rules.
* Jumps: cBPF's jt/jf are 8-bit forward offsets. The linker inserts `ja` trampolines
  (32-bit offset) placed after an unconditional instruction when a target is farther.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import bpf
from .bpf import Insn
from .model import Block, Cond, FilterModel, Rule, SyscallRules

U32 = 0xFFFFFFFF

# ---------------------------------------------------------------------------- assembly


@dataclass
class Op:
    """An instruction with symbolic jump targets (None = fall through)."""

    code: int
    k: int = 0
    jt: str | None = None
    jf: str | None = None
    comment: str = ""


@dataclass
class Label:
    name: str


@dataclass
class Asm:
    items: list[Op | Label] = field(default_factory=list)
    _n: int = 0

    def label(self, hint: str = "L") -> str:
        self._n += 1
        return f"{hint}{self._n}"

    def place(self, name: str) -> None:
        self.items.append(Label(name))

    def op(self, code: int, k: int = 0, jt: str | None = None, jf: str | None = None,
           comment: str = "") -> None:
        self.items.append(Op(code, k & U32, jt, jf, comment))

    def ret(self, value: int, comment: str = "") -> None:
        self.op(bpf.RET | bpf.K, value, comment=comment or bpf.describe_ret(value))

    def ld(self, off: int, comment: str = "") -> None:
        self.op(bpf.LD | bpf.W | bpf.ABS, off, comment=comment)

    def jmp(self, op: int, k: int, jt: str | None, jf: str | None, comment: str = "") -> None:
        self.op(bpf.JMP | op | bpf.K, k, jt, jf, comment)


@dataclass
class Program:
    insns: list[Insn]
    labels: dict[int, list[str]]  # pc -> label names
    comments: dict[int, str]


MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses a longer classic BPF program (EINVAL)
JUMP_REACH = 255  # jt/jf are 8-bit forward offsets


class FilterTooLarge(ValueError):
    """The profile needs more instructions than the kernel accepts."""


def link(asm: Asm) -> Program:
    """Resolve labels; route conditional jumps beyond 255 through `ja` trampolines.

    A trampoline is shared by every jump to the same target that can reach it. It is
    placed as late as the jump's reach allows: right after an unconditional instruction
    when there is one in reach (free), otherwise in the straight-line code behind a
    `ja` that skips it (one extra instruction on that path). So any number of rules
    links; only BPF_MAXINSNS bounds the program."""
    items = list(asm.items)
    tramps: dict[str, str] = {}  # trampoline label -> its target
    while True:
        pcs, ops = _layout(items)
        far = _first_far_jump(ops, pcs)
        if far is None:
            return _encode(items)
        if len(ops) > 2 * MAX_INSNS:
            raise FilterTooLarge(f"the filter needs more than {MAX_INSNS} instructions (BPF_MAXINSNS)")
        pc, op, tgt = far
        shared = next((name for name, t in tramps.items()
                       if t == tgt and 0 <= pcs[name] - pc - 1 <= JUMP_REACH), None)
        if shared is None:
            shared = _insert_trampoline(items, ops, pc, tgt, len(tramps) + 1)
            tramps[shared] = tgt
        if op.jt == tgt:
            op.jt = shared
        if op.jf == tgt:
            op.jf = shared


def _layout(items: list[Label | Op]) -> tuple[dict[str, int], list[tuple[int, Op]]]:
    """Label -> pc, and every instruction with its index in `items` (in pc order)."""
    pcs: dict[str, int] = {}
    ops: list[tuple[int, Op]] = []
    for idx, it in enumerate(items):
        if isinstance(it, Label):
            pcs[it.name] = len(ops)
        else:
            ops.append((idx, it))
    return pcs, ops


def _is_conditional_jump(op: Op) -> bool:
    return (op.code & 0x07) == bpf.JMP and (op.code & 0xF0) != bpf.JA


def _first_far_jump(ops: list[tuple[int, Op]], pcs: dict[str, int]) -> tuple[int, Op, str] | None:
    """The first conditional jump whose target is beyond JUMP_REACH: (pc, op, target)."""
    for pc, (_, op) in enumerate(ops):
        if not _is_conditional_jump(op):
            continue
        for tgt in (op.jt, op.jf):
            if tgt is None:
                continue
            dist = pcs[tgt] - pc - 1
            if dist < 0:
                raise AssertionError(f"backward jump to {tgt}")
            if dist > JUMP_REACH:
                return pc, op, tgt
    return None


def _ends_flow(op: Op) -> bool:
    """A `ret` or `ja`: code after it is reached only by jumps, so a trampoline is free there."""
    return (op.code & 0x07) == bpf.RET or op.code == bpf.JMP | bpf.JA


def _insert_trampoline(items: list[Label | Op], ops: list[tuple[int, Op]], pc: int, tgt: str,
                       n: int) -> str:
    """Insert trampoline number `n` to `tgt` within reach of the jump at `pc`; its label."""
    name = f"_far{n}"
    tramp: list[Label | Op] = [Label(name), Op(bpf.JMP | bpf.JA, 0, tgt, None, f"trampoline to {tgt}")]
    last = min(pc + JUMP_REACH, len(ops) - 1)
    spot = next((p for p in range(last, pc, -1) if _ends_flow(ops[p][1])), None)
    if spot is None or spot < pc + JUMP_REACH // 2:
        # no free spot late enough: skip over the trampoline in straight-line code
        spot = min(pc + JUMP_REACH - 1, len(ops) - 1)
        over = f"_over{n}"
        tramp = [Op(bpf.JMP | bpf.JA, 0, over, None, "skip a trampoline"), *tramp, Label(over)]
    at = ops[spot][0] + 1
    items[at:at] = tramp
    return name


def _encode(items: list[Label | Op]) -> Program:
    """Final encoding: label references become relative jump offsets."""
    pcs, ops = _layout(items)
    labels: dict[int, list[str]] = {}
    for name, pc in pcs.items():
        labels.setdefault(pc, []).append(name)
    insns: list[Insn] = []
    comments: dict[int, str] = {}
    for pc, (_, op) in enumerate(ops):
        insns.append(_encode_op(op, pc, pcs))
        if op.comment:
            comments[pc] = op.comment
    return Program(insns, labels, comments)


def _encode_op(op: Op, pc: int, pcs: dict[str, int]) -> Insn:
    def rel(label: str | None) -> int:
        return pcs[label] - pc - 1 if label else 0

    if op.code == bpf.JMP | bpf.JA:
        return Insn(op.code, 0, 0, rel(op.jt) if op.jt else op.k)
    if (op.code & 0x07) == bpf.JMP:
        return Insn(op.code, rel(op.jt), rel(op.jf), op.k)
    return Insn(op.code, 0, 0, op.k)


# ---------------------------------------------------------------------------- ranges


@dataclass(frozen=True)
class Range:
    lo: int
    hi: int
    leaf: SyscallRules
    weight: float  # how much reaching this range quickly matters
    note: str = ""


def block_ranges(block: Block, default: int, bad_arch: int, weight_of: dict[str, float]) -> list[Range]:
    """Cut 0..2^32-1 into maximal ranges of equal outcome for one block."""
    dflt = SyscallRules((), default)
    bad = SyscallRules((), bad_arch)
    points: list[tuple[int, int, SyscallRules, float, str]] = []
    served = sorted(block.domains)
    # base layer: domains get the default, gaps get bad-arch; -1 always default
    cursor = 0
    for lo, hi, _abi in served:
        if lo > cursor:
            points.append((cursor, lo - 1, bad, 0.0, "bad arch"))
        points.append((lo, hi, dflt, 0.0, ""))
        cursor = hi + 1
    if cursor <= U32:
        points.append((cursor, U32, bad, 0.0, "bad arch"))
    base = _split_minus_one(points, dflt)
    # overlay syscalls
    singles = {}
    for nr, rules in block.syscalls.items():
        abi_name = next((a for lo, hi, a in served if lo <= nr <= hi), None)
        if abi_name is None:
            continue
        allowed = rules.fallback == bpf.RET_ALLOW or any(r.action == bpf.RET_ALLOW for r in rules.rules)
        # a syscall with argument checks runs more code after its leaf: pull it up
        extra = ARG_WEIGHT * sum(len(r.conds) for r in rules.rules)
        w = weight_of.get(abi_name, 0.1) * (1.0 if allowed else 0.0) + extra
        singles[nr] = (rules, w, block.names.get(nr, str(nr)))
    out: list[Range] = []
    for lo, hi, leaf, _w, note in base:
        cur = lo
        for nr in sorted(n for n in singles if lo <= n <= hi):
            if nr > cur:
                out.append(Range(cur, nr - 1, leaf, 0.0, note))
            rules, w, name = singles[nr]
            out.append(Range(nr, nr, rules, w, name))
            cur = nr + 1
        if cur <= hi:
            out.append(Range(cur, hi, leaf, 0.0, note))
    return _merge(out)


def _split_minus_one(points: list, dflt: SyscallRules) -> list:
    out = []
    for lo, hi, leaf, w, note in points:
        if lo <= U32 <= hi and leaf is not dflt:
            if lo < U32:
                out.append((lo, U32 - 1, leaf, w, note))
            out.append((U32, U32, dflt, 0.0, "nr -1 (skipped by a tracer)"))
        else:
            out.append((lo, hi, leaf, w, note))
    return out


def _merge(ranges: list[Range]) -> list[Range]:
    out: list[Range] = []
    for r in ranges:
        if out and out[-1].leaf == r.leaf and out[-1].hi + 1 == r.lo:
            p = out[-1]
            note = p.note if p.note == r.note or not r.note else (p.note + "," + r.note if p.note else r.note)
            if len(note) > 60:
                note = note[:57] + "..."
            out[-1] = Range(p.lo, r.hi, p.leaf, p.weight + r.weight, note)
        else:
            out.append(r)
    return out


# ---------------------------------------------------------------------------- tree


@dataclass
class Split:
    k: int  # jge #k: true -> right
    left: Node
    right: Node


@dataclass
class Holes:
    """Leaf `base` except single numbers `holes` (tested by jeq, in order)."""

    base: Range
    holes: list[Range]


@dataclass
class LeafNode:
    r: Range


Node = Split | Holes | LeafNode

EPSILON = 0.35  # weight floor per range: bounds the depth of ranges nobody is allowed
MAX_HOLES = 3
ARG_WEIGHT = 4.0  # tree weight per argument comparison of a syscall


def build_tree(ranges: list[Range]) -> Node:
    """Optimal alphabetic search tree over `ranges` (O(n^3) DP, n is ~100)."""
    n = len(ranges)
    w = [r.weight + EPSILON for r in ranges]
    pre = [0.0]
    for x in w:
        pre.append(pre[-1] + x)

    def W(i: int, j: int) -> float:
        return pre[j + 1] - pre[i]

    cost = [[0.0] * n for _ in range(n)]
    choice: list[list[tuple[str, int]]] = [[("leaf", 0)] * n for _ in range(n)]
    for length in range(2, n + 1):
        for i in range(0, n - length + 1):
            j = i + length - 1
            best, arg = float("inf"), ("leaf", 0)
            hc = _holes_cost(ranges, w, i, j)
            if hc is not None:
                best, arg = hc, ("holes", 0)
            total = W(i, j)
            for k in range(i + 1, j + 1):
                c = total + cost[i][k - 1] + cost[k][j]
                if c < best:
                    best, arg = c, ("split", k)
            cost[i][j] = best
            choice[i][j] = arg

    def make(i: int, j: int) -> Node:
        if i == j:
            return LeafNode(ranges[i])
        kind, k = choice[i][j]
        if kind == "split":
            return Split(ranges[k].lo, make(i, k - 1), make(k, j))
        holes = sorted((ranges[t] for t in range(i + 1, j + 1, 2)), key=lambda r: -r.weight)
        base = ranges[i]
        return Holes(Range(ranges[i].lo, ranges[j].hi, base.leaf, 0.0, base.note), holes)

    return make(0, n - 1)


def _holes_cost(ranges: list[Range], w: list[float], i: int, j: int) -> float | None:
    """Cost of a jeq chain when i..j alternates base, single-nr hole, base, ..."""
    if (j - i) % 2 or (j - i) // 2 > MAX_HOLES:
        return None
    base = ranges[i].leaf
    for t in range(i, j + 1, 2):
        if ranges[t].leaf != base:
            return None
    holes = [t for t in range(i + 1, j + 1, 2)]
    if any(ranges[t].lo != ranges[t].hi for t in holes):
        return None
    h = len(holes)
    base_w = sum(w[t] for t in range(i, j + 1, 2))
    hole_ws = sorted((w[t] for t in holes), reverse=True)
    return base_w * h + sum(x * (pos + 1) for pos, x in enumerate(hole_ws))


# ---------------------------------------------------------------------------- emission


@dataclass
class Compiled:
    program: Program
    model: FilterModel
    ranges: dict[str, list[Range]]

    @property
    def insns(self) -> list[Insn]:
        return self.program.insns


def compile_model(model: FilterModel, weights: dict[str, float] | None = None) -> Compiled:
    weights = weights or {"x86_64": 1.0, "aarch64": 1.0, "i386": 0.5, "x32": 0.1}
    asm = Asm()
    asm.ld(bpf.OFF_ARCH, "A = arch")
    block_labels = [asm.label("arch_") for _ in model.blocks]
    for blk, lab in zip(model.blocks, block_labels, strict=True):
        asm.jmp(bpf.JEQ, blk.audit_arch, lab, None, f"AUDIT_ARCH {blk.label}")
    asm.ret(model.bad_arch, f"architecture not in the profile: {bpf.describe_ret(model.bad_arch)}")
    all_ranges: dict[str, list[Range]] = {}
    for blk, lab in zip(model.blocks, block_labels, strict=True):
        asm.place(lab)
        asm.ld(bpf.OFF_NR, f"A = nr ({blk.label})")
        ranges = block_ranges(blk, model.default, model.bad_arch, weights)
        all_ranges[blk.label] = ranges
        _emit_node(asm, build_tree(ranges), model.default)
    n_ops = sum(1 for it in asm.items if isinstance(it, Op))
    program = link(asm) if n_ops <= MAX_INSNS else None  # trampolines only add instructions
    n_insns = len(program.insns) if program else n_ops
    if program is None or n_insns > MAX_INSNS:
        raise FilterTooLarge(f"the filter needs {n_insns}{'+' if program is None else ''} instructions; "
                             f"the kernel accepts at most "
                             f"{MAX_INSNS} (BPF_MAXINSNS): split the argument rules of the busiest syscalls "
                             "or use fewer values")
    return Compiled(program, model, all_ranges)


def _rdesc(r: Range) -> str:
    span = f"{r.lo:#x}" if r.lo == r.hi else f"{r.lo:#x}..{r.hi:#x}"
    if r.lo < 0x10000 and r.hi < 0x10000:
        span = str(r.lo) if r.lo == r.hi else f"{r.lo}..{r.hi}"
    return f"{span} {r.note}".strip()


def _emit_node(asm: Asm, node: Node, default: int) -> None:
    if isinstance(node, LeafNode):
        _emit_leaf(asm, node.r, default)
    elif isinstance(node, Split):
        right = asm.label("nr_ge_")
        asm.jmp(bpf.JGE, node.k, right, None, f"nr >= {node.k:#x}?")
        _emit_node(asm, node.left, default)
        asm.place(right)
        _emit_node(asm, node.right, default)
    else:
        targets = []
        for h in node.holes:
            lab = asm.label("nr_eq_")
            targets.append((lab, h))
            asm.jmp(bpf.JEQ, h.lo, lab, None, f"{_rdesc(h)}")
        _emit_leaf(asm, node.base, default)
        for lab, h in targets:
            asm.place(lab)
            _emit_leaf(asm, h, default)


def _emit_leaf(asm: Asm, r: Range, default: int) -> None:
    leaf = r.leaf
    if leaf.arg_free:
        asm.ret(leaf.fallback, f"{_rdesc(r)}: {bpf.describe_ret(leaf.fallback)}")
        return
    ArgEmitter(asm, r).emit(leaf)


class ArgEmitter:
    """Argument checks of one syscall: rules in precedence order, first match returns.

    Tracks which 32-bit word the accumulator holds so a run of comparisons on the same
    argument word (Docker's five `personality` values, three `socket` ranges) loads it
    once."""

    def __init__(self, asm: Asm, r: Range) -> None:
        self.asm = asm
        self.r = r
        self.rets: dict[int, str] = {}

    def ret_label(self, action: int) -> str:
        if action not in self.rets:
            self.rets[action] = self.asm.label("ret_")
        return self.rets[action]

    def emit(self, leaf: SyscallRules) -> None:
        a = self.asm
        known: int | None = None  # offset currently in A, if the same on every path here
        a.items.append(Label(a.label("sys_")))
        first = True
        for rule in leaf.rules:
            nxt = a.label("next_")
            comment = f"{_rdesc(self.r)}: " if first else ""
            known = self.rule(rule, nxt, known, comment)
            a.place(nxt)
            first = False
        a.ret(leaf.fallback, f"{self.r.note}: no rule matched: {bpf.describe_ret(leaf.fallback)}")
        for action, lab in self.rets.items():
            a.place(lab)
            a.ret(action)

    def rule(self, rule: Rule, fail: str, known: int | None, comment: str) -> int | None:
        """Emit one rule; returns the word in A on its fail path (None = unknown)."""
        ok = self.ret_label(rule.action)
        fail_states: set[int | None] = set()
        for ci, cond in enumerate(rule.conds):
            last = ci == len(rule.conds) - 1
            nxt = ok if last else self.asm.label("and_")
            known, fails = self.cond(cond, nxt, fail, known, comment)
            comment = ""
            fail_states |= fails
            if not last:
                self.asm.place(nxt)
        return fail_states.pop() if len(fail_states) == 1 else None

    def load(self, off: int, known: int | None, comment: str = "") -> int:
        if known != off:
            idx, hi = (off - 16) // 8, (off - 16) % 8 == 4
            self.asm.ld(off, (comment + f"A = args[{idx}] {'high' if hi else 'low'} word").strip())
        return off

    def cond(self, c: Cond, ok: str, fail: str, known: int | None, comment: str
             ) -> tuple[int | None, set[int | None]]:
        """Emit one comparison; returns (A after the pass path, set of A states at fail)."""
        a = self.asm
        lo_off, hi_off = bpf.off_arg(c.index, False), bpf.off_arg(c.index, True)
        desc = f"{c.op.removeprefix('SCMP_CMP_')} {c.value:#x}" + (
            f" == {c.datum:#x}" if c.op == "SCMP_CMP_MASKED_EQ" else "") + ("" if c.wide else f" ({c.bits}-bit)")
        if c.op == "SCMP_CMP_MASKED_EQ":
            return self.masked(c, ok, fail, known, comment + f"args[{c.index}] {desc}")
        vh, vl = c.value >> 32, c.value & U32
        if not c.wide:
            known = self.load(lo_off, known, comment + f"args[{c.index}] {desc}: ")
            if c.bits < 32:  # e.g. umode_t: the kernel keeps 16 bits
                a.op(bpf.ALU | bpf.AND | bpf.K, (1 << c.bits) - 1)
                known = None
            _cmp32(a, c.op, vl, ok, fail)
            return known, {known}
        # 64-bit: decide on the high word, then the low word
        known = self.load(hi_off, known, comment + f"args[{c.index}] {desc}: ")
        lo_lab = a.label("lo_")
        op = c.op
        if op == "SCMP_CMP_EQ":
            a.jmp(bpf.JEQ, vh, lo_lab, fail)
            a.place(lo_lab)
            self.load(lo_off, known)
            a.jmp(bpf.JEQ, vl, ok, fail)
        elif op == "SCMP_CMP_NE":
            a.jmp(bpf.JEQ, vh, lo_lab, ok)
            a.place(lo_lab)
            self.load(lo_off, known)
            a.jmp(bpf.JEQ, vl, fail, ok)
        else:
            # GT/GE pass when hi > vh; LT/LE pass when hi < vh
            greater_passes = op in ("SCMP_CMP_GT", "SCMP_CMP_GE")
            on_greater, on_less = (ok, fail) if greater_passes else (fail, ok)
            if vh < U32:
                a.jmp(bpf.JGT, vh, on_greater, None)
            a.jmp(bpf.JEQ, vh, lo_lab, on_less)
            a.place(lo_lab)
            self.load(lo_off, known)
            _cmp32(a, op, vl, ok, fail)
        return lo_off, {hi_off, lo_off}

    def masked(self, c: Cond, ok: str, fail: str, known: int | None, comment: str
               ) -> tuple[int | None, set[int | None]]:
        a = self.asm
        words = [(bpf.off_arg(c.index, True), c.value >> 32, c.datum >> 32)] if c.wide else []
        words.append((bpf.off_arg(c.index, False), c.value & U32, c.datum & U32))
        checks = [(off, m, d) for off, m, d in words if m or d]
        if any(d & ~m for _, m, d in checks):
            a.op(bpf.JMP | bpf.JA, 0, fail, None, comment + ": can never match")
            return known, {known}
        if not checks:  # mask 0, datum 0: always true
            a.op(bpf.JMP | bpf.JA, 0, ok, None, comment + ": always true")
            return known, set()
        for n, (off, m, d) in enumerate(checks):
            self.load(off, known if n == 0 else None, comment + ": ")
            comment = ""
            if m != U32:
                a.op(bpf.ALU | bpf.AND | bpf.K, m)
            last = n == len(checks) - 1
            nxt = ok if last else a.label("mlo_")
            a.jmp(bpf.JEQ, d, nxt, fail)
            if not last:
                a.place(nxt)
        clobbered = any(m != U32 for _, m, _ in checks)
        return (None if clobbered else checks[-1][0]), {None} if clobbered else {checks[-1][0]}


def _cmp32(a: Asm, op: str, v: int, ok: str, fail: str) -> None:
    if op == "SCMP_CMP_EQ":
        a.jmp(bpf.JEQ, v, ok, fail)
    elif op == "SCMP_CMP_NE":
        a.jmp(bpf.JEQ, v, fail, ok)
    elif op == "SCMP_CMP_GT":
        a.jmp(bpf.JGT, v, ok, fail)
    elif op == "SCMP_CMP_GE":
        a.jmp(bpf.JGE, v, ok, fail)
    elif op == "SCMP_CMP_LT":
        a.jmp(bpf.JGE, v, fail, ok)
    elif op == "SCMP_CMP_LE":
        a.jmp(bpf.JGT, v, fail, ok)
    else:
        raise ValueError(f"unknown operator {op}")
