"""Bad NetworkPolicy input → precise `file:line:col: path: message`, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfpolicy.policy.validate import validate_paths

HEAD = "apiVersion: bpfpolicy.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n"
CNP = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bad}\nspec:\n  endpointSelector: {}\n"

CASES = [
    (HEAD + "  ingress:\n  - fromCIDR: [10.0.0.0/8]\n    fromEndpoints: [{}]\n",
     8, 5, "spec.ingress[0].fromEndpoints", "combining fromCIDR and fromEndpoints is not supported yet"),
    (HEAD + "  egress:\n  - toPorts: [{ports: [{port: '80'}]}]\n    icmps: [{fields: [{type: 8}]}]\n",
     8, 5, "spec.egress[0].icmps", "the ICMPs block may only be present without ToPorts"),
    (HEAD + "  egress:\n  - toCIDRSet:\n    - cidr: 10.0.0.0/16\n      except: [10.1.0.0/24]\n",
     9, 16, "spec.egress[0].toCIDRSet[0].except[0]",
     "allow CIDR prefix 10.0.0.0/16 does not contain exclude CIDR prefix 10.1.0.0/24"),
    (HEAD + "  egress:\n  - toCIDRSet:\n    - cidr: 10.0.0.0/16\n      except: ['fd00::/64']\n",
     9, 16, "spec.egress[0].toCIDRSet[0].except[0]", "except fd00::/64 is IPv6 but cidr 10.0.0.0/16 is IPv4"),
    (HEAD + "  ingress:\n  - fromCIDR: [10.0.0.300/8]\n",
     7, 16, "spec.ingress[0].fromCIDR[0]", '"10.0.0.300/8" is not a valid CIDR'),
    (HEAD + "  ingress:\n  - toPorts: [{ports: [{port: '70000', protocol: TCP}]}]\n",
     7, 25, "spec.ingress[0].toPorts[0].ports[0].port", 'unable to parse port "70000"'),
    (HEAD + "  ingress:\n  - toPorts: [{ports: [{port: '90', endPort: 80, protocol: TCP}]}]\n",
     7, 37, "spec.ingress[0].toPorts[0].ports[0].endPort", "endPort 80 is less than port 90"),
    (HEAD + "  ingress:\n  - toPorts: [{ports: [{port: '80', protocol: tcp}]}]\n",
     7, 37, "spec.ingress[0].toPorts[0].ports[0].protocol",
     'protocol "tcp" is not one of TCP, UDP, SCTP, ANY'),
    (HEAD + "  egress:\n  - icmps: [{fields: [{type: EchoRequst}]}]\n",
     7, 24, "spec.egress[0].icmps[0].fields[0].type", 'ICMP type EchoRequst not found in IPv4 (did you mean "EchoRequest"?)'),
    (HEAD + "  egress:\n  - icmps: [{fields: [{type: PacketTooBig}]}]\n",
     7, 24, "spec.egress[0].icmps[0].fields[0].type", "it is an IPv6 type: set family"),
    (HEAD + "  egress:\n  - toFQDNs: [{matchName: example.com}]\n",
     7, 5, "spec.egress[0].toFQDNs", "L7/DNS rules (toFQDNs) are not supported"),
    (HEAD + "  ingress:\n  - toPorts:\n    - ports: [{port: '80', protocol: TCP}]\n      rules: {http: [{method: GET}]}\n",
     9, 7, "spec.ingress[0].toPorts[0].rules", "L7 rules (http/dns/kafka) need a proxy"),
    (HEAD + "  ingress:\n  - fromEndpoints: [{matchLabels: {'k8s:io.cilium.k8s.policy.cluster': c1}}]\n",
     7, 36, "spec.ingress[0].fromEndpoints[0].matchLabels.k8s:io.cilium.k8s.policy.cluster",
     "namespace-label/cluster selectors have no meaning on a single host"),
    (HEAD + "  ingressDeny:\n  - fromEntities: [remote-node]\n",
     7, 20, "spec.ingressDeny[0].fromEntities[0]", "a deny rule cannot be dropped"),
    (CNP.replace("endpointSelector", "nodeSelector") + "  ingress: [{}]\n",
     5, 3, "spec.nodeSelector", "only allowed in a CiliumClusterwideNetworkPolicy"),
    (HEAD + "  description: nothing\n",
     4, 1, "spec", "rule must have at least one of ingress, ingressDeny, egress, egressDeny"),
    (HEAD + "  ingress:\n  - toPorts: [{ports: [" + ", ".join(f"{{port: '{p}'}}" for p in range(1, 42)) + "]}]\n",
     7, 16, "spec.ingress[0].toPorts[0].ports", "too many ports, the max is 40 (has 41)"),
    (HEAD + "  egress:\n  - toCIDRSet: [{cidr: '{{.ExternalCIDR}}'}]\n",
     7, 18, "spec.egress[0].toCIDRSet[0].cidr", "unrendered Go template"),
    (CNP + "  ingress:\n  - fromEndpoints:\n    - matchExpressions: [{key: app, operator: in, values: [x]}]\n",
     8, 37, "spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator",
     'did you mean "In"? operators are case-sensitive'),
    (HEAD + "  ingress:\n  - toPorts: [{ports: [{port: '80', protocol: TCP}]}]\n    fromPortz: []\n",
     8, 5, "spec.ingress[0].fromPortz", 'unknown field "fromPortz"'),
]


@pytest.mark.parametrize("text,line,col,path,message", CASES, ids=[c[3] for c in CASES])
def test_bad_input_is_reported_precisely(tmp_path: Path, text: str, line: int, col: int, path: str,
                                         message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    result = validate_paths([f])
    assert not result.ok
    errors = [str(d) for d in result.errors]
    prefix = f"{f}:{line}:{col}: {path}: "
    assert any(e.startswith(prefix) and message in e for e in errors), errors


def test_lenient_drops_unsupported_allow_rule_with_warning(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "  egress:\n  - toFQDNs: [{matchName: example.com}]\n  - toCIDR: [192.0.2.0/24]\n")
    result = validate_paths([f], lenient=True)
    assert result.ok
    (w,) = [d for d in result.diagnostics if d.severity == "warning"]
    assert (w.line, w.col, w.path) == (7, 5, "spec.egress[0].toFQDNs")
    assert "dropped spec.egress[0]" in w.message
    assert result.policies[0].doc.data["spec"]["egress"] == [{"toCIDR": ["192.0.2.0/24"]}]


def test_host_bits_and_empty_lists_are_warnings(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "  ingress:\n  - fromCIDR: [10.1.2.3/8]\n  egress: []\n")
    result = validate_paths([f])
    assert result.ok
    msgs = sorted(str(d) for d in result.diagnostics)
    assert any(":7:16: spec.ingress[0].fromCIDR[0]: warning: \"10.1.2.3/8\" has host bits set; it means 10.0.0.0/8" in m for m in msgs), msgs
    assert any(":8:3: spec.egress: warning: an empty egress list is ignored by Cilium" in m for m in msgs), msgs
