"""Cilium namespaces on one host: a CNP's identity is (kind, namespace, name), and its
selectors stay inside its namespace unless they name `k8s:io.kubernetes.pod.namespace`.

The policies are Cilium's own namespace examples (examples/policies/kubernetes/namespace/:
isolate-namespaces.yaml, namespace-policy.yaml), written out here."""

from __future__ import annotations

import pytest

from bpfpolicy.controller.paths import UnsafePath, contained
from bpfpolicy.kinds.netpol.inventory import InventoryError, parse_inventory
from bpfpolicy.policy.load import load_file
from bpfpolicy.policy.validate import validate_documents

from helpers.netpol_plan import Planner, verdict

ISOLATE = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: isolate-ns1, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {}}
  ingress:
  - fromEndpoints:
    - matchLabels: {}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: isolate-ns1, namespace: ns2}
spec:
  endpointSelector: {matchLabels: {}}
  ingress:
  - fromEndpoints:
    - matchLabels: {}
"""

# namespace-policy.yaml: ns1's "leia" may be reached from ns2's "luke" on TCP 80
CROSS = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: k8s-expose-across-namespace, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {name: leia}}
  ingress:
  - fromEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: ns2, name: luke}
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""

CCNP = """apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: from-anywhere}
spec:
  endpointSelector: {matchLabels: {name: leia}}
  ingress:
  - fromEndpoints: [{}]
"""

INV = [
    {"name": "leia", "namespace": "ns1", "labels": {"name": "leia"}, "interfaces": ["eth0"],
     "addresses": ["10.1.0.1"]},
    {"name": "han", "namespace": "ns1", "labels": {"name": "han"}, "interfaces": ["eth1"],
     "addresses": ["10.1.0.2"]},
    {"name": "luke", "namespace": "ns2", "labels": {"name": "luke"}, "interfaces": ["eth2"],
     "addresses": ["10.2.0.1"]},
    {"name": "leia", "namespace": "ns2", "labels": {"name": "leia"}, "interfaces": ["eth3"],
     "addresses": ["10.2.0.2"]},
    {"name": "vader", "labels": {"name": "vader"}, "interfaces": ["eth4"], "addresses": ["10.0.0.9"]},
]


def _validate(tmp_path, text):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    return validate_documents(load_file(f))


def test_same_name_in_two_namespaces_is_two_policies(tmp_path):
    result = _validate(tmp_path, ISOLATE)
    assert result.ok and len(result.policies) == 2, [str(d) for d in result.diagnostics]
    dup = _validate(tmp_path, ISOLATE.replace("namespace: ns2", "namespace: ns1"))
    (err,) = dup.errors
    assert 'duplicate CiliumNetworkPolicy "ns1/isolate-ns1"' in err.message and err.line == 12


@pytest.mark.parametrize("bad", ["../x", "NS1", "a/b", "-x"])
def test_bad_namespace_is_refused_at_its_position(tmp_path, bad):
    result = _validate(tmp_path, ISOLATE.split("---")[0].replace("namespace: ns1", f"namespace: '{bad}'"))
    (err,) = result.errors
    assert (err.line, err.col, err.path) == (3, 31, "metadata.namespace") and "not a valid namespace" in err.message


def test_inventory_namespaces_name_artifacts_safely():
    inv = parse_inventory(INV)
    assert [ep.name for ep in inv] == ["ns1.leia", "ns1.han", "ns2.luke", "ns2.leia", "vader"]
    assert inv[0].labels == {"name": "leia", "io.kubernetes.pod.namespace": "ns1"}
    assert inv[4].labels["io.kubernetes.pod.namespace"] == "default"
    for bad, fragment in [
        ({"name": "x", "namespace": "../x"}, "namespace: '../x' is not a DNS-1123 label"),
        ({"name": "leia", "namespace": "ns1"}, "duplicate endpoint 'leia' in namespace 'ns1'"),
        ({"name": "y", "labels": {"k8s:io.kubernetes.pod.namespace": "ns9"}}, "write namespace: instead"),
    ]:
        with pytest.raises(InventoryError) as e:
            parse_inventory([INV[0], bad])
        assert any(fragment in p for p in e.value.problems), e.value.problems
    with pytest.raises(UnsafePath):  # the controller's guard, had a namespace got through
        contained(__import__("pathlib").Path("/tmp"), "NetworkPolicy", "../x.leia")


# (policy text, endpoint, peer address, expected) — one row per behaviour
ROWS = [
    (ISOLATE, "ns1.leia", "10.1.0.2", "allow"),          # same namespace: fromEndpoints [{}]
    (ISOLATE, "ns1.leia", "10.2.0.1", "default-deny"),   # other namespace: isolated
    (ISOLATE, "ns2.leia", "10.2.0.1", "allow"),
    (ISOLATE, "ns2.leia", "10.1.0.1", "default-deny"),
    (ISOLATE, "ns1.leia", "10.0.0.9", "default-deny"),   # the default namespace is another one
    (CROSS, "ns1.leia", "10.2.0.1", "allow"),            # names ns2: reaches across
    (CROSS, "ns1.leia", "10.2.0.2", "default-deny"),     # ns2's leia is not luke
    (CCNP, "ns1.leia", "10.2.0.1", "allow"),             # cluster-wide: every namespace
    (CCNP, "ns2.leia", "10.0.0.9", "allow"),             # and selects leia in both namespaces
]


@pytest.mark.parametrize("text,endpoint,peer,expected", ROWS)
def test_selectors_stay_in_the_policy_namespace(tmp_path, text, endpoint, peer, expected):
    plans = Planner(tmp_path).plans(text, inventory=INV)
    assert verdict(plans[endpoint], "ingress", peer) == expected


def test_namespaced_policy_selects_only_its_namespace(tmp_path):
    assert set(Planner(tmp_path).plans(CROSS, inventory=INV)) == {"ns1.leia"}
    assert set(Planner(tmp_path).plans(ISOLATE, inventory=INV)) == {"ns1.leia", "ns1.han", "ns2.luke", "ns2.leia"}


@pytest.mark.kernel
def test_isolation_between_namespaces_with_real_traffic(tmp_path, veth_pair, bpffs_dir, root_required,
                                                        clang_required):
    """Endpoint a (tc on its veth) in ns1 under isolate-namespaces; the peer b sends real
    TCP. b in ns2: refused; the same b declared in ns1: allowed."""
    from kinds.netpol.test_netpol_kernel import probe, servers

    from helpers.netpol import Loaded, compile_text

    p = veth_pair

    def inventory(peer_ns):
        return [{"name": "a", "namespace": "ns1", "labels": {"app": "a"},
                 "interfaces": [{"name": p.if_a, "netns": p.ns_a}], "addresses": [p.ip4_a]},
                {"name": "b", "namespace": peer_ns, "labels": {"app": "b"},
                 "interfaces": [{"name": p.if_b, "netns": p.ns_b}], "addresses": [p.ip4_b]}]

    with servers(p.ns_a, [8000]):
        for peer_ns, expected in (("ns2", False), ("ns1", True)):
            arts = {a.name: a for a in compile_text(tmp_path, ISOLATE, inventory(peer_ns))}
            with Loaded(arts["ns1.a"]) as ld:
                ld.attach(bpffs_dir)
                assert probe(p.ns_b, [["tcp", p.ip4_a, 8000]]) == [expected], peer_ns
                ld.detach()
