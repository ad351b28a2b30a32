"""Bad SeccompProfile input: every case exits 1 with a `file:line:col: path: message`
at the offending node; warnings (foreign-format leniency) keep exit 0."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

HEAD = "apiVersion: bpfpolicy.io/v1\nkind: SeccompProfile\nmetadata: {name: sc}\nspec:\n"
ERRNO_DEFAULT = HEAD + "  defaultAction: SCMP_ACT_ERRNO\n"


def rule(body: str) -> str:
    return ERRNO_DEFAULT + "  syscalls:\n    - names: [read]\n" + body


CASES = [
    ("unknown-syscall", "a.yaml", ERRNO_DEFAULT + "  syscalls:\n    - names: [read, getppdi]\n      action: SCMP_ACT_ALLOW\n",
     7, "spec.syscalls[0].names[1]", 'unknown syscall "getppdi" (did you mean "getppid"?)'),
    ("bad-action", "a.yaml", rule("      action: SCMP_ACT_ALOW\n"), 8, "spec.syscalls[0].action", 'did you mean "SCMP_ACT_ALLOW"'),
    ("arg-index", "a.yaml", rule("      action: SCMP_ACT_ALLOW\n      args:\n        - {index: 7, value: 1, op: SCMP_CMP_EQ}\n"),
     10, "spec.syscalls[0].args[0].index", "out of range"),
    ("masked-eq-no-valuetwo", "a.yaml", rule("      action: SCMP_ACT_ALLOW\n      args:\n        - {index: 0, value: 0xff, op: SCMP_CMP_MASKED_EQ}\n"),
     10, "spec.syscalls[0].args[0]", "needs valueTwo"),
    ("errnoret-on-allow", "a.yaml", rule("      action: SCMP_ACT_ALLOW\n      errnoRet: 13\n"),
     9, "spec.syscalls[0].errnoRet", "cannot return an errno"),
    ("default-errno-on-allow", "a.yaml", HEAD + "  defaultAction: SCMP_ACT_ALLOW\n  defaultErrnoRet: 1\n",
     6, "spec.defaultErrnoRet", "cannot return an errno"),
    ("bad-operator", "a.yaml", rule("      action: SCMP_ACT_ALLOW\n      args:\n        - {index: 0, value: 1, op: SCMP_CMP_EQQ}\n"),
     10, "spec.syscalls[0].args[0].op", 'did you mean "SCMP_CMP_EQ"'),
    ("min-kernel-zero", "a.yaml", rule("      action: SCMP_ACT_ALLOW\n      includes: {minKernel: '0.0'}\n"),
     9, "spec.syscalls[0].includes.minKernel", '"0.0"'),
    ("archmap-and-architectures", "a.json",
     '{"defaultAction": "SCMP_ACT_ERRNO",\n "architectures": ["SCMP_ARCH_X86_64"],\n'
     ' "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}\n', 2, "architectures", "mutually exclusive"),
    ("unknown-errno-name", "a.json",
     '{"defaultAction": "SCMP_ACT_ERRNO",\n "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO",\n'
     '   "errno": "EPREM"}]}\n', 3, "syscalls[0].errno", 'unknown errno name "EPREM"'),
    ("unknown-arch", "a.json", '{"defaultAction": "SCMP_ACT_ERRNO",\n "architectures": ["SCMP_ARCH_X86_65"]}\n',
     2, "architectures[0]", "SCMP_ARCH_X86_64"),
    ("name-and-names", "a.json",
     '{"defaultAction": "SCMP_ACT_ERRNO",\n "syscalls": [\n  {"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}\n',
     3, "syscalls[0].name", '"name" and "names"'),
    ("value-too-big", "a.yaml", rule("      action: SCMP_ACT_ALLOW\n      args:\n        - {index: 0, value: 18446744073709551616, op: SCMP_CMP_EQ}\n"),
     10, "spec.syscalls[0].args[0].value", "out of range"),
    ("notify-default", "a.yaml", HEAD + "  defaultAction: SCMP_ACT_NOTIFY\n", 5, "spec.defaultAction", "NOTIFY"),
    ("missing-spec", "a.yaml", "apiVersion: bpfpolicy.io/v1\nkind: SeccompProfile\nmetadata: {name: sc}\n",
     1, "$", 'missing required field "spec"'),
]


@pytest.mark.parametrize(("case", "fname", "content", "line", "path", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_profile_is_reported_precisely(cli, tmp_path: Path, case: str, fname: str, content: str,
                                           line: int, path: str, message: str) -> None:
    f = tmp_path / fname
    f.write_text(content)
    code, out = cli("validate", str(f))
    assert code == 1, out
    pattern = rf"^{re.escape(str(f))}:{line}:\d+: {re.escape(path)}: .*"
    hits = [ln for ln in out.splitlines() if re.match(pattern, ln)]
    assert hits and any(message in h for h in hits), out
    # and compile writes nothing
    code, out = cli("compile", str(f), "--out", str(tmp_path / "out"))
    assert code == 1 and not (tmp_path / "out").exists()


def test_foreign_profile_leniency_is_a_warning(cli, tmp_path: Path) -> None:
    f = tmp_path / "My Profile.json"
    f.write_text('{"defaultAction": "SCMP_ACT_ERRNO",\n "syscalls": [\n'
                 '  {"names": ["read", "frobnicate"], "action": "SCMP_ACT_ALLOW"},\n'
                 '  {"names": ["write"], "action": "SCMP_ACT_ERRNO"},\n'
                 '  {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}]}\n')
    code, out = cli("validate", str(f))  # an unknown name is an error in every format ...
    assert code == 1 and re.search(rf"{re.escape(str(f))}:3:\d+: syscalls\[0\]\.names\[1\]: unknown syscall \"frobnicate\"", out), out
    code, out = cli("validate", "--lenient", str(f))  # ... and a warning with --lenient (runc skips it)
    assert code == 0, out
    assert re.search(rf"{re.escape(str(f))}:3:\d+: syscalls\[0\]\.names\[1\]: warning: unknown syscall \"frobnicate\"", out), out
    assert re.search(r":4:\d+: syscalls\[1\]\.action: warning: .*default action already", out), out
    code, out = cli("compile", "--lenient", str(f), "--out", str(tmp_path / "out"))
    assert code == 0, out
    art = tmp_path / "out" / "SeccompProfile" / "my-profile"  # name from the file stem
    assert (art / "filter.bin").stat().st_size % 8 == 0
    assert {p.name for p in art.iterdir()} >= {"filter.bin", "filter.txt", "filter.h", "profile.json",
                                                "kernel-test.txt", "manifest.json"}
