"""Cilium L3/L4 semantics (docs/upstream.md §1.2) on the lowered tables, no kernel needed.

Every verdict is computed twice — by the datapath tables (LPM peer trie + verdict trie)
and by the rule-level oracle — and must agree (see conftest.verdict)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from bpfpolicy.kinds.netpol.lower import range_to_prefixes

from helpers.netpol_plan import Planner, rule_of, verdict


@pytest.fixture
def planner(tmp_path) -> Planner:
    return Planner(tmp_path)


HDR = "apiVersion: bpfpolicy.io/v1\nkind: NetworkPolicy\nmetadata: {name: %s}\n"


def pol(name: str, body: str) -> str:
    return HDR % name + body


def test_endpoint_open_until_selected_and_per_direction(planner):
    plans = planner.plans(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [198.51.100.0/24]
"""))
    assert set(plans) == {"web"}  # db/client unselected: no artifact, fully open
    web = plans["web"]
    assert verdict(web, "ingress", "198.51.100.9") == "allow"
    assert verdict(web, "ingress", "203.0.113.1") == "default-deny"
    assert verdict(web, "egress", "203.0.113.1") == "pass"  # egress untouched


def test_deny_only_policy_turns_on_default_deny(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - fromCIDR: [198.51.100.0/24]
"""))
    assert verdict(web, "ingress", "198.51.100.9") == "deny"
    assert verdict(web, "ingress", "203.0.113.1") == "default-deny"


def test_enable_default_deny_false_is_ignored_when_another_rule_wants_it(planner):
    text = pol("a", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {ingress: false}
  ingress:
  - fromCIDR: [198.51.100.0/24]
  ingressDeny:
  - fromCIDR: [192.0.2.0/24]
""")
    web = planner.plan(text)
    assert verdict(web, "ingress", "203.0.113.1") == "pass"
    assert verdict(web, "ingress", "192.0.2.1") == "deny"
    web = planner.plan(text + "---\n" + pol("b", """
spec:
  endpointSelector: {matchLabels: {tier: front}}
  ingress:
  - fromCIDR: [100.64.0.0/10]
"""))
    assert verdict(web, "ingress", "203.0.113.1") == "default-deny"
    assert verdict(web, "ingress", "198.51.100.4") == "allow"
    assert verdict(web, "ingress", "100.64.1.1") == "allow"


def test_rules_or_and_peer_and_port_within_a_rule(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [198.51.100.0/24]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - fromCIDR: [192.0.2.0/24]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
"""))
    assert verdict(web, "ingress", "198.51.100.1", 6, 80) == "allow"
    assert verdict(web, "ingress", "198.51.100.1", 17, 53) == "default-deny"  # peer of rule 0, port of rule 1
    assert verdict(web, "ingress", "192.0.2.1", 17, 53) == "allow"
    assert verdict(web, "ingress", "192.0.2.1", 6, 80) == "default-deny"


def test_deny_wins_over_more_specific_allow(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [10.200.1.1/32]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  ingressDeny:
  - fromCIDR: [10.0.0.0/8]
"""))
    assert verdict(web, "ingress", "10.200.1.1", 6, 443) == "deny"
    assert rule_of(web, "ingress", "10.200.1.1", 6, 443) == "NetworkPolicy/p:spec.ingressDeny[0]"


