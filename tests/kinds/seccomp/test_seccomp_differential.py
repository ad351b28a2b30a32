"""Differential test: our filter and libseccomp 2.5.4's (built from the same resolved
profile the way runc builds it) must give the same verdict for every syscall number
of every ABI in the filter, out-of-range and x32 numbers, foreign arches, and argument
vectors around every comparison boundary. Both filters run in our emulator, which
test_seccomp_kernel.py checks against the real kernel.

Documented exclusions (each is a place where libseccomp 2.5.4 is wrong, asserted
separately below so the exclusion cannot hide anything else):

* LIBSECCOMP_254_UNKNOWN: syscalls newer than libseccomp 2.5.4's tables (Linux 6.7).
  runc skips names libseccomp cannot resolve, so with libseccomp these calls get the
  default errno even though the profile allows them (docker-library/official-images#16829);
  we know them, so they get the profile's action.
* LIBSECCOMP_254_X32_GAPS: names 2.5.4 knows on x86_64 but not in its x32 table.
* 32-bit arguments with a non-zero high word: libseccomp compares all 64 bits of e.g.
  personality's `unsigned int` or socket's `int family`, so `personality((long)-1)`
  fails the `== 0xffffffff` rule (libseccomp#69) and `socket(0xffffffff00000026)` --
  AF_ALG to the kernel, which truncates -- passes Docker's `family > 40` rule. We
  compare the low word, what the kernel uses; the test asserts our verdict equals the
  verdict for the truncated value.
"""

from __future__ import annotations

import pytest

from bpfpolicy.kinds.seccomp import bpf, emulator, libseccomp_ref
from bpfpolicy.kinds.seccomp.api import compile_profile
from bpfpolicy.kinds.seccomp.model import arg_bits
from bpfpolicy.kinds.seccomp.resolve import Target
from bpfpolicy.syscalls.tables import TABLES

from helpers.seccomp import (
    AUDIT_AARCH64,
    AUDIT_I386,
    AUDIT_X86_64,
    U32,
    corpus_profile,
    vectors_for,
)

LIBSECCOMP_254_UNKNOWN = frozenset({
    # docs/upstream.md §3.3: in Docker's default profile with the default capabilities
    "getxattrat", "listmount", "listxattrat", "mseal", "removexattrat", "riscv_hwprobe",
    "setxattrat", "statmount", "uretprobe",
    # Linux 6.8 LSM syscalls, allowed by Docker's profile with CAP_SYS_ADMIN
    "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr",
})
# libseccomp 2.5.4 resolves these on x86_64 but its x32 table lacks them (Linux 6.6's
# map_shadow_stack): with libseccomp an x32 caller gets the default for them.
LIBSECCOMP_254_X32_GAPS = frozenset({"map_shadow_stack"})
ABI_AUDIT = {"x86_64": AUDIT_X86_64, "i386": AUDIT_I386, "x32": AUDIT_X86_64}
EXTRA_NRS = [-1 & U32, 0xFFFFFFFE, 0x7FFFFFFF, 0x3FFFFFFF, 0x40000000 - 1, 0x40000000 + 13,
             0x40000000 + 1000, 0x50000000, 471, 500, 1000, 4096, 0x80000000]

pytestmark = pytest.mark.skipif(not libseccomp_ref.available(),
                                reason="python3-seccomp (libseccomp 2.5.4 bindings) not installed")


def _narrow_hi(name: str, abi: str, vec: tuple[int, ...]) -> bool:
    """libseccomp compares all 64 bits; the kernel (and we) only the bits the handler
    declares (generated from the kernel's prototypes): vectors with bits set above an
    argument's width are where libseccomp is wrong."""
    return any(vec[i] >> arg_bits(abi, name, i) for i in range(6))


