"""`bpfpolicy test --init` for a TracingPolicy: each matcher probed at its edges with the
reference model's answer as the expectation; the generated files for policies/tracing pass
both ways (real openat/mkdir under the attached tracepoint program as root)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bpfpolicy.cli import cli
from bpfpolicy.policytest.init import generate

ROOT = Path(__file__).resolve().parents[2]
POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata: {{name: probes}}
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args: [{{index: 1, type: string}}, {{index: 2, type: int}}]
    selectors:
    - {sel}
"""


def _cases(tmp: Path, sel: str) -> dict[str, dict]:
    pol = tmp / "p.yaml"
    pol.write_text(POLICY.format(sel=sel))
    gen, diags = generate(pol, tmp / "p.test.yaml")
    assert gen is not None, diags
    doc = yaml.safe_load(gen.text)
    return {json.dumps([c["event"].get("args"), c["event"].get("binary")]): c["expect"] for c in doc["spec"]["cases"]}


# one row per probe: selector, probe event (args, binary), the expectation the model gives
H = "/usr/bin/head"
ROWS = [
    ("{matchArgs: [{index: 1, operator: Equal, values: [/etc/passwd]}]}", ({"1": "/etc/passwd"}, H), 0),
    ("{matchArgs: [{index: 1, operator: Equal, values: [/etc/passwd]}]}", ({"1": "/etc/passwx"}, H), None),
    ("{matchArgs: [{index: 1, operator: Prefix, values: [/etc/]}]}", ({"1": "/etc/probe-longer"}, H), 0),
    ("{matchArgs: [{index: 1, operator: Prefix, values: [/etc/]}]}", ({"1": "/etcx"}, H), None),
    ("{matchArgs: [{index: 1, operator: Postfix, values: [.pem]}]}", ({"1": "/probe-head.pem"}, H), 0),
    ("{matchArgs: [{index: 1, operator: Postfix, values: [.pem]}]}", ({"1": ".pex"}, H), None),
    ("{matchArgs: [{index: 1, operator: Postfix, values: [.pem]}]}", ({"1": "xpem"}, H), None),
    ("{matchArgs: [{index: 1, operator: NotPrefix, values: [/proc]}]}", ({"1": "/proc"}, H), None),
    ("{matchArgs: [{index: 2, operator: GT, values: ['64']}]}", ({"2": 64}, H), None),
    ("{matchArgs: [{index: 2, operator: GT, values: ['64']}]}", ({"2": 65}, H), 0),
    ("{matchArgs: [{index: 2, operator: InRange, values: ['10:20']}]}", ({"2": 9}, H), None),
    ("{matchArgs: [{index: 2, operator: InRange, values: ['10:20']}]}", ({"2": 20}, H), 0),
    ("{matchArgs: [{index: 2, operator: InRange, values: ['10:20']}]}", ({"2": 21}, H), None),
    ("{matchBinaries: [{operator: In, values: [/usr/bin/cat]}]}", ({"1": "/tmp/bpfpolicy-probe-neutral"}, "/usr/bin/cat"), 0),
    ("{matchBinaries: [{operator: In, values: [/usr/bin/cat]}]}", ({"1": "/tmp/bpfpolicy-probe-neutral"}, H), None),
    ("{matchBinaries: [{operator: NotIn, values: [/usr/bin/cat]}]}", ({"1": "/tmp/bpfpolicy-probe-neutral"}, H), 0),
]


@pytest.mark.parametrize("sel,probe,selector", ROWS)
def test_probe_rows(tmp_path: Path, sel: str, probe: tuple, selector: int | None) -> None:
    cases = _cases(tmp_path, sel)
    key = json.dumps(list(probe))
    assert key in cases, sorted(cases)
    want = {"selector": "none"} if selector is None else {"selector": selector, "actions": ["Post"]}
    assert cases[key] == want


def test_unmodelled_matcher_is_left_out_with_reason(tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY.format(sel="{matchNamespaces: [{namespace: Pid, operator: In, values: [host_ns]}]}"))
    gen, _ = generate(pol, tmp_path / "p.test.yaml")
    assert gen is not None and gen.cases == 0
    assert any("model cannot evaluate matchNamespaces" in n for n in gen.notes)


def test_init_of_shipped_policies_passes_both_ways(tmp_path: Path) -> None:
    for name in ("sensitive-files.yaml", "forbidden-mkdir.yaml"):
        shutil.copy(ROOT / "policies/tracing" / name, tmp_path / name)
        res = CliRunner().invoke(cli, ["test", "--init", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["test", "--format", "json", str(tmp_path)])
    out = json.loads(res.output)
    assert res.exit_code == 0, [c for c in out["cases"] if c["status"] != "pass"]
    assert len(out["cases"]) >= 14
    if os.geteuid() == 0:
        kernel = [c for c in out["cases"] if c["compiled_by"].startswith("kernel")]
        assert len(kernel) >= 12 and any("SIGKILL" in c["compiled"] for c in kernel)
