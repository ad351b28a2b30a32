"""Lowering: policies + inventory → one enforcement plan per endpoint → map contents.

Cilium enforces per endpoint, merging every policy that selects it; so do we. For each
endpoint the plan holds:

* **peers**: address → peer-set id. The prefixes inserted are every CIDR and `except`
  of the endpoint's rules, every inventory address, loopback and 0/0. Each prefix P maps
  to the set of rules whose peer part matches the addresses whose longest match is P —
  the userspace equivalent of Cilium's CIDR identities. IPv4 is flattened into a 16-8-8
  multibit trie of 256-entry array chunks (`np_trie4`, leaf-pushed: at most three plain
  array lookups, no LPM walk); IPv6 stays an LPM trie (`np_peers6`).
* **verdicts**, resolved here in userspace (deny-over-allow, audit, default deny), so the
  datapath never combines entries:
  - `np_psets[peer * 2 + direction]`: the verdict for every protocol/port no port rule
    names (the direction's default when no peer-wide rule matches), plus flags saying
    whether this (peer set, direction) has port entries at all;
  - `np_ports` (hash): exact `(peer, direction, protocol, port)` for port intervals of at
    most PORT_POINTS_MAX ports (the usual one-port rule: one hash lookup);
  - `np_verdicts` (LPM trie): wider port intervals as port prefixes.
  A new packet from a peer set without port entries costs the peer lookup and one array
  lookup; with them, one hash lookup more (and the range trie only when it has ranges).
* **defaults** per direction (`np_defaults`, the peer lookup failed): default deny,
  audited default deny, or pass when no selecting policy has a section for that direction.

Before any of that, two things pass without a verdict (docs/networkpolicy.md, Fidelity):
traffic inside the endpoint (on a cgroup endpoint: a packet on `lo` whose peer is loopback
or one of the endpoint's own addresses, `np_self`) and, with `allow_frag_needed` (on by
default, Cilium's `allow-icmp-frag-needed`), an ingress ICMP frag-needed / ICMPv6
packet-too-big, counted as `ingress/reply`.

`reference_verdict()` computes the same answer straight from the rules (no tables); the
tests check the tables against it on every probe.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from ...policy.diagnostics import BuildError
from .inventory import Endpoint
from .rules import ICMP, ICMPV6, L4, Net, PeerRule, SpecRule

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

# verdict actions (shared with the C template)
PASS, ALLOW, DENY, DEFAULT_DENY, AUDIT_DENY, AUDIT_DEFAULT = range(6)
ACTION_NAMES = ["pass", "allow", "deny", "default-deny", "audit-deny", "audit-default-deny"]
DROPS = (DENY, DEFAULT_DENY)
DIRS = ("ingress", "egress")
DIR_NUM = {"ingress": 0, "egress": 1}

# counter slots before the rules: default deny, conntrack replies, no policy
SLOT_DEFAULT = {"ingress": 0, "egress": 1}
SLOT_REPLY = {"ingress": 2, "egress": 3}
SLOT_NOPOLICY = {"ingress": 4, "egress": 5}
RESERVED_SLOTS = 6
RESERVED_NAMES = ["ingress/default-deny", "egress/default-deny", "ingress/reply",
                  "egress/reply", "ingress/no-policy", "egress/no-policy"]

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
PROTOS_ANY_PORT = (6, 17, 132)

# Port intervals of at most this many ports are stored port by port in the np_ports hash
# (one exact lookup for the common one-port rule); wider ones as port prefixes in the
# np_verdicts LPM trie. 16 bounds the expansion (<= 16 hash entries per interval, where
# the same interval costs up to 8 prefixes) while small ranges never touch the trie.
PORT_POINTS_MAX = 16
# np_psets flags: this (peer set, direction) has entries in np_ports / np_verdicts
PS_POINTS, PS_RANGES = 1, 2
# np_trie4: a 16-8-8 multibit trie of 256-entry u32 chunks. Chunks 0-255 are the /16 level
# (chunk = first octet, index = second); an entry with TRIE4_CHILD set names the chunk of
# the next 8 bits, otherwise it is the peer-set id of the longest prefix (leaf pushing).
TRIE4_CHILD = 1 << 31
TRIE4_LEVEL1 = 256
# Each chunk is 1 KiB of kernel memory: 65,536 chunks (64 MiB per endpoint) hold ~60,000
# prefixes longer than /16 in distinct /16s; more is refused at compile, never truncated.
TRIE4_MAX_CHUNKS = 65536

Verdict = tuple[int, int]  # (action, counter slot)


@dataclass
class EndpointPlan:
    endpoint: Endpoint
    specs: list[SpecRule]
    rules: list[PeerRule]  # counter slot of rules[i] = RESERVED_SLOTS + i
    l4: list[tuple[L4, ...] | None]  # per rule, named ports resolved
    dd_enforce: dict[str, bool]
    dd_all: dict[str, bool]
    inventory: list[Endpoint]
    warnings: list[str] = field(default_factory=list)
    # every inserted prefix and its peer-set id, in (version, address, length) order;
    # `peers` is the same as a dict (built on first use: 10k networks hash in ~10 ms)
    peer_items: list[tuple[Net, int]] = field(default_factory=list)
    peer_sets: list[frozenset[int]] = field(default_factory=list)
    peers4: list[tuple[int, int, int]] = field(default_factory=list)  # IPv4 peers: (address, prefixlen, id)
    verdicts: dict[tuple[int, int, int | None, int, int], Verdict] = field(default_factory=dict)
    # the datapath layout (see the module docstring)
    trie4: list[array] = field(default_factory=list)  # chunks of 256 u32
    psets: dict[tuple[int, int], tuple[Verdict, int]] = field(default_factory=dict)
    ports: dict[tuple[int, int, int, int], Verdict] = field(default_factory=dict)
    ranges: dict[tuple[int, int, int, int, int], Verdict] = field(default_factory=dict)
    allow_frag_needed: bool = True  # allowICMPFragNeeded (inventory / compile option)

    _peers: dict[Net, int] | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ helpers
    @property
    def peers(self) -> dict[Net, int]:
        if self._peers is None or len(self._peers) != len(self.peer_items):
            self._peers = dict(self.peer_items)
        return self._peers

    def default(self, d: str) -> Verdict:
        if self.dd_enforce[d]:
            return (DEFAULT_DENY, SLOT_DEFAULT[d])
        if self.dd_all[d]:
            return (AUDIT_DEFAULT, SLOT_DEFAULT[d])
        return (PASS, SLOT_NOPOLICY[d])

    def slot_name(self, slot: int) -> str:
        return RESERVED_NAMES[slot] if slot < RESERVED_SLOTS else self.rules[slot - RESERVED_SLOTS].name

    @property
    def managed(self) -> list[Net]:
        return [ipaddress.ip_network(a) for ep in self.inventory for a in ep.addresses] + list(LOOPBACK)

    @property
    def host_nets(self) -> list[Net]:
        return [ipaddress.ip_network(a) for ep in self.inventory if ep.host for a in ep.addresses] + list(LOOPBACK)

    def within_endpoint(self, addr: Addr | str, loopback: bool) -> bool:
        """A cgroup endpoint's packet on `lo` whose peer is loopback or its own address:
        traffic inside the endpoint, never policed (Cilium never polices inside a pod).
        tc endpoints never see it (it does not reach their interfaces)."""
        a = peer_address(addr)
        return (loopback and self.endpoint.attach_kind == "cgroup_skb"
                and (a.is_loopback or a in {peer_address(x) for x in self.endpoint.addresses}))

    def passes_first(self, d: str, addr: Addr | str, proto: int, port: int, code: int,
                     loopback: bool) -> Verdict | None:
        """What passes before conntrack and policy: (PASS, -1) inside the endpoint (not
        counted), frag-needed / packet-too-big on ingress with allow_frag_needed."""
        if self.within_endpoint(addr, loopback):
            return (PASS, -1)
        if self.allow_frag_needed and d == "ingress" and is_frag_needed(proto, port, code):
            return (ALLOW, SLOT_REPLY["ingress"])
        return None

    # ------------------------------------------------------------------ lookups
    def table_verdict(self, d: str, addr: Addr | str, proto: int, port: int, code: int = 0,
                      loopback: bool = False) -> Verdict:
        """What the datapath computes, on the encoded layout: peer lookup (IPv4: the
        np_trie4 chunks; IPv6: longest prefix), np_psets, then np_ports / np_verdicts
        (ICMP: port = type; `loopback`: the packet is on `lo`)."""
        first = self.passes_first(d, addr, proto, port, code, loopback)
        if first is not None:
            return first
        a = peer_address(addr)
        if a.version == 4:
            peer = self.trie4_lookup(int(a))
        else:
            best = max((n for n in self.peers if n.version == 6 and a in n), key=lambda n: n.prefixlen)
            peer = self.peers[best]
        dn = DIR_NUM[d]
        ps = self.psets.get((peer, dn))
        if ps is None:
            return self.default(d)
        wild, flags = ps
        if flags & PS_POINTS:
            v = self.ports.get((peer, dn, proto, port))
            if v is not None:
                return v
        if flags & PS_RANGES:
            for plen in range(16, -1, -1):
                lo = port >> (16 - plen) << (16 - plen) if plen else 0
                v = self.ranges.get((peer, dn, proto, lo, plen))
                if v is not None:
                    return v
        return wild

    def trie4_lookup(self, a: int) -> int:
        """np_trie4 walked as the datapath walks it: at most three chunk reads."""
        e = self.trie4[a >> 24][(a >> 16) & 255]
        if e & TRIE4_CHILD:
            e = self.trie4[e & ~TRIE4_CHILD][(a >> 8) & 255]
            if e & TRIE4_CHILD:
                e = self.trie4[e & ~TRIE4_CHILD][a & 255]
        return e

    def reference_verdict(self, d: str, addr: Addr | str, proto: int, port: int, code: int = 0,
                          loopback: bool = False) -> Verdict:
        """Cilium's semantics evaluated directly on the rules (the tests' oracle)."""
        if self.within_endpoint(addr, loopback):
            return (PASS, -1)
        if self.allow_frag_needed and d == "ingress" and is_frag_needed(proto, port, code):
            return (ALLOW, SLOT_REPLY["ingress"])
        a = peer_address(addr)
        net = ipaddress.ip_network(a)
        matching = [i for i, r in enumerate(self.rules)
                    if r.direction == d and self._peer_matches(r, net) and _l4_matches(self.l4[i], proto, port)]
        return self._resolve(d, matching)

    def _peer_matches(self, r: PeerRule, p: Net) -> bool:
        if r.any_peer:
            return True
        managed = any(p.version == m.version and p.subnet_of(m) for m in self.managed)  # type: ignore[arg-type]
        if r.cidrs:
            return not managed and any(
                c.net.version == p.version and p.subnet_of(c.net)  # type: ignore[arg-type]
                and not any(p.subnet_of(e) for e in c.excepts)  # type: ignore[arg-type]
                for c in r.cidrs)
        if r.entities:
            host = any(p.version == m.version and p.subnet_of(m) for m in self.host_nets)  # type: ignore[arg-type]
            return any(_entity(e, p, managed, host) for e in r.entities)
        addrs = {ipaddress.ip_network(a) for ep in self.inventory if not ep.host
                 and any(s.matches(ep.labels) for s in r.endpoints) for a in ep.addresses}
        return p in addrs

    def _resolve(self, d: str, matching: list[int]) -> Verdict:
        """Deny beats allow; audit rules only log what enforce rules would not drop."""
        rules = self.rules
        enf = [i for i in matching if not rules[i].audit]
        aud = [i for i in matching if rules[i].audit]
        slot = lambda i: RESERVED_SLOTS + i  # noqa: E731
        deny = [i for i in enf if rules[i].deny]
        if deny:
            return (DENY, slot(deny[0]))
        allow = [i for i in enf if not rules[i].deny]
        if not allow and self.dd_enforce[d]:
            return (DEFAULT_DENY, SLOT_DEFAULT[d])
        adeny = [i for i in aud if rules[i].deny]
        if adeny:
            return (AUDIT_DENY, slot(adeny[0]))
        allow += [i for i in aud if not rules[i].deny]
        if allow:
            return (ALLOW, slot(allow[0]))
        if self.dd_all[d]:
            return (AUDIT_DEFAULT, SLOT_DEFAULT[d])
        return (PASS, SLOT_NOPOLICY[d])


def peer_address(addr: Addr | str) -> Addr:
    """The address policy judges: an IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is the IPv4
    peer a.b.c.d — the datapath looks it up in the IPv4 trie, so an IPv4 deny cannot be
    sidestepped by writing the same address in IPv6 form."""
    a = ipaddress.ip_address(addr)
    if a.version == 6 and a.ipv4_mapped is not None:  # type: ignore[union-attr]
        return a.ipv4_mapped  # type: ignore[union-attr]
    return a


def is_frag_needed(proto: int, icmp_type: int, code: int) -> bool:
    """ICMP destination unreachable / fragmentation needed (3/4), ICMPv6 packet too big (2)."""
    return (proto == ICMP and icmp_type == 3 and code == 4) or (proto == ICMPV6 and icmp_type == 2)


def _entity(e: str, p: Net, managed: bool, host: bool) -> bool:
    if e == "all":
        return True
    if e == "world":
        return not managed
    if e == "world-ipv4":
        return not managed and p.version == 4
    if e == "world-ipv6":
        return not managed and p.version == 6
    if e == "host":
        return host
    if e == "cluster":
        return managed
    return False


def _l4_matches(l4: tuple[L4, ...] | None, proto: int, port: int) -> bool:
    return l4 is None or any(x.proto == proto and x.lo <= port <= x.hi for x in l4)


# --------------------------------------------------------------------------- planning


def selects(spec: SpecRule, ep: Endpoint) -> bool:
    """nodeSelector selects the host entry; endpointSelector every other entry."""
    return spec.node == ep.host and spec.selector.matches(ep.labels)


def plan_endpoint(ep: Endpoint, specs: Iterable[SpecRule], inventory: list[Endpoint]) -> EndpointPlan | None:
    """Merge every rule selecting `ep`; None when nothing selects it."""
    chosen = [s for s in specs if selects(s, ep)]
    if not chosen:
        return None
    rules = [r for s in chosen for r in s.rules]
    dd_enf = {d: any(s.sections[d] and s.default_deny[d] for s in chosen if not s.audit) for d in DIRS}
    dd_all = {d: any(s.sections[d] and s.default_deny[d] for s in chosen) for d in DIRS}
    plan = EndpointPlan(ep, chosen, rules, [], dd_enf, dd_all, inventory)
    plan.l4 = [_resolve_named(plan, r) for r in rules]
    _build_peers(plan)
    _build_verdicts(plan)
    _build_layout(plan)
    return plan


def _resolve_named(plan: EndpointPlan, r: PeerRule) -> tuple[L4, ...] | None:
    """Named ports: ingress resolves the endpoint's own ports, egress every endpoint's."""
    if r.l4 is None:
        return None
    out = list(r.l4)
    owners = [plan.endpoint] if r.direction == "ingress" else plan.inventory
    for n in r.named:
        found = sorted({ep.ports[(n.name, p)] for ep in owners for p in n.protos if (n.name, p) in ep.ports})
        hits = [L4(p, port, port) for ep in owners for p in n.protos
                if (n.name, p) in ep.ports for port in [ep.ports[(n.name, p)]]]
        if not found:
            plan.warnings.append(f"{r.where}: {r.path}: skipping named port \"{n.name}\": "
                                 f"no {'endpoint' if r.direction == 'egress' else plan.endpoint.name} port has that name")
        out += sorted(set(hits), key=lambda x: (x.proto, x.lo))
    return tuple(out)


def _net_key(n: Net) -> tuple[int, int, int]:
    return (n.version, int(n.network_address), n.prefixlen)


def _build_peers(plan: EndpointPlan) -> None:
    """Assign every inserted prefix the set of rules whose peer part matches it.

    Prefixes are nested or disjoint, so in (version, address, length) order each one
    follows its enclosing prefixes: one pass with a stack of the enclosing prefixes gives
    each prefix what it inherits (the CIDR rules whose prefix or except contains it,
    whether it is inside a managed or host address), on integer keys (an ipaddress
    network hashes in ~1 us), without asking every prefix length of an index (10k CIDRs:
    ~25 ms instead of ~150 ms)."""
    managed_nets, host_nets = plan.managed, plan.host_nets
    atoms: dict[tuple[int, int, int], Net] = {_net_key(n): n for n in (*WORLD, *LOOPBACK, *managed_nets)}
    holders: dict[tuple[int, int, int], list[tuple[int, int, bool]]] = {}
    for i, r in enumerate(plan.rules):
        for k, c in enumerate(r.cidrs):
            n = c.net
            key = (n.version, int(n.network_address), n.prefixlen)
            atoms.setdefault(key, n)
            holders.setdefault(key, []).append((i, k, False))
            for e in c.excepts:
                key = _net_key(e)
                atoms.setdefault(key, e)
                holders.setdefault(key, []).append((i, k, True))
    # host addresses are inventory addresses: every host net is a managed net, an atom
    managed, host = {_net_key(n) for n in managed_nets}, {_net_key(n) for n in host_nets}
    ep_addr: dict[tuple[int, int, int], list[Endpoint]] = {}
    for ep in plan.inventory:
        if not ep.host:
            for a in ep.addresses:
                ep_addr.setdefault(_net_key(ipaddress.ip_network(a)), []).append(ep)
    any_rules = frozenset(i for i, r in enumerate(plan.rules) if r.any_peer)
    entity_rules = [i for i, r in enumerate(plan.rules) if not r.any_peer and r.entities]
    endpoint_rules = [i for i, r in enumerate(plan.rules) if not r.any_peer and not r.cidrs and not r.entities]
    set_ids: dict[frozenset[int], int] = {}
    # (cidr members, version, managed, host) -> members
    memo: dict[tuple[frozenset[int], int, bool, bool], frozenset[int]] = {}
    no_hits: dict[tuple[int, int], bool] = {}
    single: dict[int, frozenset[int]] = {}
    # enclosing prefixes: (version, first address, end, cidr hits, members from hits, managed, host)
    stack: list[tuple[int, int, int, dict[tuple[int, int], bool], frozenset[int], bool, bool]] = []
    peer_items, peer_sets, peers4 = plan.peer_items, plan.peer_sets, plan.peers4
    for key in sorted(atoms):
        ver, addr, plen = key
        p = atoms[key]
        end = addr + (1 << ((32 if ver == 4 else 128) - plen))
        while stack and not (stack[-1][0] == ver and stack[-1][1] <= addr and end <= stack[-1][2]):
            stack.pop()
        if stack:
            _v, _a, _e, hits, cidr_members, is_managed, is_host = stack[-1]
        else:
            hits, cidr_members, is_managed, is_host = no_hits, frozenset(), False, False
        own = holders.get(key)
        if own:
            if not hits and len(own) == 1 and not own[0][2]:  # the usual: one CIDR of one rule
                i, k, _exc = own[0]
                hits = {(i, k): False}
                cidr_members = single.get(i) or single.setdefault(i, frozenset((i,)))
            else:
                hits = dict(hits)
                for (i, k, exc) in own:
                    hits[(i, k)] = hits.get((i, k), False) or exc
                cidr_members = frozenset(i for (i, _k), exc in hits.items() if not exc)
        is_managed = is_managed or key in managed
        is_host = is_host or key in host
        stack.append((ver, addr, end, hits, cidr_members, is_managed, is_host))
        mkey = (cidr_members, ver, is_managed, is_host)
        members = memo.get(mkey)
        if members is None:
            m = set(any_rules)
            if not is_managed:
                m |= cidr_members
            m |= {i for i in entity_rules
                  if any(_entity(e, p, is_managed, is_host) for e in plan.rules[i].entities)}
            members = memo[mkey] = frozenset(m)
        eps = ep_addr.get(key)
        if eps:
            members = members | {i for i in endpoint_rules
                                 if any(s.matches(ep.labels) for s in plan.rules[i].endpoints for ep in eps)}
        pid = set_ids.get(members)
        if pid is None:
            pid = set_ids[members] = len(peer_sets)
            peer_sets.append(members)
        peer_items.append((p, pid))
        if ver == 4:
            peers4.append((addr, plen, pid))


def _build_verdicts(plan: EndpointPlan) -> None:
    for peer, members in enumerate(plan.peer_sets):
        for d in DIRS:
            idx = sorted(i for i in members if plan.rules[i].direction == d)
            if not idx:
                continue
            dn = DIR_NUM[d]
            wild = plan._resolve(d, [i for i in idx if plan.l4[i] is None])
            if wild != plan.default(d):
                plan.verdicts[(peer, dn, None, 0, 0)] = wild
            protos = sorted({x.proto for i in idx for x in (plan.l4[i] or ())})
            for proto in protos:
                for lo, hi, v in _intervals(plan, d, idx, proto):
                    if v == wild:
                        continue
                    for base, plen in range_to_prefixes(lo, hi):
                        plan.verdicts[(peer, dn, proto, base, plen)] = v
                        if hi - lo + 1 > PORT_POINTS_MAX:
                            plan.ranges[(peer, dn, proto, base, plen)] = v
                    if hi - lo + 1 <= PORT_POINTS_MAX:
                        plan.ports.update(((peer, dn, proto, port), v) for port in range(lo, hi + 1))


def _build_layout(plan: EndpointPlan) -> None:
    """The resolved verdicts and IPv4 peers in the datapath's layout (module docstring)."""
    plan.trie4 = _trie4(plan.peers4)
    for peer in range(len(plan.peer_sets)):
        for d in DIRS:
            dn = DIR_NUM[d]
            plan.psets[(peer, dn)] = (plan.verdicts.get((peer, dn, None, 0, 0), plan.default(d)), 0)
    for (peer, dn, _proto, _port) in plan.ports:
        wild, flags = plan.psets[(peer, dn)]
        plan.psets[(peer, dn)] = (wild, flags | PS_POINTS)
    for (peer, dn, _proto, _base, _plen) in plan.ranges:
        wild, flags = plan.psets[(peer, dn)]
        plan.psets[(peer, dn)] = (wild, flags | PS_RANGES)


