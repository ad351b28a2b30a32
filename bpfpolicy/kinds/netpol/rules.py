"""Cilium L3/L4 rules: semantic checks and the parsed rule model.

One walk over a document does both: it reports every problem through the `Reporter`
(Cilium's own validation, `pkg/policy/api/rule_validation.go` & co., plus precise
"not supported on a single host" reasons), and builds `SpecRule`/`PeerRule` objects that
the lowering (`netpol_lower.py`) turns into map contents.

Messages follow Cilium's wording where Cilium has one ("combining fromCIDR and
fromEndpoints is not supported yet", "too many ports, the max is 40").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ...policy.diagnostics import did_you_mean, format_path
from ...policy.load import Document

Path = tuple[str | int, ...]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network

PROTO_NUM = {"TCP": 6, "UDP": 17, "SCTP": 132}
EXTENDED_PROTO = {"VRRP": 112, "IGMP": 2, "GRE": 47, "IPIP": 4, "IPv6": 41, "ESP": 50, "AH": 51}
ICMP, ICMPV6 = 1, 58
MAX_PORTS = 40
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
PROTOCOLS = ("TCP", "UDP", "SCTP", "ANY", *EXTENDED_PROTO, "ICMP", "ICMPv6")
MAX_ICMP_FIELDS = 40

ICMP4_TYPES = {
    "EchoReply": 0, "DestinationUnreachable": 3, "Redirect": 5, "Echo": 8, "EchoRequest": 8,
    "RouterAdvertisement": 9, "RouterSelection": 10, "TimeExceeded": 11, "ParameterProblem": 12,
    "Timestamp": 13, "TimestampReply": 14, "Photuris": 40, "ExtendedEchoRequest": 42,
    "ExtendedEchoReply": 43,
}
ICMP6_TYPES = {
    "DestinationUnreachable": 1, "PacketTooBig": 2, "TimeExceeded": 3, "ParameterProblem": 4,
    "EchoRequest": 128, "EchoReply": 129, "MulticastListenerQuery": 130,
    "MulticastListenerReport": 131, "MulticastListenerDone": 132, "RouterSolicitation": 133,
    "RouterAdvertisement": 134, "NeighborSolicitation": 135, "NeighborAdvertisement": 136,
    "RedirectMessage": 137, "RouterRenumbering": 138, "ICMPNodeInformationQuery": 139,
    "ICMPNodeInformationResponse": 140, "InverseNeighborDiscoverySolicitation": 141,
    "InverseNeighborDiscoveryAdvertisement": 142, "HomeAgentAddressDiscoveryRequest": 144,
    "HomeAgentAddressDiscoveryReply": 145, "MobilePrefixSolicitation": 146,
    "MobilePrefixAdvertisement": 147, "DuplicateAddressRequestCodeSuffix": 157,
    "DuplicateAddressConfirmationCodeSuffix": 158, "ExtendedEchoRequest": 160,
    "ExtendedEchoReply": 161,
}

#: entities that carry over to one host (docs/upstream.md §1.1); the rest are cluster-only
HOST_ENTITIES = {"all", "world", "world-ipv4", "world-ipv6", "cluster", "host"}
CLUSTER_ENTITIES = {"init", "ingress", "unmanaged", "remote-node", "health", "none", "kube-apiserver"}

LABEL_SOURCES = ("k8s", "any", "container", "unspec")
#: the label every endpoint carries with its namespace (Cilium: k8s:io.kubernetes.pod.namespace)
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
DEFAULT_NAMESPACE = "default"  # as in Kubernetes: an object without metadata.namespace
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IANA = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

UNSUPPORTED_PEERS = {
    "Nodes": "node selectors (fromNodes/toNodes) select cluster nodes; there is one host here",
    "Groups": "cloud provider groups (fromGroups/toGroups) are not supported",
    "Requires": "fromRequires/toRequires was removed in Cilium 1.19 and is not supported",
}
UNSUPPORTED_L7_PORT = {
    "rules": "L7 rules (http/dns/kafka) need a proxy and are not supported",
    "serverNames": "TLS SNI (serverNames) is L7 and not supported",
    "listener": "Envoy listeners are L7 and not supported",
    "terminatingTLS": "TLS termination is L7 and not supported",
    "originatingTLS": "TLS origination is L7 and not supported",
}


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # In NotIn Exists DoesNotExist
    values: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Selector:
    """A label selector: matchLabels + matchExpressions, source prefixes stripped."""

    reqs: tuple[Requirement, ...] = ()

    def names_namespace(self) -> bool:
        return any(r.key == NAMESPACE_LABEL for r in self.reqs)

    def in_namespace(self, ns: str) -> Selector:
        """Cilium's rule for a namespaced policy: the selector also requires the policy's
        namespace (pkg/k8s/apis/cilium.io/utils: the namespace label is added)."""
        return Selector((*self.reqs, Requirement(NAMESPACE_LABEL, "In", frozenset({ns}))))

    def matches(self, labels: dict[str, str]) -> bool:
        for r in self.reqs:
            has = r.key in labels
            if r.op == "In" and not (has and labels[r.key] in r.values):
                return False
            if r.op == "NotIn" and has and labels[r.key] in r.values:
                return False
            if r.op == "Exists" and not has:
                return False
            if r.op == "DoesNotExist" and has:
                return False
        return True


@dataclass(frozen=True)
class CIDRRule:
    net: Net
    excepts: tuple[Net, ...] = ()


@dataclass(frozen=True)
class L4:
    """One protocol and inclusive port range; for ICMP the 'port' is the ICMP type."""

    proto: int
    lo: int
    hi: int


@dataclass(frozen=True)
class NamedPort:
    name: str
    protos: tuple[int, ...]  # protocols allowed by the rule (ANY = TCP/UDP/SCTP)


@dataclass
class PeerRule:
    """One entry of ingress/egress/ingressDeny/egressDeny."""

    policy: str  # "NetworkPolicy/name" or "CiliumNetworkPolicy/name"
    path: str  # spec.ingress[0]
    where: str  # file:line:col
    direction: str  # ingress | egress
    deny: bool
    audit: bool
    # peers: None = any peer; else exactly one of the fields below is used
    any_peer: bool = True
    endpoints: tuple[Selector, ...] = ()
    cidrs: tuple[CIDRRule, ...] = ()
    entities: tuple[str, ...] = ()
    # L4: None = every protocol and port (incl. ICMP); else the list of ranges
    l4: tuple[L4, ...] | None = None
    named: tuple[NamedPort, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.policy}:{self.path}"


@dataclass
class SpecRule:
    """One Cilium rule (spec or specs[i]): its subject and its sections."""

    policy: str
    path: str
    node: bool  # nodeSelector (the host) instead of endpointSelector
    selector: Selector
    sections: dict[str, bool] = field(default_factory=dict)  # direction -> has allow/deny section
    default_deny: dict[str, bool] = field(default_factory=dict)  # enableDefaultDeny
    audit: bool = False
    rules: list[PeerRule] = field(default_factory=list)
    namespace: str | None = None  # None: cluster-wide (CCNP, native policy without a namespace)


# --------------------------------------------------------------------------- checker


class _Sink:
    """Reporter stand-in used when compiling already-validated documents."""

    lenient = True

    def error(self, path: Any, message: str) -> None:  # pragma: no cover - validated input
        raise ValueError(message)

    def warning(self, path: Any, message: str) -> None:
        pass

    def unsupported(self, path: Any, message: str, drop: Any = None) -> None:
        pass


def parse_policy(doc: Document, report: Any = None, foreign: bool = False) -> list[SpecRule]:
    """Check a NetworkPolicy/Cilium document and return its rules.

    With `report=None` the document is assumed valid (already checked, lenient drops
    applied) and unsupported parts are skipped silently."""
    r = report if report is not None else _Sink()
    data = doc.data if isinstance(doc.data, dict) else {}
    kind = data.get("kind", "NetworkPolicy")
    name = (data.get("metadata") or {}).get("name", "?")
    ns = policy_namespace(doc, r)
    policy = policy_id(kind, ns, name)
    has_spec, has_specs = "spec" in data, "specs" in data
    if not has_spec and not has_specs:
        r.error((), 'missing required field "spec" (or "specs")')
        return []
    out: list[SpecRule] = []
    if has_spec:
        out += _rule(doc, r, data["spec"], ("spec",), policy, kind, foreign, ns)
    for i, spec in enumerate(data.get("specs") or []):
        out += _rule(doc, r, spec, ("specs", i), policy, kind, foreign, ns)
    return out


def policy_namespace(doc: Document, r: Any) -> str | None:
    """The namespace a policy lives in: a CiliumNetworkPolicy always has one (`default`
    when metadata.namespace is absent, as kubectl does); a CiliumClusterwideNetworkPolicy
    none; the native NetworkPolicy one only when metadata.namespace is written (a host
    policy without one keeps selecting every endpoint, as before namespaces existed)."""
    data = doc.data if isinstance(doc.data, dict) else {}
    kind = data.get("kind", "NetworkPolicy")
    raw = (data.get("metadata") or {}).get("namespace")
    if kind == "CiliumClusterwideNetworkPolicy":
        if raw is not None:
            r.warning(("metadata", "namespace"), "a CiliumClusterwideNetworkPolicy is cluster-wide: "
                      "metadata.namespace is ignored (as in Kubernetes)")
        return None
    if raw is None:
        return DEFAULT_NAMESPACE if kind == "CiliumNetworkPolicy" else None
    if not isinstance(raw, str) or not DNS1123.match(raw) or len(raw) > 63:
        r.error(("metadata", "namespace"), f"{raw!r} is not a valid namespace: a DNS-1123 label "
                '(lower-case letters, digits and "-", at most 63 characters)')
        return DEFAULT_NAMESPACE
    return raw


def policy_id(kind: str, ns: str | None, name: str) -> str:
    """`Kind/name`, or `Kind/namespace/name` outside the default namespace: the identity
    counters, events and duplicate checks use (two CNPs of one name in two namespaces
    are two policies)."""
    return f"{kind}/{ns}/{name}" if ns not in (None, DEFAULT_NAMESPACE) else f"{kind}/{name}"


def _rule(doc: Document, r: Any, spec: Any, path: Path, policy: str, kind: str,
          foreign: bool, namespace: str | None = None) -> list[SpecRule]:
    if not isinstance(spec, dict):
        return []
    es, ns = "endpointSelector" in spec, "nodeSelector" in spec
    if es and ns:
        r.error((*path, "nodeSelector"), "rule cannot have both endpointSelector and nodeSelector")
        return []
    if not es and not ns:
        r.error(path, "rule must have one of endpointSelector or nodeSelector")
        return []
    if ns and kind == "CiliumNetworkPolicy":
        r.error((*path, "nodeSelector"),
                "nodeSelector (host policy) is only allowed in a CiliumClusterwideNetworkPolicy")
        return []
    sel_key = "nodeSelector" if ns else "endpointSelector"
    selector = _selector(doc, r, spec[sel_key], (*path, sel_key), drop=None)
    if selector is not None and namespace is not None:
        other = [v for q in selector.reqs if q.key == NAMESPACE_LABEL for v in q.values if v != namespace]
        if other:
            r.warning((*path, sel_key), f"a namespaced policy only selects endpoints of its own "
                      f"namespace {namespace!r} (as in Cilium); the selector's namespace {other[0]!r} "
                      "makes it select nothing")
        selector = selector.in_namespace(namespace)
    sections = ("ingress", "ingressDeny", "egress", "egressDeny")
    if not any(spec.get(s) for s in sections) and not isinstance(r, _Sink):  # (lenient drops may empty one)
        r.error(path, "rule must have at least one of ingress, ingressDeny, egress, egressDeny")
    for s in sections:
        if s in spec and spec[s] == []:
            r.warning((*path, s), f"an empty {s} list is ignored by Cilium; bpfpolicy treats it as "
                      "turning on default deny (it never allows more than written)")
    audit = spec.get("enforcementMode") == "audit"
    edd = spec.get("enableDefaultDeny") or {}
    rule = SpecRule(
        policy=policy, path=format_path(path), node=ns, selector=selector or Selector(),
        sections={d: (d in spec or f"{d}Deny" in spec) for d in ("ingress", "egress")},
        default_deny={d: bool(edd.get(d, True)) for d in ("ingress", "egress")},
        audit=audit, namespace=namespace,
    )
    for s in sections:
        direction = "ingress" if s.startswith("ingress") else "egress"
        for i, entry in enumerate(spec.get(s) or []):
            pr = _peer_rule(doc, r, entry, (*path, s, i), policy, direction, s.endswith("Deny"), audit, namespace)
            if pr is not None:
                rule.rules.append(pr)
    return [rule] if selector is not None else []


def _unsupported(r: Any, path: Path, msg: str, rule_path: Path, deny: bool) -> None:
    """Allow rules can be dropped with --lenient (narrower); deny rules cannot (wider)."""
    if deny:
        r.error(path, msg + " (a deny rule cannot be dropped: that would allow more than written)")
    else:
        r.unsupported(path, msg, drop=rule_path)


def _peer_rule(doc: Document, r: Any, entry: Any, path: Path, policy: str, direction: str,
               deny: bool, audit: bool, ns: str | None = None) -> PeerRule | None:
    if not isinstance(entry, dict):
        return None
    p = "from" if direction == "ingress" else "to"
    line, col = doc.pos(path)
    pr = PeerRule(policy=policy, path=format_path(path), where=f"{doc.source_name}:{line}:{col}",
                  direction=direction, deny=deny, audit=audit)
    ok = True
    for suffix, msg in UNSUPPORTED_PEERS.items():
        if f"{p}{suffix}" in entry:
            _unsupported(r, (*path, f"{p}{suffix}"), msg, path, deny)
            ok = False
    if "toFQDNs" in entry:
        _unsupported(r, (*path, "toFQDNs"), "L7/DNS rules (toFQDNs) are not supported", path, deny)
        ok = False
    if "toServices" in entry:
        _unsupported(r, (*path, "toServices"), "Kubernetes services (toServices) have no meaning on a single host", path, deny)
        ok = False
    if "authentication" in entry:
        _unsupported(r, (*path, "authentication"), "mutual authentication is not supported", path, deny)
        ok = False
    # one peer kind per rule (Cilium: "combining X and Y is not supported yet")
    kinds = sorted((k for k in (f"{p}Endpoints", f"{p}CIDR", f"{p}CIDRSet", f"{p}Entities",
                                f"{p}Nodes", f"{p}Groups") if entry.get(k)),
                   key=lambda k: doc.pos((*path, k)))  # report the second one written
    if len(kinds) > 1:
        r.error((*path, kinds[1]), f"combining {kinds[0]} and {kinds[1]} is not supported yet")
        ok = False
    for k in (f"{p}Endpoints", f"{p}CIDR", f"{p}CIDRSet", f"{p}Entities"):
        if k in entry and entry[k] == []:
            r.warning((*path, k), f"an empty {k} list is the same as leaving it out (as in Cilium): "
                      "with toPorts it allows every peer")
    if "icmps" in entry and "toPorts" in entry and entry["icmps"] and entry["toPorts"]:
        r.error((*path, "icmps"), "the ICMPs block may only be present without ToPorts. "
                "Define a separate rule to use ToPorts")
        ok = False
    if entry.get(f"{p}Endpoints"):
        sels = [_selector(doc, r, s, (*path, f"{p}Endpoints", i), drop=(path, deny))
                for i, s in enumerate(entry[f"{p}Endpoints"])]
        if any(s is None for s in sels):
            ok = False
        # a namespaced policy's peer selectors stay in its namespace unless they name one
        pr.any_peer, pr.endpoints = False, tuple(
            s if ns is None or s.names_namespace() else s.in_namespace(ns) for s in sels if s is not None)
    if entry.get(f"{p}CIDR"):
        key = f"{p}CIDR"
        plain = [_cidr_entry(r, c, (*path, key, i))[2] for i, c in enumerate(entry[key])]
        ok = ok and None not in plain
        pr.any_peer, pr.cidrs = False, tuple(c for c in plain if c is not None)
    if entry.get(f"{p}CIDRSet"):
        rules = [_cidr_rule(r, c, (*path, f"{p}CIDRSet", i), path, deny)
                 for i, c in enumerate(entry[f"{p}CIDRSet"])]
        ok = ok and all(c is not None for c in rules)
        pr.any_peer, pr.cidrs = False, tuple(c for c in rules if c is not None)
    if entry.get(f"{p}Entities"):
        ents = list(entry[f"{p}Entities"])
        for i, e in enumerate(ents):
            if e in CLUSTER_ENTITIES:
                _unsupported(r, (*path, f"{p}Entities", i),
                             f'entity "{e}" is cluster-only; on a single host only world, world-ipv4, '
                             "world-ipv6, host, cluster and all carry over", path, deny)
                ok = False
        pr.any_peer, pr.entities = False, tuple(e for e in ents if e in HOST_ENTITIES)
    l4 = _l4(doc, r, entry, path, deny)
    if l4 is False:
        ok = False
    elif l4 is not None:
        pr.l4, pr.named = l4
    elif pr.any_peer:
        pr.any_peer = False  # no peer and no L4 (`ingress: [{}]`): allows nothing
    return pr if ok else None


def _selector(doc: Document, r: Any, sel: Any, path: Path,
              drop: tuple[Path, bool] | None) -> Selector | None:
    """Parse a label selector; namespace/cluster labels are Kubernetes-only."""
    if not isinstance(sel, dict):
        return None
    reqs: list[Requirement] = []
    ok = True

    def key_of(raw: str, kpath: Path) -> str | None:
        nonlocal ok
        key = raw
        if ":" in raw and raw.split(":", 1)[0] in (*LABEL_SOURCES, "reserved", "cidr", "fqdn"):
            source, key = raw.split(":", 1)
            if source in ("reserved", "cidr", "fqdn"):
                msg = f'"{raw}": {source}: labels are Cilium identities; use fromEntities/fromCIDR instead'
                _sel_problem(r, kpath, msg, drop)
                ok = False
                return None
        if key.startswith("io.cilium.k8s."):
            msg = (f'"{raw}": Kubernetes namespace-label/cluster selectors have no meaning on a single '
                   f"host; select the inventory's labels (or {NAMESPACE_LABEL}) instead")
            _sel_problem(r, kpath, msg, drop)
            ok = False
            return None
        return key

    for k, v in (sel.get("matchLabels") or {}).items():
        key = key_of(str(k), (*path, "matchLabels", k))
        if key is not None:
            reqs.append(Requirement(key, "In", frozenset({"" if v is None else str(v)})))
    for i, e in enumerate(sel.get("matchExpressions") or []):
        epath = (*path, "matchExpressions", i)
        key = key_of(str(e.get("key", "")), (*epath, "key"))
        op, values = e.get("operator"), list(e.get("values") or [])
        if op not in OPERATORS:
            r.error((*epath, "operator"), _enum_message("operator", op, OPERATORS))
            ok = False
        if op in ("In", "NotIn") and not values:
            r.error((*epath, "values"), f"values must be non-empty for operator {op}")
            ok = False
        if op in ("Exists", "DoesNotExist") and values:
            r.error((*epath, "values"), f"values must be empty for operator {op}")
            ok = False
        if key is not None:
            reqs.append(Requirement(key, op, frozenset(values)))
    return Selector(tuple(reqs)) if ok else None


def _sel_problem(r: Any, path: Path, msg: str, drop: tuple[Path, bool] | None) -> None:
    if drop is None:  # the subject selector: dropping the rule would change who is selected
        r.error(path, msg)
    else:
        _unsupported(r, path, msg, drop[0], drop[1])


def parse_net(text: Any) -> Net | str:
    """A prefix or bare address; returns an error message for anything else."""
    s = str(text).strip()
    if "{{" in s:
        return f'"{s}" is an unrendered Go template, not a CIDR: render it first'
    try:
        if "/" not in s:
            return ipaddress.ip_network(s)
        return ipaddress.ip_network(s, strict=False)
    except ValueError as e:
        return f'"{s}" is not a valid CIDR: {e}'


# Parsed CIDR text -> (network or error message, host-bits warning or None). `watch`
# parses an edited policy again whole; the CIDRs it already had come from here (a dict
# probe instead of three ipaddress parses: 10k CIDRs in ~3 ms instead of ~150 ms).
# Networks are immutable, so sharing them between parses is safe. Bounded: at ~250 bytes
# an entry this is ~64 MB at most, and it is emptied when full (the next parse refills it).
CIDR_MEMO_MAX = 1 << 18
# Each entry: the network or an error message, the host-bits warning or None, and the
# plain `fromCIDR` rule of the network (frozen dataclasses cost ~1 us each to build).
_cidr_memo: dict[str, tuple[Net | str, str | None, CIDRRule | None]] = {}


def _parse_cidr_text(s: str) -> tuple[Net | str, str | None, CIDRRule | None]:
    net = parse_net(s)
    if isinstance(net, str):
        return net, None, None
    s = s.strip()
    if "/" in s and net.network_address != ipaddress.ip_interface(s).ip:
        return net, f'"{s}" has host bits set; it means {net}', CIDRRule(net)
    return net, None, CIDRRule(net)


def _cidr_entry(r: Any, text: Any, path: Path) -> tuple[Net | str, str | None, CIDRRule | None]:
    """Parse (or recall) one CIDR text and report its problems at `path`."""
    if type(text) is str:
        hit = _cidr_memo.get(text)
        if hit is None:
            if len(_cidr_memo) >= CIDR_MEMO_MAX:
                _cidr_memo.clear()
            hit = _cidr_memo[text] = _parse_cidr_text(text)
    else:
        hit = _parse_cidr_text(str(text))
    if hit[2] is None:
        r.error(path, hit[0])
    elif hit[1] is not None:
        r.warning(path, hit[1])
    return hit


def _cidr(r: Any, text: Any, path: Path) -> Net | None:
    net = _cidr_entry(r, text, path)[0]
    return None if isinstance(net, str) else net


def _cidr_rule(r: Any, c: Any, path: Path, rule_path: Path, deny: bool) -> CIDRRule | None:
    if not isinstance(c, dict):
        return None
    refs = [k for k in ("cidr", "cidrGroupRef", "cidrGroupSelector") if k in c]
    if len(refs) != 1:
        r.error(path, "a CIDR rule needs exactly one of cidr, cidrGroupRef, cidrGroupSelector"
                + (f" (has {', '.join(refs)})" if refs else ""))
        return None
    if refs[0] != "cidr":
        if c.get("except"):
            r.error((*path, "except"), f"except cannot be used with {refs[0]}")
        _unsupported(r, (*path, refs[0]), f"{refs[0]} refers to CiliumCIDRGroup objects, "
                     "which do not exist on a single host", rule_path, deny)
        return None
    net = _cidr(r, c["cidr"], (*path, "cidr"))
    if net is None:
        return None
    excepts: list[Net] = []
    for i, e in enumerate(c.get("except") or []):
        ex = _cidr(r, e, (*path, "except", i))
        if ex is None:
            return None
        if ex.version != net.version:
            r.error((*path, "except", i), f"except {ex} is IPv{ex.version} but cidr {net} is IPv{net.version}")
            return None
        if not ex.subnet_of(net):  # type: ignore[arg-type]
            r.error((*path, "except", i), f"allow CIDR prefix {net} does not contain exclude CIDR prefix {ex}")
            return None
        excepts.append(ex)
    return CIDRRule(net, tuple(excepts))


def _parse_port(raw: Any) -> int | str | None:
    """A number (Go ParseUint base 0, 16 bits), a lower-cased IANA name, or None if invalid."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 <= raw <= 65535 else None
    s = str(raw)
    if s == "":
        return 0
    try:
        n = int(s, 0)
        return n if 0 <= n <= 65535 else None
    except ValueError:
        pass
    name = s.lower()
    if len(name) <= 15 and _IANA.match(name) and "--" not in name and re.search("[a-z]", name):
        return name
    return None


