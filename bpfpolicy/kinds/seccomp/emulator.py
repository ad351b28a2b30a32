"""A classic-BPF interpreter for seccomp filters, and the kernel's action-cache check.

`run()` executes a filter on one `struct seccomp_data` and counts executed
instructions -- the cost measure the benchmarks and tests use. `const_allow()` ports
`seccomp_is_const_allow()` (kernel/seccomp.c, Linux 5.11+): at attach time the kernel
emulates the filter per (arch, nr) with the arguments unknown; only when the path uses
nothing but `ld [nr]`, `ld [arch]`, `ja`, `jeq/jge/jgt/jset #k`, `and #k` and `ret #k`
and returns ALLOW is the syscall put in the per-arch bitmap that skips the filter.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import bpf
from .bpf import Insn

MAX_STEPS = 1 << 16  # cBPF cannot loop (jumps are forward), this only guards bad input
SECCOMP_DATA_LEN = 64


class EmulationError(Exception):
    """The filter did something the kernel's checker would have refused."""


@dataclass(frozen=True)
class SeccompData:
    nr: int
    arch: int
    args: tuple[int, ...] = field(default=(0, 0, 0, 0, 0, 0))
    ip: int = 0

    def pack(self) -> bytes:
        args = tuple(a & 0xFFFFFFFFFFFFFFFF for a in self.args) + (0,) * (6 - len(self.args))
        return struct.pack("<iIQ6Q", _s32(self.nr), self.arch & 0xFFFFFFFF, self.ip, *args[:6])


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


@dataclass(frozen=True)
class Result:
    ret: int
    executed: int


def run(prog: Sequence[Insn], data: SeccompData) -> Result:
    """Execute `prog` on `data`; returns the 32-bit seccomp verdict and instructions run."""
    m = _Machine(data.pack())
    n = len(prog)
    while True:
        if m.pc >= n:
            raise EmulationError(f"ran off the end of the filter at pc {m.pc}")
        m.steps += 1
        if m.steps > MAX_STEPS:
            raise EmulationError("too many steps")
        insn = prog[m.pc]
        m.pc += 1
        verdict = _STEP[insn.code & 0x07](m, insn)
        if verdict is not None:
            return Result(verdict, m.steps)


@dataclass
class _Machine:
    """The cBPF machine state: accumulator, index register, scratch memory, pc."""

    buf: bytes
    a: int = 0
    x: int = 0
    pc: int = 0
    steps: int = 0
    mem: list[int] = field(default_factory=lambda: [0] * 16)

    def fail(self, what: str) -> EmulationError:
        return EmulationError(f"pc {self.pc - 1}: {what}")


def _ret(m: _Machine, i: Insn) -> int:
    return (m.a if i.code & bpf.A else i.k) & 0xFFFFFFFF


def _ld(m: _Machine, i: Insn) -> None:
    mode, k = i.code & 0xE0, i.k
    if mode == bpf.ABS and (i.code & 0x18) == bpf.W:
        if k % 4 or k + 4 > SECCOMP_DATA_LEN:
            raise m.fail(f"misaligned or out-of-range load [{k}]")
        m.a = struct.unpack_from("<I", m.buf, k)[0]
        return
    value = _scalar_load(m, mode, k)
    if value is None:
        raise m.fail(f"unsupported load {i.code:#x}")
    m.a = value


def _ldx(m: _Machine, i: Insn) -> None:
    value = _scalar_load(m, i.code & 0xE0, i.k)
    if value is None:
        raise m.fail(f"unsupported ldx {i.code:#x}")
    m.x = value


def _scalar_load(m: _Machine, mode: int, k: int) -> int | None:
    """The loads shared by `ld` and `ldx`: immediate, scratch memory, packet length."""
    if mode == bpf.IMM:
        return k
    if mode == bpf.MEM:
        return m.mem[k & 15]
    if mode == bpf.LEN:
        return SECCOMP_DATA_LEN
    return None


def _st(m: _Machine, i: Insn) -> None:
    m.mem[i.k & 15] = m.a


def _stx(m: _Machine, i: Insn) -> None:
    m.mem[i.k & 15] = m.x


