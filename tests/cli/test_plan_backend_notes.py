"""`bpfpolicy plan` says, per hook, where a TracingPolicy runs on this kernel — the same
notes and `backend change:` warnings `compile` prints — and `--strict-backend` turns
the warnings into a refusal (exit 2). Real CLI subprocesses, real clang builds."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRACING = REPO / "policies" / "tracing"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A throwaway state dir; the bpffs root is a name under /sys/fs/bpf that plan only
    stats (a dry run creates nothing there)."""
    if os.geteuid() != 0 or not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("plan observes bpffs: needs root and /sys/fs/bpf")
    (tmp_path / "config.yaml").write_text("selfHeal: true\n")
    root = Path(f"/sys/fs/bpf/bpfpolicy-test-{secrets.token_hex(4)}")
    yield {**os.environ, "BPFPOLICY_BPFFS_ROOT": str(root), "BPFPOLICY_STATE_DIR": str(tmp_path / "state"),
           "BPFPOLICY_CONFIG": str(tmp_path / "config.yaml")}
    assert not root.exists(), "a dry-run plan must not create pins"


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bpfpolicy", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def hook_lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if ": note: " in line or ": warning: backend change:" in line}


def test_plan_prints_the_backend_notes_compile_prints(env: dict[str, str]) -> None:
    compiled = run(env, "compile", "--dry-run", str(TRACING))
    assert compiled.returncode == 0, compiled.stderr
    expected = hook_lines(compiled.stdout)
    # one note per hook of the two example policies (forbidden-mkdir: 2, sensitive-files: 1)
    assert sum(": note: " in line for line in expected) == 3, compiled.stdout
    planned = run(env, "plan", str(TRACING))
    assert planned.returncode == 1, planned.stdout + planned.stderr  # 1 = changes (nothing applied)
    assert hook_lines(planned.stdout) == expected
    assert any("spec.kprobes[0]: note: sys_openat runs as" in line for line in hook_lines(planned.stdout))
    # the plan itself still follows
    assert "TracingPolicy/sensitive-files" in planned.stdout and "create" in planned.stdout


def test_plan_json_carries_the_notes(env: dict[str, str]) -> None:
    planned = run(env, "plan", "-o", "json", str(TRACING))
    doc = json.loads(planned.stdout)  # the notes do not break the JSON document
    notes = [d for d in doc["diagnostics"] if d["severity"] == "note"]
    assert {d["path"] for d in notes} == {"spec.kprobes[0]", "spec.kprobes[1]"}
    assert all(d["file"].endswith((".yaml",)) and d["line"] > 0 for d in notes)
    assert any("sys_mkdirat runs as" in d["message"] for d in notes)


def test_strict_backend_refuses_a_changed_backend(env: dict[str, str]) -> None:
    compiled = run(env, "compile", "--dry-run", str(TRACING))
    changed = [line for line in compiled.stdout.splitlines() if ": warning: backend change:" in line]
    if not changed:
        pytest.skip("every hook runs as asked on this kernel (kprobes available): nothing to refuse")
    planned = run(env, "plan", "--strict-backend", str(TRACING))
    assert planned.returncode == 2, planned.stdout + planned.stderr
    # the same hooks, now errors (an error line has no severity word, as in `compile`)
    errors = [line for line in planned.stdout.splitlines() if ": backend change:" in line]
    assert [e.split(": backend change:")[0] for e in errors] == \
        [c.split(": warning: backend change:")[0] for c in changed]
    assert f"refused: {len(changed)} hook(s) run on another backend" in planned.stderr
    assert "bpfpolicy plan" not in planned.stdout  # no plan is shown for a refused tree
