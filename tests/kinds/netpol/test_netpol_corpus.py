"""Cilium corpus conformance (../shared/corpus/cilium): every file is accepted or rejected
for a stated reason, and the accepted ones compile against a test inventory."""

from __future__ import annotations

import pytest

from bpfpolicy.kinds import CompileContext
from bpfpolicy.kinds.netpol.kind import NetworkPolicyKind
from bpfpolicy.policy.validate import validate_paths

ACCEPTED = {
    "cli-connectivity__client-egress-icmp.yaml",
    "host__allow-extended-protocols.yaml",
    "l3__cidr__cidr.yaml",
    "l3__egress-allow-all__egress-allow-all.yaml",
    "l3__egress-default-deny__egress-default-deny.yaml",
    "l3__entities__from_world_deny.yaml",
    "l3__entities__world.yaml",
    "l3__simple__l3.yaml",
    "l3__simple__l3_egress.yaml",
    "l4__cidr_l4_combined.yaml",
    "l4__icmp.yaml",
    "l4__l3_l4_combined.yaml",
    "l4__l4.yaml",
    "l4__l4_port_range.yaml",
    "minikube__sw_l3_l4_policy.yaml",  # top-level `description`: pruned with a warning, as Kubernetes does
    # k8s:io.kubernetes.pod.namespace selects the inventory endpoints' namespaces
    "cli-connectivity__client-egress-to-echo-deny-port-range.yaml",
    "cli-connectivity__client-egress-to-entities-world-port-range.yaml",
    "kubernetes__clusterwide__wildcard-from-endpoints.yaml",
}

# file -> (line:col path of the first error, message fragment)
REJECTED = {
    "cli-connectivity__allow-all-except-world.yaml":
        ("10:7: spec.egress[0].toEntities[1]", 'entity "remote-node" is cluster-only'),
    "cli-connectivity__client-egress-to-cidr-external-deny.yaml":
        ("14:7: spec.egressDeny[0].toCIDRSet[0].cidr", "unrendered Go template"),
    "cli-connectivity__client-egress-to-echo-named-port-deny.yaml":
        ("19:13: spec.ingressDeny[0].fromEndpoints[0].matchExpressions[0].key",
         "a deny rule cannot be dropped"),  # io.cilium.k8s.policy.cluster: clusters do not exist here
    "host__lock-down-dev-vms-cidr-node.yaml":
        ("13:7: spec.ingress[0].fromEntities[0]", 'entity "health" is cluster-only'),
    "host__lock-down-ingress.yaml":
        ("12:7: spec.ingress[0].fromEntities[0]", 'entity "remote-node" is cluster-only'),
    "l3__entities__apiserver.yaml":
        ("11:9: spec.egress[0].toEntities[0]", 'entity "kube-apiserver" is cluster-only'),
    "l3__entities__from_nodes.yaml":
        ("1:1: apiversion", 'unknown field "apiversion" (did you mean "apiVersion"?)'),
    "l3__match-expressions__and-statement.yaml":
        ("11:9: spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator", 'did you mean "In"?'),
    "l3__match-expressions__or-statement.yaml":
        ("11:9: spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator", 'did you mean "In"?'),
    "l4__from_init.yaml":
        ("11:9: spec.ingress[0].fromEntities[0]", 'entity "init" is cluster-only'),
}

# extra expected diagnostics beyond the first (the placeholder port of lock-down-ingress)
ALSO = {
    "host__lock-down-ingress.yaml":
        ("26:9: spec.ingress[1].toPorts[0].ports[5].port",
         'unable to parse port "REMOVE_ME_AFTER_DOUBLE_CHECKING_PORTS"'),
}

