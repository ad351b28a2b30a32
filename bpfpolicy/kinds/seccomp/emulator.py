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
    buf = data.pack()
    a = x = 0
    mem = [0] * 16
    pc = steps = 0
    n = len(prog)
    while True:
        if pc >= n:
            raise EmulationError(f"ran off the end of the filter at pc {pc}")
        steps += 1
        if steps > MAX_STEPS:
            raise EmulationError("too many steps")
        i = prog[pc]
        code, k = i.code, i.k
        cls = code & 0x07
        pc += 1
        if cls == bpf.RET:
            return Result((a if code & bpf.A else k) & 0xFFFFFFFF, steps)
        if cls == bpf.LD:
            mode = code & 0xE0
            if mode == bpf.ABS and (code & 0x18) == bpf.W:
                if k % 4 or k + 4 > SECCOMP_DATA_LEN:
                    raise EmulationError(f"pc {pc - 1}: misaligned or out-of-range load [{k}]")
                a = struct.unpack_from("<I", buf, k)[0]
            elif mode == bpf.IMM:
                a = k
            elif mode == bpf.MEM:
                a = mem[k & 15]
            elif mode == bpf.LEN:
                a = SECCOMP_DATA_LEN
            else:
                raise EmulationError(f"pc {pc - 1}: unsupported load {code:#x}")
        elif cls == bpf.LDX:
            mode = code & 0xE0
            x = {bpf.IMM: k, bpf.MEM: mem[k & 15], bpf.LEN: SECCOMP_DATA_LEN}.get(mode)  # type: ignore[assignment]
            if x is None:
                raise EmulationError(f"pc {pc - 1}: unsupported ldx {code:#x}")
        elif cls == bpf.ST:
            mem[k & 15] = a
        elif cls == bpf.STX:
            mem[k & 15] = x
        elif cls == bpf.ALU:
            a = _alu(code, a, x if code & bpf.X else k, pc - 1)
        elif cls == bpf.JMP:
            op = code & 0xF0
            if op == bpf.JA:
                pc += k
                continue
            src = x if code & bpf.X else k
            if op == bpf.JEQ:
                taken = a == src
            elif op == bpf.JGT:
                taken = a > src
            elif op == bpf.JGE:
                taken = a >= src
            elif op == bpf.JSET:
                taken = bool(a & src)
            else:
                raise EmulationError(f"pc {pc - 1}: unsupported jump {code:#x}")
            pc += i.jt if taken else i.jf
        elif cls == bpf.MISC:
            if (code & 0xF8) == bpf.TAX:
                x = a
            else:
                a = x
        else:  # pragma: no cover - all classes covered
            raise EmulationError(f"pc {pc - 1}: bad class")


def _alu(code: int, a: int, v: int, pc: int) -> int:
    op = code & 0xF0
    if op == bpf.ADD:
        r = a + v
    elif op == bpf.SUB:
        r = a - v
    elif op == bpf.MUL:
        r = a * v
    elif op == bpf.DIV:
        if v == 0:
            raise EmulationError(f"pc {pc}: division by zero")
        r = a // v
    elif op == bpf.MOD:
        if v == 0:
            raise EmulationError(f"pc {pc}: modulo by zero")
        r = a % v
    elif op == bpf.OR:
        r = a | v
    elif op == bpf.AND:
        r = a & v
    elif op == bpf.XOR:
        r = a ^ v
    elif op == bpf.LSH:
        r = a << v if v < 32 else 0
    elif op == bpf.RSH:
        r = a >> v if v < 32 else 0
    elif op == bpf.NEG:
        r = -a
    else:
        raise EmulationError(f"pc {pc}: unsupported alu {code:#x}")
    return r & 0xFFFFFFFF


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