def _l4(doc: Document, r: Any, entry: dict[str, Any], path: Path,
        deny: bool) -> tuple[tuple[L4, ...], tuple[NamedPort, ...]] | None | bool:
    """toPorts/icmps → L4 ranges; None = no L4 restriction; False = invalid."""
    if not entry.get("toPorts") and not entry.get("icmps"):
        return None
    ranges: list[L4] = []
    named: list[NamedPort] = []
    ok = True
    for i, pr in enumerate(entry.get("toPorts") or []):
        ppath = (*path, "toPorts", i)
        for key, msg in UNSUPPORTED_L7_PORT.items():
            if key in pr:
                _unsupported(r, (*ppath, key), msg, path, deny)
                ok = False
        ports = pr.get("ports") or []
        if len(ports) > MAX_PORTS:
            r.error((*ppath, "ports"), f"too many ports, the max is {MAX_PORTS} (has {len(ports)})")
            ok = False
        if not ports:  # a port rule without ports: every port of TCP/UDP/SCTP
            ranges += [L4(p, 0, 65535) for p in PROTO_NUM.values()]
        for j, pp in enumerate(ports):
            got = _port_protocol(r, pp, (*ppath, "ports", j))
            if got is None:
                ok = False
            elif isinstance(got, NamedPort):
                named.append(got)
            else:
                ranges += got
    for i, ic in enumerate(entry.get("icmps") or []):
        fields = ic.get("fields") or []
        if len(fields) > MAX_ICMP_FIELDS:
            r.error((*path, "icmps", i, "fields"), f"too many ICMP fields, the max is {MAX_ICMP_FIELDS}")
            ok = False
        for j, f in enumerate(fields):
            t = _icmp_type(r, f, (*path, "icmps", i, "fields", j))
            if t is None:
                ok = False
            else:
                ranges.append(t)
    return (tuple(ranges), tuple(named)) if ok else False


