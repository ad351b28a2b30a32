"""TracingPolicy cases: the shipped files pass both ways (real syscalls under the attached
tracepoint program as root), a wrong expectation fails with a located message, a matcher
the model cannot evaluate is skipped with the reason, and a compiled program that
disagrees with the model is reported as a compiler bug with both answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from bpfpolicy.cli import cli

ROOT = Path(__file__).resolve().parents[2]
TRACING = ROOT / "policies/tracing"


def _write(tmp: Path, cases: str, policy: Path = TRACING / "sensitive-files.yaml") -> Path:
    f = tmp / "t.test.yaml"
    f.write_text(f"apiVersion: bpfpolicy.io/v1\nkind: PolicyTest\nspec:\n  policy: {policy}\n  cases:\n{cases}")
    return f


def _json(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(cli, ["test", "--format", "json", *args])
    return res.exit_code, json.loads(res.output)


@pytest.mark.parametrize("case,model", [
    # one row per behaviour: event -> the model's answer
    ("{hook: sys_openat, args: {1: /etc/shadow}, binary: /usr/bin/head}", "selector 0: Post"),
    ("{hook: sys_openat, args: {1: /etc/shadow}, binary: /usr/sbin/sshd}", "no match"),
    ("{hook: sys_openat, args: {1: /root/.ssh/id}, binary: /bin/x}", "selector 0: Post"),
    ("{hook: sys_openat, args: {1: /etc/passwd}, binary: /bin/x}", "no match"),
])
def test_model_answers(tmp_path: Path, case: str, model: str) -> None:
    f = _write(tmp_path, f"    - {{event: {case}, expect: {{selector: none}}}}\n")
    _, out = _json("--no-kernel", str(f))
    assert out["cases"][0]["model"] == model


def test_shipped_tracing_cases_pass() -> None:
    code, out = _json(str(TRACING))
    assert code == 0, out
    assert {c["status"] for c in out["cases"]} == {"pass"}
    if os.geteuid() == 0:
        kernel = [c for c in out["cases"] if c["compiled_by"].startswith("kernel")]
        assert len(kernel) >= 6 and any("SIGKILL" in c["compiled"] for c in kernel)


def test_wrong_expectation_fails_with_precise_message(tmp_path: Path) -> None:
    f = _write(tmp_path, "    - {name: hostname, event: {hook: sys_openat, args: {1: /etc/hostname}, binary: /usr/bin/head},\n"
                         "       expect: {selector: 0, actions: [Post]}}\n")
    res = CliRunner().invoke(cli, ["test", "--no-kernel", str(f)])
    assert res.exit_code == 1
    assert (f"{f}:6:7: spec.cases[0]: hostname: expected selector 0: Post, the policy gives no match"
            in res.output), res.output


def test_unmodelled_matcher_is_skipped_with_reason(tmp_path: Path) -> None:
    pol = tmp_path / "ns.yaml"
    pol.write_text((TRACING / "sensitive-files.yaml").read_text().replace(
        "      matchBinaries:", "      matchNamespaces:\n      - {namespace: Pid, operator: In, values: [host_ns]}\n      matchBinaries:"))
    f = _write(tmp_path, "    - {event: {hook: sys_openat, args: {1: /etc/shadow}}, expect: {selector: 0, actions: [Post]}}\n", pol)
    code, out = _json("--no-kernel", str(f))
    assert code == 0 and out["cases"][0]["status"] == "skip"
    assert out["cases"][0]["message"] == "skipped: model cannot evaluate matchNamespaces"


def test_bad_event_case_is_located(tmp_path: Path) -> None:
    f = _write(tmp_path, "    - {event: {hook: sys_openat, args: {one: /x}}, expect: {selector: none}}\n")
    res = CliRunner().invoke(cli, ["test", str(f)])
    assert res.exit_code == 1 and f"{f}:6:" in res.output and "spec.cases[0]" in res.output, res.output


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_miscompiled_selector_is_a_compiler_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compile a policy whose prefix differs from the one the model reads: the kernel posts
    nothing for /etc/shadow, the model says selector 0 — reported with both answers."""
    from bpfpolicy.policytest import tracing

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text((TRACING / "sensitive-files.yaml").read_text().replace("- /etc/shadow\n", "- /etc/shadowX\n"))
    real = tracing.run_host

    def miscompiled(subject, pending, notes):  # type: ignore[no-untyped-def]
        subject.policy = wrong
        return real(subject, pending, notes)

    monkeypatch.setattr(tracing, "run_host", miscompiled)
    f = _write(tmp_path, "    - {event: {hook: sys_openat, args: {1: /etc/shadow}, binary: /usr/bin/head},\n"
                         "       expect: {selector: 0, actions: [Post]}}\n")
    code, out = _json(str(f))
    case = out["cases"][0]
    assert code == 1 and case["status"] == "fail", out
    assert case["message"].startswith("compiler bug: the reference model says selector 0: Post (so: event selector 0; "
                                      "not killed), the compiled program (tracepoint program, /usr/bin/head -c 0 "
                                      "/etc/shadow, kernel "), case["message"]
    assert case["message"].endswith("says no event; not killed")
