"""Cilium fidelity items from the live check (issue 15): what a host cannot do like a
cluster is said at compile time, and `allow-localhost` is configurable.

* a policy selecting no inventory endpoint is a warning, not a silent "no changes";
* a cgroup endpoint under ingress default deny is warned about what cgroup_skb cannot
  see (kernel-answered packets: ICMP echo, RST of a closed port);
* allow-localhost `policy` (default) vs `always`, with real TCP over a veth on tc.
"""

from __future__ import annotations

import pytest

from bpfpolicy.kinds import CompileContext
from bpfpolicy.policy.compile import compile_paths

HOST_ONLY = """apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: lock-host}
spec:
  nodeSelector: {matchLabels: {type: worker}}
  ingress: [{fromEntities: [cluster]}]
"""
NOBODY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {name: x}
spec:
  endpointSelector: {matchLabels: {app: nobody}}
  ingress: [{fromEntities: [world]}]
"""
CG_DENY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {name: web-in}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{toPorts: [{ports: [{port: "80", protocol: TCP}]}]}]
"""
INV = [{"name": "web", "labels": {"app": "web"}, "cgroup": "/sys/fs/cgroup/unified/web",
        "addresses": ["10.0.0.5"]}]

# (policy, inventory, warning fragment) — one row per warned condition
WARNINGS = [
    (NOBODY, INV, "NetworkPolicy/x: selects no endpoint in the inventory"),
    (HOST_ONLY, INV, "CiliumClusterwideNetworkPolicy/lock-host: selects no endpoint in the inventory; "
                     "a nodeSelector selects the inventory entry with host: true and there is none"),
    (CG_DENY, INV, "inventory endpoint 'web' is enforced with cgroup_skb"),
]


@pytest.mark.parametrize("text,inventory,fragment", WARNINGS, ids=["nobody", "no-host", "cgroup-blind"])
def test_compile_warns(tmp_path, clang_required, text, inventory, fragment):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    result = compile_paths([f], CompileContext(options={"inventory": inventory}))
    assert result.ok, [str(d) for d in result.diagnostics]
    warnings = [d for d in result.diagnostics if d.severity == "warning"]
    assert any(fragment in d.message and d.file == str(f) and d.line == 3 for d in warnings), \
        [str(d) for d in warnings]


def test_tc_endpoint_under_default_deny_gets_no_cgroup_warning(tmp_path, clang_required):
    f = tmp_path / "p.yaml"
    f.write_text(CG_DENY)
    inv = [{**INV[0], "cgroup": None, "interfaces": ["eth0"]}]
    result = compile_paths([f], CompileContext(options={"inventory": inv}))
    assert result.ok and not [d for d in result.diagnostics if d.severity == "warning"]


def test_allow_localhost_value_is_checked():
    from bpfpolicy.kinds.netpol.inventory import InventoryError, parse_inventory

    with pytest.raises(InventoryError, match="allowLocalhost: 'sometimes' is not one of policy, always"):
        parse_inventory([{**INV[0], "allowLocalhost": "sometimes"}])


@pytest.mark.kernel
@pytest.mark.parametrize("mode,where,expected", [
    ("policy", "option", False),   # Cilium's default: the host is a peer like any other
    ("always", "option", True),    # Kubernetes: the host always reaches its endpoints
    ("always", "inventory", True),  # the same, for this endpoint only
])
def test_allow_localhost_with_real_traffic(tmp_path, veth_pair, bpffs_dir, root_required, clang_required,
                                           mode, where, expected):
    """Endpoint a (tc on its veth) under ingress default deny; the peer's address is the
    inventory's host entry, so its connection is host → endpoint."""
    from kinds.netpol.test_netpol_kernel import probe, servers

    from bpfpolicy.kinds.netpol.kind import NetworkPolicyKind
    from bpfpolicy.policy.load import load_file
    from bpfpolicy.policy.validate import validate_documents

    from helpers.netpol import Loaded

    p = veth_pair
    a = {"name": "a", "labels": {"app": "web"}, "interfaces": [{"name": p.if_a, "netns": p.ns_a}],
         "addresses": [p.ip4_a]}
    if where == "inventory":
        a["allowLocalhost"] = mode
    inv = [a, {"name": "node", "host": True, "addresses": [p.ip4_b]}]
    f = tmp_path / "p.yaml"
    f.write_text(CG_DENY)
    docs = [v.doc for v in validate_documents(load_file(f)).policies]
    opts = {"inventory": inv, **({"allow_localhost": mode} if where == "option" else {})}
    (art,) = NetworkPolicyKind().compile_set(docs, CompileContext(options=opts))
    with servers(p.ns_a, [8000]), Loaded(art) as ld:
        ld.attach(bpffs_dir)
        assert probe(p.ns_b, [["tcp", p.ip4_a, 8000]]) == [expected]
        if expected:
            assert ld.counters()["allow-localhost:always"][0] >= 1
        ld.detach()