INVENTORY = [
    {"name": "worker", "host": True, "labels": {"type": "ingress-worker"},
     "interfaces": [{"name": "eth0"}], "addresses": ["192.168.60.10"]},
    {"name": "myservice", "labels": {"app": "myService", "kind": "client"},
     "cgroup": "/sys/fs/cgroup/unified/myservice", "addresses": ["10.0.0.5"]},
    {"name": "frontend", "labels": {"role": "frontend", "org": "empire", "class": "tiefighter"},
     "cgroup": "/sys/fs/cgroup/unified/frontend", "addresses": ["10.0.0.8"]},
    {"name": "backend", "labels": {"role": "backend", "class": "deathstar", "org": "empire"},
     "interfaces": [{"name": "eth0", "netns": "backend"}], "addresses": ["10.0.0.6", "fd00::6"]},
]


def _accepted_docs(corpus):
    """Each accepted file validated on its own (two upstream examples share a name)."""
    docs = []
    for n in sorted(ACCEPTED):
        result = validate_paths([corpus / "cilium" / n])
        assert result.ok
        docs += [v.doc for v in result.policies]
    return docs


def test_every_corpus_file_is_classified(corpus):
    files = {p.name for p in (corpus / "cilium").glob("*.yaml")}
    assert files, "empty corpus"
    assert files == ACCEPTED | set(REJECTED), (files - ACCEPTED - set(REJECTED), (ACCEPTED | set(REJECTED)) - files)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted(corpus, name):
    result = validate_paths([corpus / "cilium" / name])
    assert result.ok, [str(d) for d in result.diagnostics]
    assert len(result.policies) == 1
    if name in ("minikube__sw_l3_l4_policy.yaml", "kubernetes__clusterwide__wildcard-from-endpoints.yaml"):
        (w,) = result.diagnostics
        assert (w.line, w.col, w.severity) == (3, 1, "warning") and "Kubernetes prunes it" in w.message


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_with_reason(corpus, name):
    f = corpus / "cilium" / name
    result = validate_paths([f])
    assert not result.ok
    errors = [str(d) for d in result.errors]
    for where, fragment in [REJECTED[name], *([ALSO[name]] if name in ALSO else [])]:
        assert any(e.startswith(f"{f}:{where}: ") and fragment in e for e in errors), errors


def test_accepted_corpus_compiles_per_endpoint(corpus, clang_required):
    arts = NetworkPolicyKind().compile_set(_accepted_docs(corpus), CompileContext(options={"inventory": INVENTORY}))
    by_name = {a.name: a for a in arts}
    assert set(by_name) == {"worker", "myservice", "frontend", "backend"}
    assert "CiliumNetworkPolicy/rule1" in by_name["backend"].manifest["metadata"]["policies"]  # minikube
    for a in arts:
        assert a.files["prog.bpf.o"].startswith(b"\x7fELF")
        assert "object prog.bpf.o" in a.files["kernel-test.txt"].decode()
    # the host policy (nodeSelector) lands on the host entry's interfaces
    assert by_name["worker"].manifest["attachments"][0] == {
        "program": "netpol_tc_ingress", "type": "tc", "direction": "ingress", "interface": "eth0", "netns": None}
    assert by_name["worker"].manifest["metadata"]["policies"] == [
        "CiliumClusterwideNetworkPolicy/allow-extended-egress-worker-node"]
    assert {"type": "cgroup_skb", "direction": "egress", "cgroup": "/sys/fs/cgroup/unified/myservice",
            "program": "netpol_cg_egress"} in by_name["myservice"].manifest["attachments"]
    # every policy selecting myservice is merged into its one artifact
    assert "CiliumNetworkPolicy/cidr-rule" in by_name["myservice"].manifest["metadata"]["policies"]
    assert "CiliumClusterwideNetworkPolicy/external-lockdown" in by_name["myservice"].manifest["metadata"]["policies"]


@pytest.mark.kernel
def test_accepted_corpus_vectors_in_kernel(corpus, clang_required, root_required):
    from helpers.netpol import run_kernel_test

    arts = NetworkPolicyKind().compile_set(_accepted_docs(corpus), CompileContext(options={"inventory": INVENTORY}))
    ran = 0
    for a in arts:
        for comment, expect, got in run_kernel_test(a):
            assert got == expect, f"{a.name}: {comment}: retval {got}, expected {expect}"
            ran += 1
    assert ran >= 10