def test_docs_example_l4_l3_allows_and_l4_deny(planner):
    """Docs: allow {L4 :80, L4 :81, L3 client} + deny L4 :80 → :81 and ping allowed, :80
    denied; adding deny L3 client → all denied."""
    allow = pol("allow", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toPorts: [{ports: [{port: "81", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: client}}]
""")
    deny80 = pol("deny80", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
""")
    web = planner.plan(allow + "---\n" + deny80)
    client = "10.0.0.6"
    assert verdict(web, "ingress", client, 6, 81) == "allow"
    assert verdict(web, "ingress", client, 1, 8) == "allow"  # ping: the L3 rule covers ICMP
    assert verdict(web, "ingress", client, 6, 80) == "deny"
    assert verdict(web, "ingress", "203.0.113.9", 6, 81) == "allow"  # L4-only rule: any peer
    assert verdict(web, "ingress", "203.0.113.9", 1, 8) == "default-deny"
    deny_client = pol("denyclient", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
""")
    web = planner.plan(allow + "---\n" + deny80 + "---\n" + deny_client)
    for proto, port in ((6, 80), (6, 81), (1, 8), (17, 53)):
        assert verdict(web, "ingress", client, proto, port) == "deny"


def test_except_inside_deny_still_default_denied_issue_20914(planner):
    text = pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  egressDeny:
  - toCIDRSet: [{cidr: 1.0.0.0/8, except: [1.1.1.1/32]}]
""")
    web = planner.plan(text)
    assert verdict(web, "egress", "1.2.3.4") == "deny"
    assert verdict(web, "egress", "1.1.1.1") == "default-deny"  # the except only exempts from the deny
    web = planner.plan(text + "---\n" + pol("allow", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDR: [1.1.1.1/32]
"""))
    assert verdict(web, "egress", "1.1.1.1") == "allow"
    assert verdict(web, "egress", "1.1.1.2") == "deny"


def test_cidrset_except_carves_out_of_allow(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDRSet:
    - cidr: 10.0.0.0/8
      except: [10.1.0.0/16, 10.2.3.0/24]
  - fromCIDR: [10.1.2.0/24]
"""))
    assert verdict(web, "ingress", "10.9.9.9") == "allow"
    assert verdict(web, "ingress", "10.1.9.9") == "default-deny"
    assert verdict(web, "ingress", "10.1.2.3") == "allow"  # overlapping allow of another rule
    assert verdict(web, "ingress", "10.2.3.4") == "default-deny"
    assert verdict(web, "ingress", "10.2.4.4") == "allow"


def test_empty_forms(planner):
    deny_all = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{}]
"""))
    for addr in ("10.0.0.6", "203.0.113.1", "127.0.0.1"):
        assert verdict(deny_all, "ingress", addr) == "default-deny"
    eps = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{}]
"""))
    assert verdict(eps, "ingress", "10.0.0.6", 17, 9) == "allow"
    assert verdict(eps, "ingress", "10.0.0.7", 1, 8) == "allow"
    assert verdict(eps, "ingress", "203.0.113.1") == "default-deny"  # not world
    assert verdict(eps, "ingress", "192.168.1.10") == "default-deny"  # not the host
    l4_only = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "22", protocol: TCP}]}]
"""))
    assert verdict(l4_only, "ingress", "203.0.113.1", 6, 22) == "allow"
    assert verdict(l4_only, "ingress", "10.0.0.6", 6, 22) == "allow"
    assert verdict(l4_only, "ingress", "203.0.113.1", 1, 8) == "default-deny"  # L4 rule: no ICMP
    l3_only = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [203.0.113.0/24]
"""))
    for proto, port in ((6, 1), (17, 65535), (132, 9), (1, 8), (47, 0)):
        assert verdict(l3_only, "ingress", "203.0.113.1", proto, port) == "allow"


def test_any_is_tcp_udp_sctp_never_icmp(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "0", protocol: ANY}]}]
"""))
    for proto in (6, 17, 132):
        assert verdict(web, "ingress", "203.0.113.1", proto, 12345) == "allow"
    assert verdict(web, "ingress", "203.0.113.1", 1, 8) == "default-deny"
    assert verdict(web, "ingress", "fd00::99", 58, 128) == "default-deny"
    assert verdict(web, "ingress", "203.0.113.1", 47, 0) == "default-deny"


def test_port_range_bounds_and_protocol(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toPorts: [{ports: [{port: "80", endPort: 444, protocol: TCP}]}]
"""))
    assert verdict(web, "egress", "203.0.113.1", 6, 79) == "default-deny"
    assert verdict(web, "egress", "203.0.113.1", 6, 80) == "allow"
    assert verdict(web, "egress", "203.0.113.1", 6, 300) == "allow"
    assert verdict(web, "egress", "203.0.113.1", 6, 444) == "allow"
    assert verdict(web, "egress", "203.0.113.1", 6, 445) == "default-deny"
    assert verdict(web, "egress", "203.0.113.1", 17, 100) == "default-deny"