def build_trie4(peers4: dict[Net, int]) -> list[array]:
    """IPv4 prefix -> id as np_trie4 chunks (leaf-pushed 16-8-8 multibit trie). Every
    address must be covered (0/0 is always inserted). More than TRIE4_MAX_CHUNKS
    chunks is a BuildError (refused, never truncated)."""
    return _trie4([(int(net.network_address), net.prefixlen, pid) for net, pid in peers4.items()])


def _trie4(peers4: list[tuple[int, int, int]]) -> list[array]:
    """build_trie4 on (address, prefixlen, id) triples."""
    l1 = array("I", [0]) * 65536
    l2: dict[int, array] = {}
    l3: dict[int, array] = {}
    for a, plen, pid in sorted(peers4, key=lambda t: t[1]):
        if plen <= 16:
            i = a >> 16
            l1[i:i + (1 << (16 - plen))] = array("I", [pid]) * (1 << (16 - plen))
            continue
        i16 = a >> 16
        c2 = l2.get(i16)
        if c2 is None:
            c2 = l2[i16] = array("I", [l1[i16]]) * 256
        if plen <= 24:
            i = (a >> 8) & 255
            c2[i:i + (1 << (24 - plen))] = array("I", [pid]) * (1 << (24 - plen))
            continue
        i24 = a >> 8
        c3 = l3.get(i24)
        if c3 is None:
            c3 = l3[i24] = array("I", [c2[i24 & 255]]) * 256
        i = a & 255
        c3[i:i + (1 << (32 - plen))] = array("I", [pid]) * (1 << (32 - plen))
    n = TRIE4_LEVEL1 + len(l2) + len(l3)
    if n > TRIE4_MAX_CHUNKS:
        raise BuildError(f"IPv4 peers need {n} trie chunks, more than TRIE4_MAX_CHUNKS "
                         f"({TRIE4_MAX_CHUNKS}, 1 KiB each): too many prefixes longer than /16")
    chunks = [l1[c * 256:(c + 1) * 256] for c in range(TRIE4_LEVEL1)]
    index2 = {}
    for i16 in sorted(l2):
        index2[i16] = len(chunks)
        chunks[i16 >> 8][i16 & 255] = TRIE4_CHILD | len(chunks)
        chunks.append(l2[i16])
    for i24 in sorted(l3):
        chunks[index2[i24 >> 8]][i24 & 255] = TRIE4_CHILD | len(chunks)
        chunks.append(l3[i24])
    return chunks


