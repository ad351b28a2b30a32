"""`bpfpolicy test --init`: the starter file of every policy in policies/ has an allow and
a deny case per rule, boundary probes, and passes `bpfpolicy test` both ways (model, then
the compiled program in the kernel as root); an existing file is not overwritten."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bpfpolicy.cli import cli
from bpfpolicy.policytest import runner
from bpfpolicy.policytest.model import load_test_file

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
INVENTORY = ROOT / "examples" / "host-config.yaml"

# policy -> (a case name fragment that must be generated, its expected answer)
PROBES = [
    ("xdp/edge.yaml", "bogons: just above 192.0.2.0/24 tcp/80", "allow"),
    ("xdp/edge.yaml", "bogons: last of 192.0.2.0/24 tcp/80", "deny"),
    ("xdp/edge.yaml", "no-ssh-from-lab: first of 10.99.0.0/16 tcp/2224", "allow"),
    ("netpol/demo.yaml", "spec.ingress[0]: first of except 10.1.0.0/16 tcp/22", "deny"),
    ("netpol/demo.yaml", "spec.ingress[0]: just below 10.0.0.0/8 tcp/22", "deny"),
    ("netpol/demo.yaml", "spec.ingress[0]: last of 10.0.0.0/8 tcp/22", "allow"),
    ("seccomp/web-api.yaml", "syscalls[1] clone arg0=0x20000", "errno 1"),
    ("seccomp/web-api.yaml", "named by no rule (defaultAction)", "errno 1"),
]


def _tree(tmp: Path) -> Path:
    """policies/ and the inventory copied, so generated files land beside the copies."""
    shutil.copytree(POLICIES, tmp / "policies", ignore=shutil.ignore_patterns("*.test.yaml"))
    shutil.copytree(ROOT / "examples", tmp / "examples")
    return tmp / "policies"


def _init(policy: Path, *extra: str) -> object:
    inv = ["--inventory", str(policy.parents[2] / "examples" / "host-config.yaml")] if "netpol" in str(policy) else []
    return CliRunner().invoke(cli, ["test", "--init", str(policy), *inv, *extra])


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pol = _tree(tmp_path_factory.mktemp("init"))
    for p in sorted(pol.rglob("*.yaml")):
        if p.parent.name in ("xdp", "netpol", "seccomp"):
            res = _init(p)
            assert res.exit_code == 0, res.output
    return pol


def test_every_rule_has_an_allow_and_a_deny_case(generated: Path) -> None:
    for f in sorted(generated.rglob("*.test.yaml")):
        tf, diags = load_test_file(f)
        assert tf is not None, diags
        by_rule: dict[str, set[str]] = {}
        for c in tf.cases:
            rule = c.name.split(": ")[0].split(" ")[0]
            by_rule.setdefault(rule, set()).add(c.expect.get("verdict") or ("allow" if c.expect["action"] == "allow" else "deny"))
        probed = {r for r, v in by_rule.items() if v == {"allow", "deny"}}
        assert probed, f"{f}: {by_rule}"
        if "seccomp" not in str(f):  # every network rule sees both answers at its edges
            assert probed == set(by_rule), f"{f}: {by_rule}"


@pytest.mark.parametrize(("policy", "name", "answer"), PROBES)
def test_boundary_probes_are_generated(generated: Path, policy: str, name: str, answer: str) -> None:
    tf, _ = load_test_file(generated / policy.replace(".yaml", ".test.yaml"))
    assert tf is not None
    hits = [c for c in tf.cases if name in c.name]
    assert hits, [c.name for c in tf.cases]
    assert (hits[0].expect.get("verdict") or hits[0].expect.get("action")) == answer


def test_generated_files_pass_both_ways(generated: Path) -> None:
    report = runner.run([str(generated)])
    assert report.diagnostics == []
    bad = [(r.case.label, r.message) for r in report.results if r.status != "pass"]
    assert not bad, bad
    assert len(report.results) > 100
    if os.geteuid() == 0:
        kernel = [r for r in report.results if r.compiled_by.startswith("kernel")]
        assert {Path(r.case.file).name for r in kernel} == {"edge.test.yaml", "demo.test.yaml", "web-api.test.yaml"}


def test_init_refuses_to_overwrite(generated: Path) -> None:
    target = generated / "xdp" / "edge.test.yaml"
    before = target.read_text()
    res = _init(generated / "xdp" / "edge.yaml")
    assert res.exit_code == 1 and "exists; not overwritten (use --force)" in res.output
    res = _init(generated / "xdp" / "edge.yaml", "--force")
    assert res.exit_code == 0 and target.read_text() == before


def test_init_netpol_without_inventory_is_located(tmp_path: Path) -> None:
    pol = _tree(tmp_path)
    res = CliRunner().invoke(cli, ["test", "--init", str(pol / "netpol" / "demo.yaml")])
    assert res.exit_code == 1
    assert "NetworkPolicy tests need spec.inventory" in res.output
    assert "Traceback" not in res.output and not (pol / "netpol" / "demo.test.yaml").exists()


def test_generated_json_is_the_model_answer(generated: Path) -> None:
    """The text is plain flow YAML (one JSON object a case), readable by json as well."""
    lines = [ln[6:] for ln in (generated / "seccomp" / "web-api.test.yaml").read_text().splitlines() if ln.startswith("    - ")]
    assert all("expect" in json.loads(ln) for ln in lines)
