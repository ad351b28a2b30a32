"""Shared helpers for the seccomp tests: corpus profiles, a reference evaluator of
profile semantics (independent of the compiler), boundary argument vectors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bpfpolicy.kinds.seccomp import bpf
from bpfpolicy.kinds.seccomp.arch import ACTIONS, EPERM
from bpfpolicy.kinds.seccomp.model import arg_bits

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus" / "seccomp"
U64 = (1 << 64) - 1
U32 = 0xFFFFFFFF
AUDIT_X86_64, AUDIT_I386, AUDIT_AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7


def corpus_profile(name: str) -> dict[str, Any]:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"seccomp corpus file not found: {path} (../shared/corpus beside the repo)")
    return json.loads(path.read_text())


def action_of(rule_or_profile: dict[str, Any], default: bool = False) -> int:
    act = rule_or_profile["defaultAction" if default else "action"]
    base = ACTIONS[act]
    if base in (bpf.RET_ERRNO, bpf.RET_TRACE):
        key = "defaultErrnoRet" if default else "errnoRet"
        data = rule_or_profile.get(key)
        return base | (EPERM if data is None else int(data))
    return base


def cond_holds(arg: dict[str, Any], args: tuple[int, ...], syscall: str, abi: str) -> bool:
    """OCI comparison on the value the kernel uses (the low bits of a narrow argument)."""
    i, op = int(arg["index"]), arg["op"]
    mask = (1 << arg_bits(abi, syscall, i)) - 1
    a = args[i] & mask
    v = int(arg.get("value", 0)) & mask
    if op == "SCMP_CMP_MASKED_EQ":
        return (a & v) == (int(arg.get("valueTwo", 0)) & mask)
    return {"SCMP_CMP_EQ": a == v, "SCMP_CMP_NE": a != v, "SCMP_CMP_LT": a < v,
            "SCMP_CMP_LE": a <= v, "SCMP_CMP_GT": a > v, "SCMP_CMP_GE": a >= v}[op]


def reference_verdict(profile: dict[str, Any], syscall: str, abi: str, args: tuple[int, ...]) -> int:
    """What the profile means, written from the documented semantics (docs/seccomp.md):
    the first argument-free rule decides; otherwise argument rules are a union and the
    most restrictive matching action wins; rules equal to the default are dropped; a
    repeated argument index splits a rule into ORed rules."""
    default = action_of(profile, default=True)
    matched = []
    for rule in profile.get("syscalls") or []:
        if syscall in rule["names"] and not rule.get("args") and action_of(rule) != default:
            return action_of(rule)  # the first argument-free rule decides
    for rule in profile.get("syscalls") or []:
        if syscall not in rule["names"]:
            continue
        act = action_of(rule)
        if act == default:
            continue
        conds = rule.get("args") or []
        idx = [int(c["index"]) for c in conds]
        groups = [[c] for c in conds] if len(set(idx)) < len(idx) else [conds]
        for g in groups:
            if all(cond_holds(c, args, syscall, abi) for c in g):
                matched.append(act)
    return min(matched, key=bpf.action_precedence) if matched else default


def boundary_values(arg: dict[str, Any]) -> Iterator[int]:
    """Values around a comparison: v-1, v, v+1, both sign-extension forms, mask bits."""
    v = int(arg.get("value", 0)) & U64
    base = {0, 1, v, (v - 1) & U64, (v + 1) & U64, v & U32, v | 0xFFFFFFFF00000000,
            (v & U32) - (1 << 32) & U64 if v & 0x80000000 else v, U32, U64, 0x100000000 | (v & U32)}
    if arg["op"] == "SCMP_CMP_MASKED_EQ":
        d = int(arg.get("valueTwo", 0)) & U64
        base |= {d, d | (v & -v & U64), d | (~v & U64), v}
    yield from sorted(base)


def vectors_for(rules: list[dict[str, Any]]) -> list[tuple[int, ...]]:
    """Zero args, plus for every compared argument each boundary value (others zero),
    plus pairs for rules comparing two arguments."""
    out = {(0,) * 6}
    for rule in rules:
        conds = rule.get("args") or []
        for c in conds:
            for val in boundary_values(c):
                vec = [0] * 6
                vec[int(c["index"])] = val
                out.add(tuple(vec))
        if len(conds) >= 2:
            a, b = conds[0], conds[1]
            for va in boundary_values(a):
                for vb in boundary_values(b):
                    vec = [0] * 6
                    vec[int(a["index"])] = va
                    vec[int(b["index"])] = vb
                    out.add(tuple(vec))
    return sorted(out)


def run_in_child(filter_bytes: bytes, calls: list[tuple[int, tuple[int, ...]]]) -> tuple[list, int | None]:
    """Install the filter in a forked child, make `calls` as raw syscalls (64-bit
    registers, high words as given), return ([(ret, errno)], killing signal or None)."""
    import json
    import os

    from bpfpolicy.kernel import seccomp as ks

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: nothing but the calls, then report
        try:
            os.close(r)
            ks.install(filter_bytes)
            out = [ks.syscall(nr, *args) for nr, args in calls]
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 1 << 16):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return (json.loads(b"".join(chunks)) if chunks else []), sig
