"""The compiler against the documented semantics, instruction by instruction in the
emulator: verdicts, costs, cache eligibility, long jumps, the x32 bypass."""

from __future__ import annotations

import random

import pytest

from bpfpolicy.kinds.seccomp import bpf, emulator, render
from bpfpolicy.kinds.seccomp.api import compile_profile
from bpfpolicy.kinds.seccomp.bpf import Insn
from bpfpolicy.kinds.seccomp.resolve import Target
from bpfpolicy.syscalls.tables import TABLES

from helpers.seccomp import (
    AUDIT_AARCH64,
    AUDIT_I386,
    AUDIT_X86_64,
    corpus_profile,
    reference_verdict,
    vectors_for,
)

TARGET = Target.make("x86_64", None, (6, 18))
OPS = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
       "SCMP_CMP_MASKED_EQ"]


def run(cp, nr: int, args=(0,) * 6, arch: int = AUDIT_X86_64) -> emulator.Result:
    return emulator.run(cp.insns, emulator.SeccompData(nr, arch, tuple(args)))


def check_against_reference(profile: dict, target: Target = TARGET) -> int:
    cp = compile_profile(profile, target)
    resolved = cp.profile
    checked = 0
    oci = {"x86_64": "SCMP_ARCH_X86_64", "i386": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32",
           "aarch64": "SCMP_ARCH_AARCH64"}
    for abi, audit in (("x86_64", AUDIT_X86_64), ("i386", AUDIT_I386), ("x32", AUDIT_X86_64),
                       ("aarch64", AUDIT_AARCH64)):
        if oci[abi] not in resolved["architectures"]:
            continue
        for name, nr in TABLES[abi].items():
            rules = [r for r in resolved["syscalls"] if name in r["names"]]
            for vec in vectors_for(rules):
                got = run(cp, nr, vec, audit).ret
                want = reference_verdict(resolved, name, abi, vec)
                assert got == want, (abi, name, [hex(v) for v in vec], bpf.describe_ret(got), bpf.describe_ret(want))
                checked += 1
    return checked


@pytest.mark.parametrize("name", ["moby-profiles-default.json", "containers-common-seccomp.json",
                                  "moby-profiles-fixture-example.json",
                                  "moby-profiles-fixture-conditional_include.json"])
def test_corpus_profiles_match_reference_semantics(name: str) -> None:
    assert check_against_reference(corpus_profile(name)) >= len(TABLES["x86_64"])


