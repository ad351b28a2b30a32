"""Classic BPF instructions as seccomp sees them: encoding, decoding, disassembly.

`struct sock_filter` is `{u16 code; u8 jt; u8 jf; u32 k}` -- 8 bytes, native endian;
every architecture we target is little-endian, so the byte format is fixed here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# instruction classes and fields (linux/bpf_common.h)
LD, LDX, ST, STX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0)
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X = 0x00, 0x08
A = 0x10  # BPF_RET | BPF_A
TAX, TXA = 0x00, 0x80

# seccomp return values (linux/seccomp.h)
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
RET_ACTION_FULL = 0xFFFF0000
RET_DATA = 0x0000FFFF

# struct seccomp_data offsets
OFF_NR, OFF_ARCH, OFF_IP = 0, 4, 8


def off_arg(index: int, hi: bool) -> int:
    """Offset of the low or high 32-bit word of args[index] (little-endian)."""
    return 16 + 8 * index + (4 if hi else 0)


@dataclass(frozen=True)
class Insn:
    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0

    def pack(self) -> bytes:
        return struct.pack("<HBBI", self.code, self.jt, self.jf, self.k & 0xFFFFFFFF)


def pack(prog: list[Insn]) -> bytes:
    return b"".join(i.pack() for i in prog)


def unpack(raw: bytes) -> list[Insn]:
    if len(raw) % 8:
        raise ValueError(f"filter is {len(raw)} bytes: not a multiple of 8 (struct sock_filter)")
    return [Insn(*struct.unpack_from("<HBBI", raw, o)) for o in range(0, len(raw), 8)]


def action_precedence(ret: int) -> int:
    """Sort key: lower = more restrictive (the kernel's rule across stacked filters:
    `(s32)action` compared, KILL_PROCESS being negative)."""
    act = ret & RET_ACTION_FULL
    signed = act - (1 << 32) if act & 0x80000000 else act
    return (signed << 16) | (ret & RET_DATA)


def describe_ret(k: int) -> str:
    act, data = k & RET_ACTION_FULL, k & RET_DATA
    names = {RET_KILL_PROCESS: "KILL_PROCESS", RET_KILL_THREAD: "KILL_THREAD", RET_TRAP: "TRAP",
             RET_ERRNO: "ERRNO", RET_USER_NOTIF: "NOTIFY", RET_TRACE: "TRACE", RET_LOG: "LOG",
             RET_ALLOW: "ALLOW"}
    name = names.get(act, f"{act:#x}")
    if act in (RET_ERRNO, RET_TRACE, RET_TRAP) and (data or act == RET_ERRNO):
        return f"{name}({data})"
    return name


def disasm_one(i: Insn, pc: int) -> str:
    """One instruction in the style of `bpf_dbg`/libseccomp's pfc: op, operands, targets."""
    cls = i.code & 0x07
    if cls == RET:
        return "ret A" if i.code & A else f"ret #{i.k:#x}  ; {describe_ret(i.k)}"
    if cls in (LD, LDX):
        reg = "ld" if cls == LD else "ldx"
        mode = i.code & 0xE0
        if mode == ABS:
            return f"{reg} [{i.k}]"
        if mode == IMM:
            return f"{reg} #{i.k:#x}"
        if mode == MEM:
            return f"{reg} M[{i.k}]"
        if mode == LEN:
            return f"{reg} #len"
        return f"{reg} code={i.code:#x} k={i.k:#x}"
    if cls in (ST, STX):
        return f"{'st' if cls == ST else 'stx'} M[{i.k}]"
    if cls == ALU:
        ops = {ADD: "add", SUB: "sub", MUL: "mul", DIV: "div", OR: "or", AND: "and", LSH: "lsh",
               RSH: "rsh", NEG: "neg", MOD: "mod", XOR: "xor"}
        op = ops.get(i.code & 0xF0, "alu?")
        return f"{op} x" if i.code & X else (op if op == "neg" else f"{op} #{i.k:#x}")
    if cls == JMP:
        op = i.code & 0xF0
        if op == JA:
            return f"ja {pc + 1 + i.k}"
        name = {JEQ: "jeq", JGT: "jgt", JGE: "jge", JSET: "jset"}.get(op, "j?")
        src = "x" if i.code & X else f"#{i.k:#x}"
        return f"{name} {src}, {pc + 1 + i.jt}, {pc + 1 + i.jf}"
    if cls == MISC:
        return "tax" if (i.code & 0xF8) == TAX else "txa"
    return f".word code={i.code:#x} jt={i.jt} jf={i.jf} k={i.k:#x}"
