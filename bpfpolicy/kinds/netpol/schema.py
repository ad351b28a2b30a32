"""Single source of the two NetworkPolicy JSON Schemas (native and Cilium).

Cilium's full rule field set is described here, including the L7, FQDN and
Kubernetes-only fields: the schema *recognises* them so the semantic checker can say
precisely why they have no meaning on one host ("L7/DNS rules are not supported")
instead of a vague "unknown field". Regenerate the files with
`python -m bpfpolicy.kinds.netpol.schema` after editing.
"""

from __future__ import annotations

import json
from typing import Any

from ...resources import SCHEMAS_DIR

DRAFT = "https://json-schema.org/draft/2020-12/schema"

PROTOCOLS = ["TCP", "UDP", "SCTP", "ANY", "VRRP", "IGMP", "GRE", "IPIP", "IPv6", "ESP", "AH", "ICMP", "ICMPv6"]
ENTITIES = ["all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress",
            "unmanaged", "remote-node", "health", "none", "kube-apiserver"]


def _obj(props: dict[str, Any], desc: str, required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "description": desc, "properties": props,
                           "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _list(item: Any, desc: str) -> dict[str, Any]:
    return {"type": "array", "description": desc, "items": item}


def _l7(desc: str) -> dict[str, Any]:
    """An L7/k8s-only field: accepted by the schema, rejected precisely by the checker."""
    return {"description": desc + " (recognised; not supported on a single host)"}


def defs() -> dict[str, Any]:
    selector = _obj({
        "matchLabels": {"type": "object", "description": "label key -> value; all must match. "
                        "A key may carry a Cilium source prefix (k8s:, any:), which is ignored.",
                        "additionalProperties": {"type": ["string", "null"]}},
        "matchExpressions": _list(_obj({
            "key": {"type": "string", "minLength": 1, "description": "label key"},
            "operator": {"type": "string",
                         "description": "In, NotIn, Exists or DoesNotExist (case-sensitive, as in Kubernetes)"},
            "values": _list({"type": "string"}, "values for In / NotIn; must be empty for Exists / DoesNotExist"),
        }, "one label requirement; all requirements of a selector must hold (AND)", ["key", "operator"]),
            "label requirements (AND)"),
    }, "a label selector over the host inventory's endpoints; {} selects every endpoint")
    cidr = {"type": "string", "minLength": 1,
            "description": "an IPv4/IPv6 prefix (a.b.c.d/n) or a bare address (= /32 or /128)"}
    cidr_rule = _obj({
        "cidr": cidr,
        "except": _list(cidr, "prefixes carved out of `cidr`: same family, inside it, at least as long"),
        "cidrGroupRef": _l7("reference to a CiliumCIDRGroup object"),
        "cidrGroupSelector": _l7("selector over CiliumCIDRGroup objects"),
    }, "a CIDR with optional exceptions")
    port_protocol = _obj({
        "port": {"type": ["string", "integer"],
                 "description": "0-65535 (0 = every port) or an IANA service name resolved through the inventory's named ports"},
        "endPort": {"type": "integer", "minimum": 0, "maximum": 65535,
                    "description": "last port of a range starting at `port` (inclusive)"},
        "protocol": {"type": "string", "description": "TCP, UDP, SCTP or ANY (= TCP+UDP+SCTP, never ICMP); "
                     "host-firewall extensions VRRP, IGMP, GRE, IPIP, IPv6, ESP, AH take no port"},
    }, "one port (or range) and protocol")
    port_rule = _obj({
        "ports": _list(port_protocol, "ports; at most 40 per port rule"),
        "rules": _l7("L7 rules (http, kafka, dns, l7proto)"),
        "serverNames": _l7("TLS SNI names"),
        "listener": _l7("Envoy listener reference"),
        "terminatingTLS": _l7("TLS termination context"),
        "originatingTLS": _l7("TLS origination context"),
    }, "ports a peer may reach")
    icmp_rule = _obj({
        "fields": _list(_obj({
            "type": {"type": ["integer", "string"],
                     "description": "ICMP type: 0-255 or a name (EchoRequest, ...) from the family's table"},
            "family": {"enum": ["IPv4", "IPv6"], "description": "IPv4 (default) or IPv6"},
        }, "an ICMP type (only the type is matched, never the code)", ["type"]),
            "ICMP types; at most 40"),
    }, "ICMP types a peer may send")

    def peer_rule(direction: str, deny: bool) -> dict[str, Any]:
        p = "from" if direction == "ingress" else "to"
        props: dict[str, Any] = {
            f"{p}Endpoints": _list({"$ref": "#/$defs/selector"}, "inventory endpoints selected by labels; [{}] = every endpoint (not the world)"),
            f"{p}CIDR": _list(cidr, "prefixes (no exceptions)"),
            f"{p}CIDRSet": _list({"$ref": "#/$defs/cidrRule"}, "prefixes with exceptions"),
            f"{p}Entities": _list({"enum": ENTITIES}, "reserved peers: world, host, all, cluster carry over to one host"),
            f"{p}Nodes": _l7("cluster nodes by label"),
            f"{p}Groups": _l7("cloud provider groups"),
            f"{p}Requires": _l7("required labels (removed in Cilium 1.19)"),
            "toPorts": _list({"$ref": "#/$defs/portRule"}, "L4: ports allowed (AND with the peer)"),
            "icmps": _list({"$ref": "#/$defs/icmpRule"}, "ICMP types (never together with toPorts)"),
            "authentication": _l7("mutual authentication"),
        }
        if direction == "egress":
            props["toServices"] = _l7("Kubernetes services")
            if not deny:
                props["toFQDNs"] = _l7("DNS names (needs Cilium's DNS proxy)")
        kind = "deny" if deny else "allow"
        return _obj(props, f"one {direction} {kind} rule: peers AND ports; rules of a list are OR'd")

    rule = _obj({
        "endpointSelector": {"$ref": "#/$defs/selector"},
        "nodeSelector": {"$ref": "#/$defs/selector"},
        "ingress": _list({"$ref": "#/$defs/ingressRule"}, "ingress allow rules (OR'd); turns on ingress default deny"),
        "ingressDeny": _list({"$ref": "#/$defs/ingressDenyRule"}, "ingress deny rules; deny beats any allow"),
        "egress": _list({"$ref": "#/$defs/egressRule"}, "egress allow rules (OR'd); turns on egress default deny"),
        "egressDeny": _list({"$ref": "#/$defs/egressDenyRule"}, "egress deny rules; deny beats any allow"),
        "enableDefaultDeny": _obj({"ingress": {"type": "boolean"}, "egress": {"type": "boolean"}},
                                  "whether this rule puts its directions in default deny (default true)"),
        "labels": _list({"type": "object"}, "rule labels (informational)"),
        "description": {"type": "string", "description": "free text"},
        "log": _obj({"value": {"type": "string", "maxLength": 32}}, "log tag (informational)"),
    }, "one Cilium policy rule: who it selects and what it allows/denies")
    return {
        "selector": selector, "cidrRule": cidr_rule, "portProtocol": port_protocol,
        "portRule": port_rule, "icmpRule": icmp_rule, "rule": rule,
        "ingressRule": peer_rule("ingress", False), "ingressDenyRule": peer_rule("ingress", True),
        "egressRule": peer_rule("egress", False), "egressDenyRule": peer_rule("egress", True),
    }


METADATA = {
    "type": "object", "description": "Kubernetes object metadata; `name` names the policy",
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                   "labels": {"type": "object"}, "annotations": {"type": "object"},
                   "uid": {}, "resourceVersion": {}, "generation": {}, "creationTimestamp": {},
                   "managedFields": {}},
    "additionalProperties": False, "required": ["name"],
}


