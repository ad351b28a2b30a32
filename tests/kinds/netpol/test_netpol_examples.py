"""The shipped NetworkPolicy examples validate and compile against the example inventory."""

from __future__ import annotations

from pathlib import Path

from bpfpolicy.kinds import CompileContext
from bpfpolicy.kinds.netpol.inventory import load_inventory
from bpfpolicy.kinds.netpol.kind import NetworkPolicyKind
from bpfpolicy.policy.validate import validate_paths

ROOT = Path(__file__).resolve().parents[3]


def test_examples_compile_into_one_artifact_for_the_demo_endpoint(clang_required):
    result = validate_paths([ROOT / "policies" / "netpol", ROOT / "examples" / "netpol-audit.yaml"])
    assert result.ok, [str(d) for d in result.diagnostics]
    inv = str(ROOT / "examples" / "host-config.yaml")
    assert [e.name for e in load_inventory(inv)] == ["demo"]
    (art,) = NetworkPolicyKind().compile_set([v.doc for v in result.policies],
                                             CompileContext(options={"inventory": inv}))
    assert art.name == "demo"
    assert art.manifest["metadata"]["default"] == {"ingress": "default-deny", "egress": "audit-default-deny"}
    assert {(a["interface"], a["netns"], a["direction"]) for a in art.manifest["attachments"]} == {
        ("veth-demo0", "bpfpolicy-demo", "ingress"), ("veth-demo0", "bpfpolicy-demo", "egress")}
    names = [r["name"] for r in art.manifest["counters"]["rules"]]
    assert "NetworkPolicy/demo:spec.ingressDeny[0]" in names
    assert "NetworkPolicy/demo-egress-audit:spec.egress[0]" in names
    src = art.files["prog.bpf.c"].decode()
    assert "@policy " in src and 'SEC("tc")' in src and "bpf_metadata_bpfpolicy_policy" in src


def test_host_config_example_is_a_valid_controller_config():
    from bpfpolicy.controller.config import load_config

    cfg = load_config(ROOT / "examples" / "host-config.yaml")
    assert [e.name for e in cfg.endpoints] == ["demo"]


def test_compile_validated_pairs_each_endpoint_artifact_with_a_policy(clang_required):
    from bpfpolicy.kinds.netpol.kind import compile_validated

    result = validate_paths([ROOT / "policies" / "netpol", ROOT / "examples" / "netpol-audit.yaml"])
    pairs = compile_validated(result.policies, CompileContext(options={"inventory": str(ROOT / "examples" / "host-config.yaml")}))
    assert [(p.name, a.name) for p, a in pairs] == [("demo", "demo")]