def test_icmp_types_by_number_and_name_per_family(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - icmps:
    - fields:
      - {type: EchoRequest}
      - {type: EchoRequest, family: IPv6}
      - {type: 13}
"""))
    assert verdict(web, "egress", "203.0.113.1", 1, 8) == "allow"
    assert verdict(web, "egress", "203.0.113.1", 1, 13) == "allow"
    assert verdict(web, "egress", "203.0.113.1", 1, 0) == "default-deny"
    assert verdict(web, "egress", "2001:db8::1", 58, 128) == "allow"
    assert verdict(web, "egress", "2001:db8::1", 58, 8) == "default-deny"
    assert verdict(web, "egress", "203.0.113.1", 6, 8) == "default-deny"


def test_entities_on_one_host(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [world]
    toPorts: [{ports: [{port: "1", protocol: TCP}]}]
  - fromEntities: [host]
    toPorts: [{ports: [{port: "2", protocol: TCP}]}]
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: "3", protocol: TCP}]}]
  - fromEntities: [all]
    toPorts: [{ports: [{port: "4", protocol: TCP}]}]
  - fromEntities: [world-ipv6]
    toPorts: [{ports: [{port: "5", protocol: TCP}]}]
"""))
    world, host, loop, ep = "203.0.113.1", "192.168.1.10", "127.0.0.1", "10.0.0.6"
    expect = {  # port -> peers allowed
        1: {world}, 2: {host, loop}, 3: {host, loop, ep}, 4: {world, host, loop, ep}, 5: set()}
    for port, allowed in expect.items():
        for addr in (world, host, loop, ep):
            want = "allow" if addr in allowed else "default-deny"
            assert verdict(web, "ingress", addr, 6, port) == want, (port, addr)
    assert verdict(web, "ingress", "2001:db8::5", 6, 5) == "allow"
    assert verdict(web, "ingress", "fd00::6", 6, 5) == "default-deny"  # an endpoint, not world


def test_cidr_rules_never_match_managed_endpoints(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [10.0.0.0/8, 192.168.0.0/16]
"""))
    assert verdict(web, "ingress", "10.9.9.9") == "allow"
    assert verdict(web, "ingress", "10.0.0.6") == "default-deny"  # inventory endpoint
    assert verdict(web, "ingress", "192.168.1.10") == "default-deny"  # the host


def test_selectors_match_expressions_and_source_prefix(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {"k8s:app": web}}
  ingress:
  - fromEndpoints:
    - matchExpressions:
      - {key: tier, operator: In, values: [back]}
      - {key: app, operator: NotIn, values: [web]}
    - matchExpressions:
      - {key: tier, operator: DoesNotExist}
"""))
    assert verdict(web, "ingress", "10.0.0.7") == "allow"  # db: tier=back
    assert verdict(web, "ingress", "10.0.0.6") == "allow"  # client: no tier
    assert verdict(web, "ingress", "10.0.0.5") == "default-deny"  # web itself: tier=front


def test_named_ports_ingress_own_egress_all_unknown_skipped(planner):
    plans = planner.plans(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: http-alt, protocol: TCP}, {port: pg, protocol: TCP}]}]
  egress:
  - toPorts: [{ports: [{port: PG, protocol: TCP}]}]
"""))
    web = plans["web"]
    assert verdict(web, "ingress", "203.0.113.1", 6, 8080) == "allow"
    assert verdict(web, "ingress", "203.0.113.1", 6, 5432) == "default-deny"  # pg is db's port
    assert any('skipping named port "pg"' in w for w in web.warnings)
    assert verdict(web, "egress", "203.0.113.1", 6, 5432) == "allow"


def test_audit_mode_logs_would_be_drops(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  enforcementMode: audit
  ingress:
  - toPorts: [{ports: [{port: "22", protocol: TCP}]}]
  ingressDeny:
  - fromCIDR: [192.0.2.0/24]
"""))
    assert verdict(web, "ingress", "203.0.113.1", 6, 22) == "allow"
    assert verdict(web, "ingress", "203.0.113.1", 6, 23) == "audit-default-deny"
    assert verdict(web, "ingress", "192.0.2.1", 6, 22) == "audit-deny"
    assert verdict(web, "egress", "203.0.113.1", 6, 23) == "pass"


def test_enforce_and_audit_policies_on_one_endpoint(planner):
    web = planner.plan(pol("enf", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
""") + "---\n" + pol("aud", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  enforcementMode: audit
  ingressDeny:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""))
    assert verdict(web, "ingress", "203.0.113.1", 6, 80) == "audit-deny"  # enforce allows, audit logs
    assert verdict(web, "ingress", "203.0.113.1", 6, 81) == "default-deny"  # enforced


def test_policies_merge_per_endpoint_union_of_allows(planner):
    plans = planner.plans(pol("a", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
""") + "---\n" + pol("b", """
specs:
- endpointSelector: {matchLabels: {tier: front}}
  ingress:
  - toPorts: [{ports: [{port: "443", protocol: TCP}]}]
- endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
"""))
    web, db = plans["web"], plans["db"]
    assert verdict(web, "ingress", "203.0.113.1", 6, 80) == "allow"
    assert verdict(web, "ingress", "203.0.113.1", 6, 443) == "allow"
    assert rule_of(web, "ingress", "203.0.113.1", 6, 443) == "NetworkPolicy/b:specs[0].ingress[0]"
    assert verdict(db, "ingress", "10.0.0.5", 6, 5432) == "allow"
    assert verdict(db, "ingress", "10.0.0.6", 6, 5432) == "default-deny"


