"""The runner itself: shipped tests pass both ways, a wrong expectation fails with a
located message, bad files get file:line:col, and a deliberately mis-compiled rule is
reported as a compiler bug with both answers."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from bpfpolicy.cli import cli
from bpfpolicy.policytest import runner
from bpfpolicy.policytest.subjects import SeccompSubject

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"


def _write(tmp: Path, body: str, policy: str = "seccomp/web-api.yaml") -> Path:
    f = tmp / "t.test.yaml"
    f.write_text(f"apiVersion: bpfpolicy.io/v1\nkind: PolicyTest\nspec:\n  policy: {POLICIES / policy}\n{body}")
    return f


def test_shipped_policy_tests_pass() -> None:
    res = CliRunner().invoke(cli, ["test", "--format", "json", str(POLICIES)])
    assert res.exit_code == 0, res.output
    assert '"status": "fail"' not in res.output


def test_wrong_expectation_fails_with_location(tmp_path: Path) -> None:
    f = _write(tmp_path, "  cases:\n    - {name: read, syscall: {name: read}, expect: {action: errno 1}}\n")
    res = CliRunner().invoke(cli, ["test", "--no-kernel", str(f)])
    assert res.exit_code == 1
    assert f"{f}:6:7: spec.cases[0]: read: expected errno 1, the policy gives allow (read:fallback)" in res.output


@pytest.mark.parametrize(("body", "want"), [
    ("  cases:\n    - {syscall: {name: read}, expect: {action: maybe}}\n", ":6:"),
    ("  cases:\n    - {packet: {src: 10.0.0.300, protocol: tcp}, expect: {verdict: deny}}\n", "is not an IPv4 or IPv6 address"),
    ("  cases: []\n", ":5:"),
])
def test_bad_test_file_is_located(tmp_path: Path, body: str, want: str) -> None:
    f = _write(tmp_path, body)
    res = CliRunner().invoke(cli, ["test", "--no-kernel", str(f)])
    assert res.exit_code == 1 and str(f) in res.output and want in res.output
    assert "Traceback" not in res.output


def test_miscompiled_seccomp_rule_is_a_compiler_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flip the compiled filter's KILL returns to ALLOW: the emulator must disagree with the model."""
    from bpfpolicy.kinds.seccomp import bpf

    real = SeccompSubject.__init__

    def broken(self: SeccompSubject, model: object) -> None:
        real(self, model)
        insns = [dataclasses.replace(i, k=bpf.RET_ALLOW) if i.code == 0x06 and i.k == bpf.RET_KILL_PROCESS else i
                 for i in self.cp.insns]
        monkeypatch.setattr(type(self.cp), "insns", property(lambda _s: insns))

    monkeypatch.setattr(SeccompSubject, "__init__", broken)
    report = runner.run([str(POLICIES / "seccomp")], use_kernel=False)
    bad = [r for r in report.results if r.status == "fail"]
    assert {r.case.name for r in bad} >= {"ptrace kills", "bpf kills"}
    assert all("compiler bug: the reference model says kill, the compiled program (emulated cBPF filter) says allow"
               in r.message for r in bad if "kills" in r.case.name)


@pytest.mark.skipif(os.geteuid() != 0, reason="BPF_PROG_TEST_RUN needs root")
def test_miscompiled_xdp_map_entry_is_caught_by_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop the compiled port-rule map entries: the kernel passes lab SSH the model drops."""
    real = runner._preamble

    def patched(d: Path):  # type: ignore[no-untyped-def]
        script, n = real(d)
        if script is not None:
            script._lines = [ln for ln in script._lines if not ln.startswith("map-update port_rules")]
        return script, n

    monkeypatch.setattr(runner, "_preamble", patched)
    report = runner.run([str(POLICIES / "xdp")])
    bad = {r.case.name: r.message for r in report.results if r.status == "fail"}
    assert "lab ssh" in bad, bad
    assert "compiler bug: the reference model says deny" in bad["lab ssh"]
    assert "retval=2 expected=1" in bad["lab ssh"]
