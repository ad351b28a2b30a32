"""Real processes under real seccomp filters: the emulator agrees with the kernel, the
compiled Docker profile behaves as Docker's does, x32 is refused, and `bpfpolicy exec`
propagates exit codes. Seccomp needs no root (NO_NEW_PRIVS), only Linux."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bpfpolicy.kinds.seccomp import bpf, emulator, render
from bpfpolicy.kinds.seccomp.api import compile_profile
from bpfpolicy.kinds.seccomp.resolve import Target
from bpfpolicy.syscalls.tables import TABLES

from helpers.seccomp import AUDIT_X86_64, ROOT, corpus_profile, run_in_child, vectors_for

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                       reason="real-kernel seccomp tests are written for x86_64 Linux"),
]
X64 = TABLES["x86_64"]
# What the Python child itself needs between installing the filter and reporting back.
RUNTIME = ["read", "write", "close", "mmap", "munmap", "brk", "mprotect", "futex", "rt_sigaction",
           "rt_sigprocmask", "exit", "exit_group", "madvise", "sigaltstack", "fstat", "newfstatat",
           "getrandom", "clock_gettime", "ioctl", "gettid", "getpid"]
# Recent kernels (6.13+) pass uretprobe and uprobe through seccomp without running the
# filter ("seccomp: passthrough uretprobe systemcall without filtering"); called from
# outside a probe trampoline they raise SIGILL. No filter can decide them.
UNFILTERED = {"uretprobe", "uprobe"}
HARMLESS = {"getppid", "getpid", "gettid", "personality", "umask", "kill", "getpriority", "lseek",
            "getuid", "socket"}


def observed(ret: int, err: int) -> str:
    return f"errno={err}" if ret == -1 else "ok"


def expected(verdict: int) -> str:
    act = verdict & bpf.RET_ACTION_FULL
    if act == bpf.RET_ERRNO:
        return f"errno={verdict & bpf.RET_DATA}"
    return "ok" if act == bpf.RET_ALLOW else "signal"


def test_emulator_agrees_with_the_kernel() -> None:
    """Every x86_64 syscall number plus argument vectors around each comparison: the
    kernel's verdict (errno codes unique per rule) equals the emulator's."""
    rules = [{"names": RUNTIME + ["getppid", "getuid"], "action": "SCMP_ACT_ALLOW"},
             {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]},
             {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 61, "args": [{"index": 0, "value": 0x10000, "op": "SCMP_CMP_GT"}]},
             {"names": ["umask"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0xFFFFF000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
             {"names": ["kill"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
             {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 63, "args": [{"index": 1, "value": 31, "op": "SCMP_CMP_LE"}]},
             {"names": ["getpriority"], "action": "SCMP_ACT_ALLOW", "args": [
                 {"index": 0, "value": 3, "op": "SCMP_CMP_LT"}, {"index": 1, "value": 0x1234, "op": "SCMP_CMP_NE"}]},
             {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": 65, "args": [{"index": 1, "value": 0x100000000, "op": "SCMP_CMP_GE"}]},
             {"names": ["lseek"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 0x100000000, "op": "SCMP_CMP_LT"}]}]
    # every other syscall: its own errno (1000 + nr), so a wrong dispatch shows
    others = sorted((n for n in X64 if n not in HARMLESS and n not in RUNTIME and n not in UNFILTERED),
                    key=X64.get)
    rules += [{"names": [n], "action": "SCMP_ACT_ERRNO", "errnoRet": 1000 + X64[n]} for n in others]
    prof = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 99, "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": rules}
    cp = compile_profile(prof, Target.make("x86_64", None, (6, 18)))
    calls: list[tuple[int, tuple[int, ...]]] = [(X64[n], (0,) * 6) for n in others]
    calls += [(nr, (0,) * 6) for nr in (500, 1000, 0x3FFFFFFF)]
    for name in ("personality", "umask", "kill", "getpriority", "lseek", "getppid", "getuid"):
        for vec in vectors_for([r for r in rules if name in r["names"]]):
            if name == "kill" and vec[0] in (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF) and vec[1] not in (0,):
                vec = (0x7FFFFFFF,) + vec[1:]  # never signal our own process group
            calls.append((X64[name], vec if name != "lseek" else (0xFFFFFFFF,) + vec[1:]))
    results, sig = run_in_child(cp.filter_bytes, calls)
    assert sig is None and len(results) == len(calls)
    mismatches = []
    for (nr, args), (ret, err) in zip(calls, results, strict=True):
        verdict = emulator.run(cp.insns, emulator.SeccompData(nr, AUDIT_X86_64, args)).ret
        want = expected(verdict)
        got = observed(ret, err)
        if want == "ok":  # allowed: it ran; it may fail, but not with one of our codes
            if got.startswith("errno=") and (err >= 61 and err != 95 or err == 99):
                mismatches.append((nr, args, want, got))
        elif got != want:
            mismatches.append((nr, args, want, got))
    assert not mismatches, mismatches[:10]
    assert len(calls) > 400


def test_kill_actions_and_x32_bypass_in_the_kernel() -> None:
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["sync"], "action": "SCMP_ACT_KILL_THREAD"},
        {"names": ["sethostname"], "action": "SCMP_ACT_TRAP"}]}
    cp = compile_profile(prof, Target.make("x86_64", None, (6, 18)))
    for name in ("getcwd", "sync", "sethostname"):
        results, sig = run_in_child(cp.filter_bytes, [(X64["getppid"], ()), (X64[name], ())])
        assert sig == signal.SIGSYS and results == [], name
    # getppid through the x32 ABI: the filter refuses the x32 number (KILL_PROCESS)
    results, sig = run_in_child(cp.filter_bytes, [(X64["getppid"] | 0x40000000, ())])
    assert sig == signal.SIGSYS
    results, sig = run_in_child(cp.filter_bytes, [(X64["getppid"], ())])
    assert sig is None and results[0][0] == os.getpid()


def test_filter_flags_are_accepted_by_the_kernel() -> None:
    from bpfpolicy.kernel import seccomp as ks

    prof = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]}
    raw = compile_profile(prof, Target.make("x86_64", None, (6, 18))).filter_bytes
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ks.install(raw, ["TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SPEC_ALLOW"])
            os.write(w, json.dumps(ks.syscall(X64["getuid"])).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 1024)
    os.close(r)
    os.waitpid(pid, 0)
    assert json.loads(out) == [-1, 42]
    with pytest.raises(ValueError):
        ks.flag_bits(["NOPE"])


def test_docker_default_profile_in_a_real_process() -> None:
    cp = compile_profile(corpus_profile("moby-profiles-default.json"), Target.make("x86_64", None, (6, 18)))
    calls = [(X64["getppid"], ()), (X64["kexec_load"], ()), (X64["clone3"], ()),
             (X64["socket"], (38, 5, 0)), (X64["socket"], (1, 1, 0)),
             (X64["personality"], (0xFFFFFFFF,)), (X64["personality"], (0xFFFFFFFFFFFFFFFF,)),
             (X64["personality"], (7,)), (X64["mount"], ())]
    (ppid, e0), kexec, clone3, alg, unix, pq, pq64, p7, mount = run_in_child(cp.filter_bytes, calls)[0]
    assert ppid == os.getpid() and e0 == 0
    assert kexec == [-1, 1] and mount == [-1, 1] and alg == [-1, 1] and p7 == [-1, 1]
    assert clone3 == [-1, 38]  # ENOSYS so glibc falls back to clone (moby#42680)
    assert unix[0] >= 0 and pq[0] >= 0 and pq64[0] >= 0


def test_kernel_test_vectors_hold_on_this_kernel() -> None:
    """The kernel-test.txt lines the in-guest runner uses, run here."""
    cp = compile_profile(corpus_profile("moby-profiles-default.json"), Target.make("x86_64", None, (6, 18)))
    lines = render.kernel_test_vectors(cp).splitlines()[1:]
    for line in lines:
        _, nr_s, expect, *args = line.split()
        nr, argv = int(nr_s, 0), tuple(int(a, 0) for a in args)
        results, sig = run_in_child(cp.filter_bytes, [(nr, argv)])
        kind, _, val = expect.partition("=")
        if kind == "signal":
            assert sig == int(val), line
            continue
        if nr >= 0x40000000 and sig is None and results[0] == [-1, 38]:
            continue  # kernel without CONFIG_X86_X32_ABI: ENOSYS after the filter allowed it
        (ret, err), = results
        if kind == "errno":
            assert (ret, err) == (-1, int(val)), line
        else:
            assert not (ret == -1 and err == int(val)), line


def _bpfpolicy(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bpfpolicy", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=60)


def test_exec_propagates_exit_codes_and_enforces(tmp_path: Path) -> None:
    prof = tmp_path / "deny-mkdir.yaml"
    prof.write_text("apiVersion: bpfpolicy.io/v1\nkind: SeccompProfile\nmetadata: {name: deny-mkdir}\n"
                    "spec:\n  defaultAction: SCMP_ACT_ALLOW\n  syscalls:\n"
                    "    - names: [mkdir, mkdirat]\n      action: SCMP_ACT_ERRNO\n      errnoRet: 13\n")
    assert _bpfpolicy("exec", "--seccomp", str(prof), "--", "sh", "-c", "exit 3").returncode == 3
    r = _bpfpolicy("exec", "--seccomp", str(prof), "--", "mkdir", str(tmp_path / "d"))
    assert r.returncode == 1 and "Permission denied" in r.stderr and not (tmp_path / "d").exists()
    # by name from the state directory, compiled by `bpfpolicy compile`
    state = tmp_path / "state"
    comp = _bpfpolicy("compile", str(prof), "--out", str(tmp_path / "out"))
    assert comp.returncode == 0, comp.stdout + comp.stderr
    (state / "seccomp").mkdir(parents=True)
    (tmp_path / "out" / "SeccompProfile" / "deny-mkdir").rename(state / "seccomp" / "deny-mkdir")
    r = _bpfpolicy("exec", "--seccomp", "deny-mkdir", "--", "mkdir", str(tmp_path / "e"),
                   env={"BPFPOLICY_STATE_DIR": str(state)})
    assert r.returncode == 1 and "Permission denied" in r.stderr
    r = _bpfpolicy("exec", "--seccomp", str(state / "seccomp" / "deny-mkdir" / "filter.bin"), "--", "true")
    assert r.returncode == 0


def test_exec_refuses_a_bad_profile_without_running_the_command(tmp_path: Path) -> None:
    prof = tmp_path / "bad.yaml"
    prof.write_text("apiVersion: bpfpolicy.io/v1\nkind: SeccompProfile\nmetadata: {name: bad}\n"
                    "spec:\n  defaultAction: SCMP_ACT_ALLOW\n  syscalls:\n"
                    "    - names: [mkdri]\n      action: SCMP_ACT_ERRNO\n")
    marker = tmp_path / "ran"
    r = _bpfpolicy("exec", "--seccomp", str(prof), "--", "touch", str(marker))
    assert r.returncode == 1 and not marker.exists()
    assert f"{prof}:7:15:" in r.stderr and 'did you mean "mkdir"' in r.stderr


def test_kernel_verify_accepts_compiled_and_rejects_broken_filters() -> None:
    from bpfpolicy.kernel import seccomp as ks

    cp = compile_profile(corpus_profile("moby-profiles-default.json"), Target.make("x86_64", None, (6, 18)))
    assert ks.verify(cp.filter_bytes) is None
    # a jump past the end: seccomp_check_filter refuses it (EINVAL)
    broken = bpf.Insn(bpf.JMP | bpf.JEQ | bpf.K, 5, 0, 1).pack() + bpf.Insn(bpf.RET | bpf.K, k=bpf.RET_ALLOW).pack()
    err = ks.verify(broken)
    assert err is not None and "Invalid argument" in err