def _random_profile(rng: random.Random) -> dict:
    names = rng.sample(sorted(TABLES["x86_64"]), 40) + ["personality", "socket", "ioctl", "mmap"]
    rules = []
    for _ in range(30):
        action = rng.choice(["SCMP_ACT_ALLOW"] * 4 + ["SCMP_ACT_ERRNO", "SCMP_ACT_TRAP", "SCMP_ACT_LOG",
                                                      "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRACE"])
        rule = {"names": rng.sample(names, rng.randint(1, 4)), "action": action}
        if action in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE") and rng.random() < 0.7:
            rule["errnoRet"] = rng.randint(1, 200)
        if rng.random() < 0.6:
            rule["args"] = []
            for _ in range(rng.randint(1, 3)):
                op = rng.choice(OPS)
                value = rng.choice([0, 1, 38, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000,
                                    0xFFFFFFFF00000000, 0xFFFFFFFFFFFFFFFF, rng.getrandbits(64), -1, -100])
                arg = {"index": rng.randint(0, 5), "op": op, "value": value}
                if op == "SCMP_CMP_MASKED_EQ":
                    arg["valueTwo"] = value & rng.getrandbits(64) if value >= 0 else 0
                rule["args"].append(arg)
        rules.append(rule)
    return {"defaultAction": rng.choice(["SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW", "SCMP_ACT_KILL_PROCESS"]),
            "defaultErrnoRet": 7, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": rules}


@pytest.mark.parametrize("seed", range(12))
def test_random_profiles_match_reference_semantics(seed: int) -> None:
    prof = _random_profile(random.Random(seed))
    if prof["defaultAction"] != "SCMP_ACT_ERRNO":
        prof.pop("defaultErrnoRet")
    if seed % 3 == 0:  # an arm64 host: aarch64 native, x86 ABIs foreign
        prof["architectures"] = ["SCMP_ARCH_AARCH64"]
        prof["syscalls"] = [dict(r, names=[n for n in r["names"] if n in TABLES["aarch64"]] or ["openat"])
                            for r in prof["syscalls"]]
        cp = compile_profile(prof, Target.make("aarch64", None, (6, 18)))
        assert run(cp, 110, arch=AUDIT_X86_64).ret == bpf.RET_KILL_PROCESS
        assert check_against_reference(prof, Target.make("aarch64", None, (6, 18))) > 0
        return
    assert check_against_reference(prof) > 0


def test_docker_default_cost_targets_and_cache() -> None:
    cp = compile_profile(corpus_profile("moby-profiles-default.json"), TARGET)
    nrs = range(max(TABLES["x86_64"].values()) + 1)
    st = render.stats(cp.insns, AUDIT_X86_64, nrs)
    assert st["mean_executed_allowed"] <= 10, st
    assert st["worst_executed"] <= 16, st
    # worst over every ABI and the argument-filtered calls too
    worst = 0
    for abi, audit in (("x86_64", AUDIT_X86_64), ("i386", AUDIT_I386), ("x32", AUDIT_X86_64)):
        for name, nr in TABLES[abi].items():
            rules = [r for r in cp.profile["syscalls"] if name in r["names"]]
            for vec in vectors_for(rules):
                worst = max(worst, run(cp, nr, vec, audit).executed)
    assert worst <= 16
    # every argument-free allowed x86_64 syscall is cache-eligible; no others are
    cached = emulator.cacheable(cp.insns, AUDIT_X86_64, nrs)
    arg_free_allowed = set()
    for nr in nrs:
        r = run(cp, nr)
        name = next((n for n, v in TABLES["x86_64"].items() if v == nr), None)
        has_args = any(name in rule["names"] and rule.get("args") for rule in cp.profile["syscalls"])
        if r.ret == bpf.RET_ALLOW and not has_args:
            arg_free_allowed.add(nr)
    assert cached == arg_free_allowed
    assert len(cached) >= 300


def test_architecture_check_and_x32_bypass() -> None:
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33}]}
    cp = compile_profile(prof, TARGET)
    assert run(cp, 110).ret == bpf.RET_ERRNO | 33
    assert run(cp, 39).ret == bpf.RET_ALLOW
    # the same call through the x32 ABI would skip a naive number check: refused
    assert run(cp, 110 | 0x40000000).ret == bpf.RET_KILL_PROCESS
    assert run(cp, 0x7FFFFFFF).ret == bpf.RET_KILL_PROCESS
    assert run(cp, 0xFFFFFFFF).ret == bpf.RET_ALLOW  # nr -1: a tracer's skip, gets the default
    assert run(cp, 20, arch=AUDIT_I386).ret == bpf.RET_KILL_PROCESS
    assert run(cp, 20, arch=AUDIT_AARCH64).ret == bpf.RET_KILL_PROCESS
    prof["architectures"].append("SCMP_ARCH_X32")
    cp = compile_profile(prof, TARGET)
    assert run(cp, 0x40000000 + TABLES["x32"]["getppid"] - 0x40000000).ret == bpf.RET_ERRNO | 33
    assert run(cp, 0x40000000 + 13).ret == bpf.RET_ALLOW  # not an x32 syscall: default