@pytest.mark.parametrize("profile_name", ["moby-profiles-default.json", "containers-common-seccomp.json"])
@pytest.mark.parametrize("caps", [None, ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_BPF", "CAP_PERFMON"]])
def test_verdicts_equal_libseccomp(profile_name: str, caps: list[str] | None) -> None:
    cp = compile_profile(corpus_profile(profile_name), Target.make("x86_64", caps, (6, 18)))
    ref = libseccomp_ref.build(cp.profile)
    assert ref.skipped_names <= LIBSECCOMP_254_UNKNOWN, ref.skipped_names - LIBSECCOMP_254_UNKNOWN
    theirs = bpf.unpack(ref.filter_bytes)
    ours = cp.insns
    compared = excluded = 0
    seen: set[tuple[int, int]] = set()
    for abi in ("x86_64", "i386", "x32"):
        audit = ABI_AUDIT[abi]
        for name, nr in sorted(TABLES[abi].items(), key=lambda kv: kv[1]):
            seen.add((audit, nr))
            rules = [r for r in cp.profile["syscalls"] if name in r["names"]]
            for vec in vectors_for(rules):
                data = emulator.SeccompData(nr, audit, vec)
                a, b = emulator.run(ours, data).ret, emulator.run(theirs, data).ret
                if name in ref.skipped_names or _narrow_hi(name, abi, vec) or \
                        (abi == "x32" and name in LIBSECCOMP_254_X32_GAPS):
                    excluded += 1
                    continue
                assert a == b, (abi, name, nr, [hex(v) for v in vec], bpf.describe_ret(a), bpf.describe_ret(b))
                compared += 1
    # every other number: gaps in the tables, out of range, x32 half, nr -1
    others = [n for n in range(0, 600) if (AUDIT_X86_64, n) not in seen] + EXTRA_NRS
    for audit in (AUDIT_X86_64, AUDIT_I386, AUDIT_AARCH64, 0x40000028, 0):
        for nr in others if audit in (AUDIT_X86_64, AUDIT_I386) else [0, 39, 110, 0xFFFFFFFF]:
            if (audit, nr) in seen:
                continue
            data = emulator.SeccompData(nr, audit)
            a, b = emulator.run(ours, data).ret, emulator.run(theirs, data).ret
            assert a == b, (hex(audit), hex(nr), bpf.describe_ret(a), bpf.describe_ret(b))
            compared += 1
    assert compared > 1500 and excluded < compared / 5


def test_excluded_cases_are_what_the_docs_say() -> None:
    """The exclusions above, checked for what they are."""
    cp = compile_profile(corpus_profile("moby-profiles-default.json"), Target.make("x86_64", None, (6, 18)))
    ref = libseccomp_ref.build(cp.profile)
    theirs = bpf.unpack(ref.filter_bytes)
    x64 = TABLES["x86_64"]

    def both(name: str, *args: int) -> tuple[int, int]:
        data = emulator.SeccompData(x64[name], AUDIT_X86_64, tuple(args) + (0,) * (6 - len(args)))
        return emulator.run(cp.insns, data).ret, emulator.run(theirs, data).ret

    # newer than libseccomp 2.5.4: Docker allows mseal, libseccomp's build gives EPERM
    assert both("mseal") == (bpf.RET_ALLOW, bpf.RET_ERRNO | 1)
    # personality((long)-1): kernel sees 0xffffffff (query), Docker allows it
    assert both("personality", 0xFFFFFFFFFFFFFFFF) == (bpf.RET_ALLOW, bpf.RET_ERRNO | 1)
    # socket(AF_ALG) with garbage in the high word: libseccomp lets it through
    assert both("socket", 0xFFFFFFFF00000026) == (bpf.RET_ERRNO | 1, bpf.RET_ALLOW)
    assert both("socket", 38) == (bpf.RET_ERRNO | 1, bpf.RET_ERRNO | 1)
    # x32 table gap in libseccomp 2.5.4
    import seccomp

    for name in LIBSECCOMP_254_X32_GAPS:
        assert seccomp.resolve_syscall(seccomp.Arch.X32, name) < 0 <= seccomp.resolve_syscall(0, name)
    # and for the truncated values both agree
    a, b = both("personality", 0xFFFFFFFF)
    assert a == b == bpf.RET_ALLOW


def test_we_are_cheaper_than_libseccomp() -> None:
    from bpfpolicy.kinds.seccomp import render

    cp = compile_profile(corpus_profile("moby-profiles-default.json"), Target.make("x86_64", None, (6, 18)))
    theirs = bpf.unpack(libseccomp_ref.build(cp.profile).filter_bytes)
    nrs = range(max(TABLES["x86_64"].values()) + 1)
    ours_st, theirs_st = render.stats(cp.insns, AUDIT_X86_64, nrs), render.stats(theirs, AUDIT_X86_64, nrs)
    assert theirs_st["insns"] == 1246  # docs/upstream.md §3.5, as measured upstream
    assert ours_st["insns"] < theirs_st["insns"]
    assert ours_st["mean_executed_allowed"] < theirs_st["mean_executed_allowed"]
    assert ours_st["worst_executed"] < theirs_st["worst_executed"]
    assert ours_st["cache_eligible"] >= theirs_st["cache_eligible"]