def cilium_schema() -> dict[str, Any]:
    d = defs()
    return {
        "$schema": DRAFT,
        "title": "CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy (cilium.io/v2), L3/L4 on one host",
        "type": "object",
        "properties": {
            "apiVersion": {"const": "cilium.io/v2"},
            "kind": {"enum": ["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"]},
            "metadata": METADATA,
            "spec": {"$ref": "#/$defs/rule"},
            "specs": {"type": "array", "items": {"$ref": "#/$defs/rule"}, "minItems": 1,
                      "description": "several rules in one object"},
            "status": {"description": "written by Cilium; ignored"},
        },
        "required": ["apiVersion", "kind", "metadata"],
        "additionalProperties": False,
        "$defs": d,
    }


def native_schema() -> dict[str, Any]:
    d = defs()
    rule = json.loads(json.dumps(d["rule"]))
    rule["properties"]["enforcementMode"] = {
        "enum": ["enforce", "audit"],
        "description": "audit: would-be drops pass and are logged and counted"}
    d["rule"] = rule
    return {
        "$schema": DRAFT,
        "title": "bpfpolicy NetworkPolicy (Cilium L3/L4 rule + enforcementMode)",
        "type": "object",
        "properties": {
            "apiVersion": {"const": "bpfpolicy.io/v1"},
            "kind": {"const": "NetworkPolicy"},
            "metadata": METADATA,
            "spec": {"$ref": "#/$defs/rule"},
            "specs": {"type": "array", "items": {"$ref": "#/$defs/rule"}, "minItems": 1},
        },
        "required": ["apiVersion", "kind", "metadata"],
        "additionalProperties": False,
        "$defs": d,
    }


def main() -> None:
    for name, schema in (("cilium-networkpolicy.json", cilium_schema()), ("networkpolicy.json", native_schema())):
        (SCHEMAS_DIR / name).write_text(json.dumps(schema, indent=2) + "\n")


if __name__ == "__main__":
    main()