def test_node_selector_selects_only_the_host(planner):
    plans = planner.plans("""apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: host-fw}
spec:
  nodeSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "22", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: all-eps}
spec:
  endpointSelector: {}
  egress: [{}]
""")
    assert set(plans) == {"node", "web", "client", "db"}
    node = plans["node"]
    assert verdict(node, "ingress", "203.0.113.1", 6, 22) == "allow"
    assert verdict(node, "ingress", "203.0.113.1", 6, 23) == "default-deny"
    assert verdict(node, "egress", "203.0.113.1", 6, 23) == "pass"  # endpointSelector {} skips the host
    assert verdict(plans["web"], "egress", "203.0.113.1") == "default-deny"


def test_lenient_drop_of_only_allow_rule_keeps_default_deny(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toFQDNs: [{matchName: example.com}]
"""), lenient=True)
    assert verdict(web, "egress", "203.0.113.1") == "default-deny"  # never wider than written


def test_ipv6_cidrs(planner):
    web = planner.plan(pol("p", """
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDRSet: [{cidr: "2001:db8::/32", except: ["2001:db8:1::/48"]}]
"""))
    assert verdict(web, "egress", "2001:db8:2::1") == "allow"
    assert verdict(web, "egress", "2001:db8:1::1") == "default-deny"
    assert verdict(web, "egress", "203.0.113.1") == "default-deny"


def test_range_to_prefixes_covers_exactly():
    rng = random.Random(7)
    for _ in range(300):
        lo = rng.randrange(65536)
        hi = rng.randrange(lo, 65536)
        blocks = range_to_prefixes(lo, hi)
        covered = []
        for base, plen in blocks:
            size = 1 << (16 - plen)
            assert base % size == 0
            covered.append((base, base + size - 1))
        covered.sort()
        assert covered[0][0] == lo and covered[-1][1] == hi
        assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:], strict=False))
    assert range_to_prefixes(0, 65535) == [(0, 0)]


def test_random_policies_tables_match_oracle(planner):
    """Differential: random CIDR/port/deny/audit policies, random probes."""
    rng = random.Random(20914)
    nets = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "192.0.2.0/24", "0.0.0.0/0"]
    for trial in range(12):
        rules = []
        for _ in range(rng.randint(1, 6)):
            sec = rng.choice(["ingress", "ingressDeny"])
            net = rng.choice(nets)
            n = ipaddress.ip_network(net)
            subs = [x for x in nets if ipaddress.ip_network(x).subnet_of(n) and x != net]
            peer = (f"fromCIDRSet: [{{cidr: {net}, except: [{rng.choice(subs)}]}}]"
                    if subs and rng.random() < 0.5 else f"fromCIDR: [{net}]")
            lo = rng.randrange(1, 2000)
            ports = rng.choice(["", f"toPorts: [{{ports: [{{port: \"{lo}\", endPort: {lo + rng.randrange(300)}, protocol: {rng.choice(['TCP', 'UDP', 'ANY'])}}}]}}]"])
            rules.append(f"  {sec}:\n  - {peer}\n" + (f"    {ports}\n" if ports else ""))
        docs = []
        for i, r in enumerate(rules):
            mode = "  enforcementMode: audit\n" if rng.random() < 0.2 else ""
            docs.append(pol(f"r{trial}-{i}", "spec:\n  endpointSelector: {matchLabels: {app: web}}\n" + mode + r))
        web = planner.plan("---\n".join(docs))
        for _ in range(150):
            addr = rng.choice(["10.1.2.3", "10.1.2.4", "10.1.9.9", "10.9.9.9", "192.0.2.7", "203.0.113.1", "10.0.0.6"])
            verdict(web, "ingress", addr, rng.choice([6, 17, 132, 1]), rng.randrange(0, 2400))
