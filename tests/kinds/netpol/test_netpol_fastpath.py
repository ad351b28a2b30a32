"""The NetworkPolicy fast-path layout (issue #15): np_trie4 (16-8-8 multibit trie of array
chunks), np_psets / np_ports / np_verdicts — against longest-prefix match and the
rule-level oracle, in userspace and on the real kernel (BPF_PROG_TEST_RUN: verdict of
every probe and the per-rule counters), IPv4, IPv6 and IPv4-mapped peers, port intervals
on both sides of PORT_POINTS_MAX."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest

from bpfpolicy.kinds.netpol.lower import (
    ACTION_NAMES,
    DROPS,
    PORT_POINTS_MAX,
    TRIE4_LEVEL1,
    build_trie4,
    encode_maps,
)
from bpfpolicy.kinds.netpol.packets import frame
from bpfpolicy.policy.diagnostics import BuildError

from helpers.netpol import Loaded, compile_text
from helpers.netpol_plan import Planner

HDR = "apiVersion: bpfpolicy.io/v1\nkind: NetworkPolicy\nmetadata: {name: %s}\n"
SELECT = "spec:\n  endpointSelector: {matchLabels: {app: srv}}\n"
INVENTORY = [
    {"name": "srv", "labels": {"app": "srv"}, "interfaces": [{"name": "eth0", "netns": "fastpath"}],
     "addresses": ["10.0.0.5", "fd00::5"]},
    {"name": "node", "host": True, "labels": {"role": "node"}, "interfaces": [{"name": "eth0"}],
     "addresses": ["192.168.1.10", "fd00::10"]},
]
V4 = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.128/25", "10.1.2.3/32", "10.1.2.0/31",
      "172.16.0.0/12", "172.16.5.0/28", "192.0.2.0/24", "0.0.0.0/0", "10.2.0.0/17", "10.2.64.0/20"]
V6 = ["2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64", "2001:db8:1:2::7/128", "::/0",
      "2001:db8:1:2::/127"]
# port intervals as (start, ports): 1, PORT_POINTS_MAX - 1, PORT_POINTS_MAX, PORT_POINTS_MAX + 1, wide
WIDTHS = [1, PORT_POINTS_MAX - 1, PORT_POINTS_MAX, PORT_POINTS_MAX + 1, 300, 5000]


def _lpm(prefixes: dict, addr: int) -> int:
    a = ipaddress.IPv4Address(addr)
    return prefixes[max((n for n in prefixes if a in n), key=lambda n: n.prefixlen)]


def _edges(net) -> list:
    first, last = int(net.network_address), int(net.broadcast_address)
    top = 2 ** net.max_prefixlen - 1
    return [x for x in (first - 1, first, first + 1, last - 1, last, last + 1) if 0 <= x <= top]


def test_trie4_is_longest_prefix_match():
    """Random nested prefixes of every length 0-32: every edge address (first/last ±1 of
    each prefix) and random ones resolve as a longest-prefix match does."""
    rng = random.Random(15)
    for trial in range(40):
        nets = {ipaddress.ip_network("0.0.0.0/0"): 0}
        base = rng.randrange(1 << 32)
        for i in range(rng.randint(1, 60)):
            plen = rng.randrange(0, 33)
            addr = base ^ rng.getrandbits(rng.choice([4, 12, 20, 32]))  # clustered: shared chunks
            nets[ipaddress.ip_network((addr, plen), strict=False)] = i + 1
        chunks = build_trie4(nets)
        assert len(chunks) >= TRIE4_LEVEL1 and all(len(c) == 256 for c in chunks)
        probes = [x for n in nets for x in _edges(n)] + [rng.randrange(1 << 32) for _ in range(200)]
        for a in probes:
            e = chunks[a >> 24][(a >> 16) & 255]
            for shift in (8, 0):
                if e & (1 << 31):
                    e = chunks[e & ~(1 << 31)][(a >> shift) & 255]
            assert e == _lpm(nets, a), (trial, ipaddress.IPv4Address(a))


def test_trie4_chunk_limit_is_refused(monkeypatch):
    """More chunks than TRIE4_MAX_CHUNKS is a compile error, never a truncated table."""
    import bpfpolicy.kinds.netpol.lower as lower

    monkeypatch.setattr(lower, "TRIE4_MAX_CHUNKS", TRIE4_LEVEL1 + 2)
    nets = {ipaddress.ip_network("0.0.0.0/0"): 0, ipaddress.ip_network("10.1.2.3/32"): 1}
    assert len(lower.build_trie4(nets)) == TRIE4_LEVEL1 + 2  # one /16 chunk, one /24 chunk
    nets[ipaddress.ip_network("10.9.2.3/32")] = 2
    with pytest.raises(BuildError, match="TRIE4_MAX_CHUNKS"):
        lower.build_trie4(nets)


def _random_policy(rng: random.Random, trial: int) -> str:
    docs = []
    for i in range(rng.randint(1, 7)):
        sec = rng.choice(["ingress", "ingress", "ingressDeny"])
        nets = rng.choice([V4, V6])
        net = rng.choice(nets)
        n = ipaddress.ip_network(net)
        subs = [x for x in nets if ipaddress.ip_network(x).subnet_of(n) and x != net]
        kind = rng.random()
        if kind < 0.15:
            peer = f"fromEntities: [{rng.choice(['world', 'all', 'cluster', 'host', 'world-ipv6'])}]"
        elif subs and kind < 0.5:
            peer = f"fromCIDRSet: [{{cidr: \"{net}\", except: [\"{rng.choice(subs)}\"]}}]"
        else:
            peer = f"fromCIDR: [\"{net}\", \"{rng.choice(nets)}\"]"
        port = ""
        if rng.random() < 0.8:
            lo, width = rng.randrange(1, 3000), rng.choice(WIDTHS)
            end = f", endPort: {lo + width - 1}" if width > 1 else ""
            port = (f"    toPorts: [{{ports: [{{port: \"{lo}\"{end}, protocol: "
                    f"{rng.choice(['TCP', 'UDP', 'ANY'])}}}]}}]\n")
        mode = "  enforcementMode: audit\n" if rng.random() < 0.15 else ""
        docs.append(HDR % f"r{trial}-{i}" + SELECT + mode + f"  {sec}:\n  - {peer}\n" + port)
    return "---\n".join(docs)


def _probes(rng: random.Random, text: str) -> list[tuple[str, int, int]]:
    """(peer, protocol, port): prefix edges (v4, v6, and v4 as IPv4-mapped IPv6),
    inventory addresses, and ports at every interval edge."""
    addrs = [str(ipaddress.ip_address(x)) for n in V4 + V6 for x in _edges(ipaddress.ip_network(n))[1::2]]
    addrs += ["10.0.0.5", "192.168.1.10", "fd00::10", "127.0.0.1", "203.0.113.9", "2001:db9::1"]
    addrs += [f"::ffff:{a}" for a in ("10.1.2.3", "10.1.2.4", "172.16.5.1", "10.0.0.5")]
    ports = {0, 65535}
    for tok in text.replace(",", " ").replace("}", " ").replace('"', " ").replace(":", " ").split():
        if tok.isdigit():
            ports |= {max(0, int(tok) - 1), int(tok), min(65535, int(tok) + 1)}
    return [(rng.choice(addrs), rng.choice([6, 6, 17, 132]), rng.choice(sorted(ports))) for _ in range(120)]


def test_random_policies_layout_matches_oracle(tmp_path):
    """Differential, no kernel: the encoded layout (table_verdict walks np_trie4 chunks,
    np_psets, np_ports, np_verdicts) agrees with the rule-level oracle."""
    rng = random.Random(1515)
    planner = Planner(tmp_path)
    for trial in range(40):
        text = _random_policy(rng, trial)
        plan = planner.plan(text, endpoint="srv", inventory=INVENTORY)
        for addr, proto, port in _probes(rng, text):
            assert plan.table_verdict("ingress", addr, proto, port) == \
                plan.reference_verdict("ingress", addr, proto, port), (text, addr, proto, port)


def test_one_port_rule_is_one_hash_entry_and_wide_range_is_trie(tmp_path):
    """Where each interval goes: <= PORT_POINTS_MAX ports -> np_ports, wider -> np_verdicts;
    a peer set without port rules has only its np_psets verdict."""
    planner = Planner(tmp_path)
    plan = planner.plan(HDR % "p" + SELECT + "  ingress:\n"
                        "  - fromCIDR: [10.1.0.0/16]\n    toPorts: [{ports: [{port: \"443\", protocol: TCP}]}]\n"
                        "  - fromCIDR: [10.2.0.0/16]\n    toPorts: [{ports: [{port: \"1000\", endPort: 1999, protocol: UDP}]}]\n"
                        "  - fromCIDR: [10.3.0.0/16]\n",
                        endpoint="srv", inventory=INVENTORY)
    maps = encode_maps(plan)
    assert len(maps["np_ports"]) == 1 and len(maps["np_verdicts"]) > 0
    assert {x[:1] for x in plan.ranges} == {(plan.trie4_lookup(int(ipaddress.IPv4Address("10.2.0.1"))),)}
    third = plan.trie4_lookup(int(ipaddress.IPv4Address("10.3.4.5")))
    assert plan.psets[(third, 0)] == ((1, 8), 0)  # allow, rule slot 6 + 2, no port entries


@pytest.mark.kernel
def test_random_policies_kernel_matches_oracle(tmp_path, root_required, clang_required):
    """The same random policies loaded into the kernel: every probe frame's tc verdict
    (BPF_PROG_TEST_RUN) and the per-rule packet counters equal the oracle's. Each probe is
    a new flow (its own source port), so conntrack never answers for the policy."""
    rng = random.Random(2015)
    for trial in range(6):
        text = _random_policy(rng, trial)
        (art,) = [a for a in compile_text(tmp_path, text, INVENTORY, name=f"k{trial}.yaml") if a.name.endswith("srv")]
        plan = Planner(tmp_path).plan(text, endpoint="srv", inventory=INVENTORY)
        want: Counter[str] = Counter()
        with Loaded(art) as ld:
            before = ld.counters()
            for i, (addr, proto, port) in enumerate(_probes(rng, text)):
                v4 = ipaddress.ip_address(addr).version == 4
                action, slot = plan.reference_verdict("ingress", addr, proto, port)
                data = frame(addr, "10.0.0.5" if v4 else "fd00::5", proto, 20000 + i, port)
                got = ld.run("netpol_tc_ingress", data)
                assert got == (2 if action in DROPS else 0), (text, addr, proto, port, ACTION_NAMES[action])
                want[plan.slot_name(slot)] += 1
            after = ld.counters()
        counted = {k: after[k][0] - before[k][0] for k in after if after[k][0] != before[k][0]}
        assert counted == dict(want), text


def _tcp(src: str, dst: str, sport: int, dport: int, flags: int) -> bytes:
    from bpfpolicy.kinds import vectors
    from bpfpolicy.kinds.netpol.packets import STYLE

    return vectors.frame(STYLE, vectors.Flow(src, dst, 6, sport, dport), tcp_flags=flags)


@pytest.mark.kernel
def test_syn_is_judged_before_conntrack(tmp_path, root_required, clang_required):
    """A TCP SYN without ACK is judged by policy before conntrack is looked up: a peer
    reusing the reverse tuple of a connection the endpoint opened is dropped under
    ingress default deny (its SYN-ACK on the same tuple passes as the reply), an allowed
    SYN still opens conntrack (the endpoint's answer passes as a reply), and a
    retransmitted allowed SYN passes again, counted to its rule."""
    syn, synack, ack = 0x02, 0x12, 0x10
    text = (HDR % "syn" + SELECT + "  ingress:\n  - fromCIDR: [10.1.0.0/16]\n"
            "    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]\n")
    (art,) = [a for a in compile_text(tmp_path, text, INVENTORY) if a.name.endswith("srv")]
    with Loaded(art) as ld:
        before = ld.counters()
        # the endpoint connects out (egress has no policy): conntrack entry, origin egress
        assert ld.run("netpol_tc_egress", _tcp("10.0.0.5", "203.0.113.9", 45000, 443, syn)) == 0
        assert ld.run("netpol_tc_ingress", _tcp("203.0.113.9", "10.0.0.5", 443, 45000, synack)) == 0
        assert ld.run("netpol_tc_ingress", _tcp("203.0.113.9", "10.0.0.5", 443, 45000, ack)) == 0
        # the peer opens a connection on that tuple: a SYN is never a reply
        assert ld.run("netpol_tc_ingress", _tcp("203.0.113.9", "10.0.0.5", 443, 45000, syn)) == 2
        # allowed SYN, retransmitted, then the endpoint's SYN-ACK and the peer's ACK
        for _ in range(2):
            assert ld.run("netpol_tc_ingress", _tcp("10.1.2.3", "10.0.0.5", 5000, 80, syn)) == 0
        assert ld.run("netpol_tc_egress", _tcp("10.0.0.5", "10.1.2.3", 80, 5000, synack)) == 0
        assert ld.run("netpol_tc_ingress", _tcp("10.1.2.3", "10.0.0.5", 5000, 80, ack)) == 0
        # not allowed: SYN and a bare ACK from a peer with no flow are dropped
        assert ld.run("netpol_tc_ingress", _tcp("10.1.2.3", "10.0.0.5", 5001, 81, syn)) == 2
        assert ld.run("netpol_tc_ingress", _tcp("10.1.2.3", "10.0.0.5", 5002, 81, ack)) == 2
        after = ld.counters()
    got = {k: after[k][0] - before[k][0] for k in after if after[k][0] != before[k][0]}
    rule = next(k for k in got if k.startswith("NetworkPolicy/syn"))
    assert got == {"egress/no-policy": 1, "ingress/reply": 2, "ingress/default-deny": 3,
                   rule: 3, "egress/reply": 1}, got
