"""Large and nested CIDR lists (issue #15: a CIDR added to a 10k-CIDR policy under `watch`).

The parser reuses the networks of CIDR texts it has seen (`rules._cidr_memo`) and the
lowering assigns peer sets in one sorted pass over integer keys: both must give the same
diagnostics, at the same positions, and the same verdicts as the rule-level oracle."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

from bpfpolicy.kinds.netpol import rules
from bpfpolicy.kinds.netpol.inventory import parse_inventory
from bpfpolicy.kinds.netpol.lower import plan_endpoint
from bpfpolicy.kinds.netpol.rules import parse_policy
from bpfpolicy.policy.load import load_file
from bpfpolicy.policy.validate import validate_documents, validate_paths

from helpers.netpol_plan import INVENTORY, Planner, verdict

HEAD = "apiVersion: bpfpolicy.io/v1\nkind: NetworkPolicy\nmetadata: {name: big}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n"


def test_memoised_cidrs_report_every_occurrence_where_it_is_written(tmp_path: Path) -> None:
    """The same bad / host-bits CIDR twice, validated twice (the second time from the memo):
    every occurrence is reported at its own line:col, every time."""
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "  ingress:\n  - fromCIDR: [10.1.2.3/8, 192.0.2.0/24, 10.1.2.3/8]\n"
                 "  - fromCIDR:\n    - 10.0.0.300/8\n    - 10.0.0.300/8\n")
    for _ in range(2):
        result = validate_paths([f])
        warnings = [(d.line, d.col, d.path, d.message) for d in result.diagnostics if d.severity == "warning"]
        assert warnings == [
            (7, 16, "spec.ingress[0].fromCIDR[0]", '"10.1.2.3/8" has host bits set; it means 10.0.0.0/8'),
            (7, 42, "spec.ingress[0].fromCIDR[2]", '"10.1.2.3/8" has host bits set; it means 10.0.0.0/8')]
        errors = [d for d in result.diagnostics if d.severity == "error"]
        assert [(d.line, d.col, d.path) for d in errors] == [
            (9, 7, "spec.ingress[1].fromCIDR[0]"), (10, 7, "spec.ingress[1].fromCIDR[1]")]
        assert all('"10.0.0.300/8" is not a valid CIDR' in d.message for d in errors)


def test_memo_is_bounded_and_refills(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rules, "CIDR_MEMO_MAX", 8)
    monkeypatch.setattr(rules, "_cidr_memo", {})
    cidrs = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(40)]
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + f"  ingress:\n  - fromCIDR: [{', '.join(cidrs)}]\n")
    for _ in range(2):
        result = validate_paths([f])
        assert result.ok and not result.diagnostics
        model = result.policies[0].model
        got = [str(c.net) for s in model.rules for r in s.rules for c in r.cidrs]
        assert got == cidrs
        assert len(rules._cidr_memo) <= 8


def _plan_web(tmp_path: Path, text: str):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    result = validate_documents(load_file(f))
    assert result.ok, [str(d) for d in result.diagnostics]
    inv = parse_inventory(INVENTORY)
    specs = [s for v in result.policies for s in parse_policy(v.doc)]
    return plan_endpoint(next(e for e in inv if e.name == "web"), specs, inv)


def test_cidr_added_to_a_large_list_changes_only_its_prefix(tmp_path: Path) -> None:
    """2,000 /24s, then one /32 more (the bench's change): the plans differ only in the new
    prefix, the /32 gets the rule's peer set, and addresses outside every CIDR stay denied."""
    cidrs = [f"{10 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24" for i in range(2000)]
    body = "  ingress:\n  - fromCIDR: [{}]\n    toPorts: [{{ports: [{{port: '53', protocol: UDP}}]}}]\n"
    before = _plan_web(tmp_path, HEAD + body.format(", ".join(cidrs)))
    after = _plan_web(tmp_path, HEAD + body.format(", ".join([*cidrs, "198.51.100.1/32"])))
    new = ipaddress.ip_network("198.51.100.1/32")
    assert set(after.peers) - set(before.peers) == {new}
    assert {n: before.peer_sets[p] for n, p in before.peers.items()} == \
        {n: after.peer_sets[p] for n, p in after.peers.items() if n != new}
    assert after.peer_sets[after.peers[new]] == after.peer_sets[after.peers[ipaddress.ip_network(cidrs[7])]]
    for plan, peer, want in ((before, "198.51.100.1", "default-deny"), (after, "198.51.100.1", "allow"),
                             (after, "198.51.100.2", "default-deny"), (after, "10.0.7.9", "allow"),
                             (after, "10.7.208.1", "default-deny")):
        assert verdict(plan, "ingress", peer, 17, 53) == want, (peer, want)
    assert verdict(after, "ingress", "198.51.100.1", 17, 54) == "default-deny"


def test_random_nested_cidrs_entities_and_managed_addresses_match_oracle(tmp_path: Path) -> None:
    """Nested prefixes (both families) with excepts, deny and allow, entity rules, CIDRs that
    contain inventory addresses (managed: CIDR rules never match them) and the host's: the
    tables agree with the oracle at every prefix's first and last address and around them."""
    rng = random.Random(15)
    pool4 = ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/16", "10.0.0.0/24", "10.0.0.4/30", "10.0.0.5/32",
             "10.1.0.0/16", "10.1.2.0/24", "10.1.2.128/25", "10.1.2.3/32", "192.168.0.0/16",
             "192.168.1.0/24", "192.0.2.0/24", "192.0.2.64/26", "127.0.0.0/8", "127.0.0.0/16",
             "127.0.0.1/32"]
    pool6 = ["::/0", "::1/128", "fd00::/8", "fd00::/64", "fd00::6/128", "2001:db8::/32", "2001:db8:1::/48"]
    planner = Planner(tmp_path)
    for trial in range(25):
        sections: dict[str, list[str]] = {}
        for _ in range(rng.randint(2, 7)):
            sec = rng.choice(["ingress", "ingress", "ingressDeny", "egress", "egressDeny"])
            p = "from" if sec.startswith("ingress") else "to"
            pool = rng.choice([pool4, pool4, pool6])
            if rng.random() < 0.15:
                peer = f"{p}Entities: [{rng.choice(['world', 'cluster', 'host', 'world-ipv4', 'world-ipv6', 'all'])}]"
            elif rng.random() < 0.5:
                net = rng.choice(pool)
                n = ipaddress.ip_network(net)
                subs = [x for x in pool if ipaddress.ip_network(x).subnet_of(n) and x != net]  # type: ignore[arg-type]
                exc = rng.sample(subs, min(len(subs), rng.randint(0, 2)))
                peer = f"{p}CIDRSet: [{{cidr: '{net}', except: [{', '.join(repr(e) for e in exc)}]}}]"
            else:
                peer = f"{p}CIDR: [{', '.join(repr(x) for x in rng.sample(pool, rng.randint(1, 4)))}]"
            ports = rng.choice(["", "    toPorts: [{ports: [{port: '80', protocol: TCP}]}]\n"])
            sections.setdefault(sec, []).append(f"  - {peer}\n{ports}")
        body = "".join(f"  {sec}:\n" + "".join(items) for sec, items in sections.items())
        plan = planner.plan(HEAD.replace("name: big", f"name: t{trial}") + body)
        probes: set[str] = set()
        for net in plan.peers:
            for a in (int(net.network_address), int(net.broadcast_address)):
                for d in (-1, 0, 1):
                    x = a + d
                    if 0 <= x < (1 << net.max_prefixlen):
                        probes.add(str(ipaddress.ip_address(x) if net.version == 4 else ipaddress.IPv6Address(x)))
        for addr in sorted(probes):
            for d in ("ingress", "egress"):
                verdict(plan, d, addr, 6, 80)
                verdict(plan, d, addr, 17, 53)
