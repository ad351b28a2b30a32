"""Host-safety of SeccompProfile and `bpfpolicy exec` (issues #10/#11, seccomp parts):
typos are errors, clone-vs-clone3 holes are named, any number of argument rules
compiles (or is refused with a located error), and `exec --seccomp NAME` only ever
means the installed profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpfpolicy.kinds.seccomp import bpf, emulator
from bpfpolicy.syscalls.tables import TABLES

from helpers.seccomp import AUDIT_X86_64, ROOT, run_in_child


def bp(*args: str, cwd: Path | str = ROOT, env: dict | None = None, user: bool = False) -> subprocess.CompletedProcess:
    pre = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if user else []
    return subprocess.run([*pre, sys.executable, "-m", "bpfpolicy", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=120)


def write_json(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return path


def line_of(path: Path, needle: str, nth: int = 0) -> int:
    lines = [i + 1 for i, t in enumerate(path.read_text().splitlines()) if needle in t]
    return lines[nth]


# ---------------------------------------------------------------------------- unknown names

UNKNOWN = [  # (case, file name, body, flags, exit code, severity, message)
    ("json-typo", "p.json", {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "opne"], "action": "SCMP_ACT_ALLOW"}]}, [], 1, "error", 'unknown syscall "opne" (did you mean "open"?)'),
    ("json-typo-lenient", "p.json", {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "opne"], "action": "SCMP_ACT_ALLOW"}]}, ["--lenient"], 0, "warning", "skipped (--lenient"),
    ("other-arch-name", "p.json", {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                                   "syscalls": [{"names": ["socketcall", "arm_fadvise64_64", "read"],
                                                 "action": "SCMP_ACT_ALLOW"}]}, [], 0, None, None),
    ("native-typo", "p.yaml", None, [], 1, "error", 'unknown syscall "opne" (did you mean "open"?)'),
]


@pytest.mark.parametrize("case,fname,body,flags,code,severity,message", UNKNOWN, ids=[c[0] for c in UNKNOWN])
def test_unknown_syscall_names(tmp_path: Path, case, fname, body, flags, code, severity, message) -> None:
    path = tmp_path / fname
    if body is None:
        path.write_text("apiVersion: bpfpolicy.io/v1\nkind: SeccompProfile\nmetadata: {name: p}\nspec:\n"
                        "  defaultAction: SCMP_ACT_ERRNO\n  syscalls:\n    - names: [read, opne]\n"
                        "      action: SCMP_ACT_ALLOW\n")
    else:
        write_json(path, body)
    r = bp("validate", *flags, str(path))
    out = r.stdout + r.stderr
    assert r.returncode == code, out
    assert "Traceback" not in out
    if message:
        line = line_of(path, "opne")
        hit = [ln for ln in out.splitlines() if message in ln]
        assert hit and hit[0].startswith(f"{path}:{line}:"), out
        assert severity in hit[0] or severity == "error", out
    else:
        assert "unknown syscall" not in out, out


# ---------------------------------------------------------------------------- clone / clone3

CLONE_FLAGS_RULE = {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ", "valueTwo": 0}]}
CLONE3 = [  # (case, rules, default, warned?, path the warning sits on)
    ("clone3-allowed-by-rule", [CLONE_FLAGS_RULE, {"names": ["clone3", "read"], "action": "SCMP_ACT_ALLOW"}],
     "SCMP_ACT_ERRNO", True, "syscalls[1].names[0]"),
    ("clone3-allowed-by-default", [{"names": ["clone"], "action": "SCMP_ACT_ERRNO",
                                    "args": [{"index": 0, "value": 0x10000000, "op": "SCMP_CMP_MASKED_EQ",
                                              "valueTwo": 0x10000000}]}],
     "SCMP_ACT_ALLOW", True, "defaultAction"),
    ("clone3-denied", [CLONE_FLAGS_RULE, {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
     "SCMP_ACT_KILL_PROCESS", False, None),
    ("clone-unrestricted", [{"names": ["clone", "clone3"], "action": "SCMP_ACT_ALLOW"}], "SCMP_ACT_ERRNO", False, None),
]


@pytest.mark.parametrize("case,rules,default,warned,where", CLONE3, ids=[c[0] for c in CLONE3])
def test_clone_flags_with_clone3_allowed_is_named(tmp_path: Path, case, rules, default, warned, where) -> None:
    path = write_json(tmp_path / "p.json", {"defaultAction": default, "syscalls": rules})
    r = bp("validate", str(path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    hits = [ln for ln in out.splitlines() if "clone is restricted by its flags" in ln]
    if not warned:
        assert not hits, out
        return
    clone_line = line_of(path, '"clone"')
    assert len(hits) == 1 and f": {where}:" in hits[0], out
    assert f"{path}:{clone_line}:" in hits[0].split(f": {where}:")[1], hits[0]  # the clone rule's file:line:col
    anchor = line_of(path, '"clone3"') if where.startswith("syscalls") else line_of(path, "defaultAction")
    assert hits[0].startswith(f"{path}:{anchor}:"), hits[0]


# ---------------------------------------------------------------------------- many argument rules


def ioctl_profile(n: int) -> dict:
    return {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [
        {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}] + [
        {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 1, "value": 0x5400 + k, "op": "SCMP_CMP_EQ"}]} for k in range(n)]}


@pytest.mark.parametrize("n", [256, 2000])
def test_many_ioctl_rules_compile_and_load(tmp_path: Path, n: int) -> None:
    from bpfpolicy.kernel import seccomp as ks

    path = write_json(tmp_path / "ioctls.json", ioctl_profile(n))
    r = bp("compile", str(path), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stdout + r.stderr
    raw = (tmp_path / "out" / "SeccompProfile" / "ioctls" / "filter.bin").read_bytes()
    prog = bpf.unpack(raw)
    assert len(prog) <= 4096 and ks.verify(raw) is None
    nr = TABLES["x86_64"]["ioctl"]
    for cmd, want in [(0x5400, bpf.RET_ALLOW), (0x5400 + n - 1, bpf.RET_ALLOW), (0x5400 + n // 2, bpf.RET_ALLOW),
                      (0x5400 + n, bpf.RET_ERRNO | 1), (0x53FF, bpf.RET_ERRNO | 1),
                      ((1 << 32) | (0x5400 + n), bpf.RET_ERRNO | 1)]:
        assert emulator.run(prog, emulator.SeccompData(nr, AUDIT_X86_64, (0, cmd))).ret == want, hex(cmd)
    # the running kernel agrees on the last rule (farthest from the dispatch)
    results, sig = run_in_child(raw, [(nr, (2**31 - 1, 0x5400 + n - 1)), (nr, (0, 0x5400 + n))])
    assert sig is None and results == [[-1, 9], [-1, 1]]  # EBADF: allowed and ran; EPERM: denied


def test_too_many_rules_is_a_located_error(tmp_path: Path) -> None:
    path = write_json(tmp_path / "huge.json", ioctl_profile(5000))
    r = bp("compile", str(path), "--out", str(tmp_path / "out"))
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out
    line = line_of(path, '"syscalls"')
    assert f"{path}:{line}:" in out and "BPF_MAXINSNS" in out and "4096" in out, out


# ---------------------------------------------------------------------------- exec NAME vs path

DENY_MKDIR = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
DENY_TOUCH = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["utimensat", "futimesat", "utimes", "utime"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30}]}


@pytest.fixture()
def installed(tmp_path: Path) -> tuple[Path, Path]:
    """state dir with web-api (denies mkdir) installed; a cwd holding a file `web-api`
    that denies something else."""
    src = write_json(tmp_path / "web-api.json", DENY_MKDIR)
    r = bp("compile", str(src), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stdout + r.stderr
    state = tmp_path / "state"
    (state / "seccomp").mkdir(parents=True)
    (tmp_path / "out" / "SeccompProfile" / "web-api").rename(state / "seccomp" / "web-api")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    write_json(cwd / "web-api", DENY_TOUCH)
    return state, cwd


EXEC = [  # (case, PROFILE, command, exit code, stderr contains)
    ("name-is-the-installed-profile", "web-api", ["mkdir", "d1"], 1, "Permission denied"),
    ("name-ignores-the-cwd-file", "web-api", ["touch", "t1"], 0, ""),
    ("dot-slash-is-the-file", "./web-api", ["touch", "t2"], 1, "Read-only file system"),
    ("dot-slash-file-allows-mkdir", "./web-api", ["mkdir", "d2"], 0, ""),
    ("unknown-name-hints-the-path", "api", ["true"], 1, 'no compiled profile of that name'),
]


@pytest.mark.parametrize("case,profile,cmd,code,err", EXEC, ids=[c[0] for c in EXEC])
def test_exec_name_versus_path(installed, case, profile, cmd, code, err) -> None:
    state, cwd = installed
    r = bp("exec", "--seccomp", profile, "--", *cmd, cwd=cwd, env={"BPFPOLICY_STATE_DIR": str(state)})
    assert r.returncode == code, r.stderr
    assert err in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_exec_bare_name_of_a_cwd_file_is_not_the_file(installed) -> None:
    state, cwd = installed
    (cwd / "mine").write_text((cwd / "web-api").read_text())
    r = bp("exec", "--seccomp", "mine", "--", "true", cwd=cwd, env={"BPFPOLICY_STATE_DIR": str(state)})
    assert r.returncode == 1 and 'write "./mine"' in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_exec_as_non_root_gets_a_message_not_a_traceback(installed) -> None:
    state, _cwd = installed
    os.chmod(state, 0o700)
    marker = Path("/tmp") / f"bpfpolicy-exec-nobody-{os.getpid()}"
    r = bp("exec", "--seccomp", "web-api", "--", "touch", str(marker), cwd="/",
           env={"BPFPOLICY_STATE_DIR": str(state)}, user=True)
    assert r.returncode == 1 and not marker.exists(), r.stderr
    assert r.stderr.startswith('bpfpolicy exec: seccomp profile "web-api":') and "needs root" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