def test_sign_extension_of_32_bit_arguments() -> None:
    """personality takes an unsigned int: 4294967295 and -1 name the same value and
    match whether the caller zero- or sign-extended it (libseccomp#69)."""
    for value in (4294967295, -1):
        prof = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]}]}
        cp = compile_profile(prof, TARGET)
        nr = TABLES["x86_64"]["personality"]
        assert run(cp, nr, (0xFFFFFFFF,)).ret == bpf.RET_ALLOW
        assert run(cp, nr, (0xFFFFFFFFFFFFFFFF,)).ret == bpf.RET_ALLOW
        assert run(cp, nr, (0xFFFFFFFE,)).ret == bpf.RET_ERRNO | 1
    # a 64-bit argument (mmap's addr) keeps the two forms apart
    prof = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["mmap"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"}]}]}
    cp = compile_profile(prof, TARGET)
    assert run(cp, 9, (0xFFFFFFFF,)).ret == bpf.RET_ALLOW
    assert run(cp, 9, (0xFFFFFFFFFFFFFFFF,)).ret == bpf.RET_ERRNO | 1


def test_precedence_among_overlapping_rules() -> None:
    # argument rules only: union, the most restrictive matching action wins
    prof = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 0x6000, "op": "SCMP_CMP_LT"}]},
        {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 25,
         "args": [{"index": 1, "value": 0x5412, "op": "SCMP_CMP_EQ"}]},  # TIOCSTI
        {"names": ["ioctl"], "action": "SCMP_ACT_KILL_PROCESS",
         "args": [{"index": 1, "value": 0x541D, "op": "SCMP_CMP_EQ"}]},
    ]}
    cp = compile_profile(prof, TARGET)
    assert run(cp, 16, (0, 0x5412)).ret == bpf.RET_ERRNO | 25
    assert run(cp, 16, (0, 0x541D)).ret == bpf.RET_KILL_PROCESS
    assert run(cp, 16, (0, 0x5401)).ret == bpf.RET_ALLOW
    assert run(cp, 16, (0, 0x7000)).ret == bpf.RET_ERRNO | 1
    # an argument-free rule decides its syscall; the first one wins (libseccomp 2.5.4)
    prof = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
        {"names": ["setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["setns", "getppid"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    ]}
    cp = compile_profile(prof, TARGET)
    assert run(cp, TABLES["x86_64"]["setns"]).ret == bpf.RET_ALLOW
    assert run(cp, 110).ret == bpf.RET_ALLOW


def test_long_jumps_get_trampolines() -> None:
    # 120 syscalls, each with its own argument check: subtrees far beyond 255 insns
    names = sorted(TABLES["x86_64"], key=TABLES["x86_64"].get)[:120]
    prof = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": [n], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": i * 3 + 1, "op": "SCMP_CMP_GT"}, {"index": 1, "value": i, "op": "SCMP_CMP_NE"}]}
        for i, n in enumerate(names)]}
    cp = compile_profile(prof, TARGET)
    assert len(cp.insns) > 1000
    assert any(i.code == bpf.JMP | bpf.JA for i in cp.insns)
    assert check_against_reference(prof) > 0


def test_emulator_basics_and_cache_port() -> None:
    prog = [Insn(bpf.LD | bpf.W | bpf.ABS, k=0), Insn(bpf.JMP | bpf.JEQ | bpf.K, 0, 1, 39),
            Insn(bpf.RET | bpf.K, k=bpf.RET_ALLOW), Insn(bpf.LD | bpf.W | bpf.ABS, k=16),
            Insn(bpf.ALU | bpf.ADD | bpf.K, k=1), Insn(bpf.JMP | bpf.JSET | bpf.K, 0, 1, 1),
            Insn(bpf.RET | bpf.A), Insn(bpf.RET | bpf.K, k=bpf.RET_ERRNO | 5)]
    assert emulator.run(prog, emulator.SeccompData(39, AUDIT_X86_64)) == emulator.Result(bpf.RET_ALLOW, 3)
    assert emulator.run(prog, emulator.SeccompData(1, AUDIT_X86_64, (0x10,))).ret == 0x11
    assert emulator.run(prog, emulator.SeccompData(1, AUDIT_X86_64, (0x11,))).ret == bpf.RET_ERRNO | 5
    assert emulator.const_allow(prog, AUDIT_X86_64, 39)
    assert not emulator.const_allow(prog, AUDIT_X86_64, 1)  # reads args: not constant
    with pytest.raises(emulator.EmulationError):
        emulator.run([Insn(bpf.LD | bpf.W | bpf.ABS, k=2)], emulator.SeccompData(0, 0))


def test_outputs_round_trip() -> None:
    cp = compile_profile(corpus_profile("moby-profiles-default.json"), TARGET)
    raw = cp.filter_bytes
    assert len(raw) == 8 * len(cp.insns) and bpf.unpack(raw) == cp.insns
    text = render.disassemble(cp.compiled.program, "t")
    assert "getppid" in text or "getpid" in text
    assert "personality" in text and "AUDIT_ARCH" in text
    header = render.c_header("docker-default", cp.insns)
    assert f"docker_default_filter[{len(cp.insns)}]" in header and ".len =" in header
    vectors = render.kernel_test_vectors(cp).splitlines()
    assert vectors[0] == "seccomp filter.bin"
    assert "syscall 110 not-errno=1" in vectors
    assert any(v.startswith("syscall 0x4000006e ") for v in vectors)
    assert any(v.startswith("syscall 135 errno=1") for v in vectors)
    for line in vectors[1:]:
        parts = line.split()
        assert parts[0] == "syscall" and parts[2].split("=")[0] in ("errno", "signal", "not-errno")