def _intervals(plan: EndpointPlan, d: str, idx: list[int], proto: int) -> list[tuple[int, int, Verdict]]:
    """The port space of one protocol cut where any rule starts or ends, resolved and coalesced."""
    cuts = {0, 65536}
    for i in idx:
        for x in plan.l4[i] or ():
            if x.proto == proto:
                cuts |= {x.lo, x.hi + 1}
    bounds = sorted(cuts)
    out: list[tuple[int, int, Verdict]] = []
    for lo, nxt in zip(bounds, bounds[1:], strict=False):
        matching = [i for i in idx if _l4_matches(plan.l4[i], proto, lo)]
        v = plan._resolve(d, matching)
        if out and out[-1][2] == v and out[-1][1] == lo - 1:
            out[-1] = (out[-1][0], nxt - 1, v)
        else:
            out.append((lo, nxt - 1, v))
    return out


def range_to_prefixes(lo: int, hi: int, bits: int = 16) -> list[tuple[int, int]]:
    """Inclusive [lo, hi] as the fewest aligned (base, prefixlen) blocks."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, bits - size.bit_length() + 1))
        lo += size
    return out


# --------------------------------------------------------------------------- encoding

VERDICT_KEY = struct.Struct("<I I B B H")  # prefixlen, peer (host order), dir, proto, port (BE below)
VERDICT_VAL = struct.Struct("<I I")  # action, slot
DEFAULTS_VAL = VERDICT_VAL
PSET_VAL = struct.Struct("<I I I")  # action, slot, flags (PS_*)


def encode_maps(plan: EndpointPlan) -> dict[str, list[tuple[bytes, bytes]]]:
    """Map contents as raw (key, value) records, exactly as the kernel stores them."""
    peers6 = [(struct.pack("<I", net.prefixlen) + net.network_address.packed, struct.pack("<I", pid))
              for net, pid in plan.peer_items if net.version == 6]
    trie4 = []  # all-zero chunks are left out: an array map starts zeroed
    for i, chunk in enumerate(plan.trie4):
        if not any(chunk):
            continue
        c = array("I", chunk)
        if sys.byteorder != "little":
            c.byteswap()
        trie4.append((struct.pack("<I", i), c.tobytes()))
    psets = [(struct.pack("<I", peer * 2 + dn), PSET_VAL.pack(action, slot, flags))
             for (peer, dn), ((action, slot), flags) in plan.psets.items()]
    ports = [(struct.pack("<I B B", peer, dn, proto) + struct.pack(">H", port), VERDICT_VAL.pack(*v))
             for (peer, dn, proto, port), v in plan.ports.items()]
    ranges = [(struct.pack("<I I B B", 48 + plen, peer, dn, proto) + struct.pack(">H", base), VERDICT_VAL.pack(*v))
              for (peer, dn, proto, base, plen), v in plan.ranges.items()]
    defaults = [(struct.pack("<I", DIR_NUM[d]), VERDICT_VAL.pack(*plan.default(d))) for d in DIRS]
    out = {"np_trie4": trie4, "np_peers6": sorted(peers6), "np_psets": sorted(psets),
           "np_ports": sorted(ports), "np_verdicts": sorted(ranges), "np_defaults": sorted(defaults),
           "np_self": self_records(plan.endpoint)}
    h = hashlib.sha256()
    for name in sorted(out):
        h.update(name.encode() + b"".join(k + v for k, v in out[name]))
    generation = int.from_bytes(h.digest()[:4], "little") or 1
    out["np_config"] = [(struct.pack("<I", 0), struct.pack("<I", generation))]
    return out


SELF_KEY = struct.Struct("<I 16s")  # family, address (IPv4: first 4 bytes)


def self_records(ep: Endpoint) -> list[tuple[bytes, bytes]]:
    """`np_self`: the endpoint's own addresses (IPv4-mapped ones as IPv4, as the datapath
    judges them), value one unused byte."""
    addrs = {peer_address(a) for a in ep.addresses}
    return sorted((SELF_KEY.pack(a.version, a.packed), b"\x01") for a in addrs)


ICMP_PROTOS = (ICMP, ICMPV6)