def _alu_step(m: _Machine, i: Insn) -> None:
    m.a = _alu(i.code, m.a, m.x if i.code & bpf.X else i.k, m.pc - 1)


_JUMP_TESTS = {
    bpf.JEQ: lambda a, v: a == v,
    bpf.JGT: lambda a, v: a > v,
    bpf.JGE: lambda a, v: a >= v,
    bpf.JSET: lambda a, v: bool(a & v),
}


def _jmp(m: _Machine, i: Insn) -> None:
    op = i.code & 0xF0
    if op == bpf.JA:
        m.pc += i.k
        return
    test = _JUMP_TESTS.get(op)
    if test is None:
        raise m.fail(f"unsupported jump {i.code:#x}")
    m.pc += i.jt if test(m.a, m.x if i.code & bpf.X else i.k) else i.jf


def _misc(m: _Machine, i: Insn) -> None:
    if (i.code & 0xF8) == bpf.TAX:
        m.x = m.a
    else:
        m.a = m.x


_STEP = {bpf.RET: _ret, bpf.LD: _ld, bpf.LDX: _ldx, bpf.ST: _st, bpf.STX: _stx,
         bpf.ALU: _alu_step, bpf.JMP: _jmp, bpf.MISC: _misc}


def _checked_div(a: int, v: int, pc: int) -> int:
    if v == 0:
        raise EmulationError(f"pc {pc}: division by zero")
    return a // v


def _checked_mod(a: int, v: int, pc: int) -> int:
    if v == 0:
        raise EmulationError(f"pc {pc}: modulo by zero")
    return a % v


_ALU_OPS = {
    bpf.ADD: lambda a, v, pc: a + v,
    bpf.SUB: lambda a, v, pc: a - v,
    bpf.MUL: lambda a, v, pc: a * v,
    bpf.DIV: _checked_div,
    bpf.MOD: _checked_mod,
    bpf.OR: lambda a, v, pc: a | v,
    bpf.AND: lambda a, v, pc: a & v,
    bpf.XOR: lambda a, v, pc: a ^ v,
    bpf.LSH: lambda a, v, pc: a << v if v < 32 else 0,
    bpf.RSH: lambda a, v, pc: a >> v if v < 32 else 0,
    bpf.NEG: lambda a, v, pc: -a,
}


def _alu(code: int, a: int, v: int, pc: int) -> int:
    op = _ALU_OPS.get(code & 0xF0)
    if op is None:
        raise EmulationError(f"pc {pc}: unsupported alu {code:#x}")
    return op(a, v, pc) & 0xFFFFFFFF


# --------------------------------------------------------------------------- cache

_CACHE_JUMPS = {bpf.JMP | bpf.JEQ | bpf.K, bpf.JMP | bpf.JGE | bpf.K,
                bpf.JMP | bpf.JGT | bpf.K, bpf.JMP | bpf.JSET | bpf.K}


def const_allow(prog: Sequence[Insn], arch: int, nr: int) -> bool:
    """Port of seccomp_is_const_allow(): True iff the kernel would cache (arch, nr)."""
    reg = 0
    pc = 0
    while pc < len(prog):
        i = prog[pc]
        code, k = i.code, i.k
        if code == bpf.LD | bpf.W | bpf.ABS:
            if k == bpf.OFF_NR:
                reg = nr & 0xFFFFFFFF
            elif k == bpf.OFF_ARCH:
                reg = arch
            else:
                return False
        elif code == bpf.RET | bpf.K:
            return k == bpf.RET_ALLOW
        elif code == bpf.JMP | bpf.JA:
            pc += k
        elif code in _CACHE_JUMPS:
            op = code & 0xF0
            taken = (reg == k if op == bpf.JEQ else reg >= k if op == bpf.JGE
                     else reg > k if op == bpf.JGT else bool(reg & k))
            pc += i.jt if taken else i.jf
        elif code == bpf.ALU | bpf.AND | bpf.K:
            reg &= k
        else:
            return False
        pc += 1
    return False


def cacheable(prog: Sequence[Insn], arch: int, nrs: Iterable[int]) -> set[int]:
    """The syscall numbers of `nrs` the kernel would put in `arch`'s allow bitmap."""
    return {nr for nr in nrs if const_allow(prog, arch, nr)}