def _enum_message(what: str, value: Any, choices: tuple[str, ...]) -> str:
    """Kubernetes enums are case-sensitive; say so when only the case is wrong."""
    exact = [c for c in choices if c.lower() == str(value).lower()]
    hint = (f' (did you mean "{exact[0]}"? {what}s are case-sensitive)' if exact
            else did_you_mean(str(value), choices, cutoff=0.6))
    return f'{what} "{value}" is not one of {", ".join(choices)}{hint}'


def _port_protocol(r: Any, pp: dict[str, Any], path: Path) -> list[L4] | NamedPort | None:
    proto = pp.get("protocol") or "ANY"
    if proto not in PROTOCOLS:
        r.error((*path, "protocol"), _enum_message("protocol", proto, PROTOCOLS))
        return None
    if proto in ("ICMP", "ICMPv6"):
        r.error((*path, "protocol"), f"protocol {proto} is not a port protocol: use icmps (fields: type, family)")
        return None
    raw = pp.get("port", "")
    port = _parse_port(raw)
    if port is None:
        r.error((*path, "port"), f'unable to parse port "{raw}": neither a number 0-65535 nor an IANA service name')
        return None
    if proto in EXTENDED_PROTO:
        if port not in (0, ""):
            r.error((*path, "port"), f"protocol {proto} has no ports: leave port empty or 0")
            return None
        return [L4(EXTENDED_PROTO[proto], 0, 65535)]
    protos = tuple(PROTO_NUM.values()) if proto == "ANY" else (PROTO_NUM[proto],)
    end = pp.get("endPort")
    if isinstance(port, str):
        if end is not None:
            r.warning((*path, "endPort"), "endPort is ignored with a named port (as in Cilium)")
        return NamedPort(port, protos)
    if end is not None and end != 0 and port == 0:
        r.warning((*path, "endPort"), "endPort is ignored when port is 0 (every port)")
        end = None
    if end is not None and end != 0 and end < port:
        r.error((*path, "endPort"), f"endPort {end} is less than port {port}")
        return None
    lo, hi = (0, 65535) if port == 0 else (port, end if end else port)
    return [L4(p, lo, hi) for p in protos]


def _icmp_type(r: Any, f: dict[str, Any], path: Path) -> L4 | None:
    family = f.get("family") or "IPv4"
    table, proto = (ICMP4_TYPES, ICMP) if family == "IPv4" else (ICMP6_TYPES, ICMPV6)
    t = f.get("type")
    if isinstance(t, bool):
        t = None
    if isinstance(t, str) and t.isdigit():
        t = int(t)
    if isinstance(t, int):
        if not 0 <= t <= 255:
            r.error((*path, "type"), f"ICMP type {t} is out of range 0-255")
            return None
        return L4(proto, t, t)
    if isinstance(t, str) and t in table:
        return L4(proto, table[t], table[t])
    hint = did_you_mean(str(t), table, cutoff=0.6)
    other = ICMP6_TYPES if family == "IPv4" else ICMP4_TYPES
    if not hint and str(t) in other:
        hint = f' (it is an {"IPv6" if family == "IPv4" else "IPv4"} type: set family)'
    r.error((*path, "type"), f"ICMP type {t} not found in {family}{hint}")
    return None
