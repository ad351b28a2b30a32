"""Bad input never crashes and never half-applies: every case exits 1 with a precise
`file:line:col: path: message`, and `compile --out` writes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

XDP_HEAD = "apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {name: edge}\nspec:\n"
NP_HEAD = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: np}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n"
SC_HEAD = "apiVersion: bpfpolicy.io/v1\nkind: SeccompProfile\nmetadata: {name: sc}\nspec:\n  defaultAction: SCMP_ACT_ERRNO\n"
TP_HEAD = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: tp}\nspec:\n"


def xdp(body: str) -> str:
    return XDP_HEAD + "  interfaces: [eth0]\n" + body


# (case id, file name, content, expected line, message substring)
CASES: list[tuple[str, str, str | bytes, int, str]] = [
    # -- files and syntax
    ("yaml-syntax", "a.yaml", "a: [1, 2\nb: 3\n", 2, "YAML syntax error"),
    ("yaml-tab-indent", "a.yaml", "a:\n\tb: 1\n", 2, "YAML syntax error"),
    ("yaml-duplicate-key", "a.yaml", XDP_HEAD + "  interfaces: [a]\n  interfaces: [b]\n", 6, 'duplicate key "interfaces"'),
    ("json-duplicate-key", "a.json", '{"defaultAction": "SCMP_ACT_ALLOW",\n "defaultAction": "SCMP_ACT_ERRNO"}', 2, "duplicate key"),
    ("json-syntax", "a.json", '{"defaultAction": "SCMP_ACT_ALLOW",,}', 1, "JSON syntax error"),
    ("empty-file", "a.yaml", "", 1, "file is empty"),
    ("comments-only", "a.yaml", "# nothing\n", 1, "no documents"),
    ("binary-junk", "a.yaml", bytes(range(256)) * 4, 1, "binary data"),
    ("not-utf8", "a.yaml", b"kind: caf\xe9\n", 1, "not UTF-8"),
    ("top-level-list", "a.yaml", "- a\n- b\n", 1, "expected a mapping"),
    ("top-level-scalar", "a.yaml", "hello\n", 1, "expected a mapping"),
    ("deep-nesting", "a.yaml", "a: " + "[" * 200 + "]" * 200 + "\n", 1, "nesting deeper than 100"),
    ("alias-bomb", "a.yaml", "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)), 6, 'alias "*a4" expands the document past'),
    ("int-tag-1e5", "a.yaml", xdp("  deny: [{sources: [10.0.0.0/8], ports: [!!int 1e5]}]\n"), 6, '!!int "1e5" is not an integer'),
    ("timestamp-tag", "a.yaml", xdp("  deny: [{sources: [!!timestamp foo]}]\n"), 6, "!!timestamp is not supported"),
    ("python-tag", "a.yaml", "a: !!python/object/apply:os.system [id]\n", 1, "unsupported YAML tag"),
    ("merge-key-not-mapping", "a.yaml", XDP_HEAD + "  <<: 5\n  interfaces: [eth0]\n", 5, "<< (merge key) takes a mapping"),
    ("port-5000-digits", "a.yaml", xdp("  deny: [{sources: [10.0.0.0/8], ports: [" + "9" * 5000 + "]}]\n"), 6, "integer with 5000 digits"),
    ("json-5000-digits", "a.json", '{"defaultAction": "SCMP_ACT_ERRNO",\n "defaultErrnoRet": ' + "9" * 5000 + "}", 2, "integer with 5000 digits"),
    ("xdp-rate-huge", "a.yaml", xdp("  deny: [{sources: [10.0.0.0/8]}]\n  rateLimit: {synPerSecond: 18446744073709551616}\n"), 7, "out of range"),
    # -- identity
    ("unknown-kind", "a.yaml", "apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklst\nmetadata: {name: x}\n", 2, 'did you mean "XDPBlocklist"'),
    ("unknown-apiversion", "a.yaml", "apiVersion: bpfpolicy.io/v2\nkind: XDPBlocklist\nmetadata: {name: x}\n", 1, 'unknown apiVersion "bpfpolicy.io/v2"'),
    ("missing-apiversion", "a.yaml", "kind: XDPBlocklist\nmetadata: {name: x}\n", 1, 'missing required field "apiVersion"'),
    ("lowercase-apiversion", "a.yaml", "apiversion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\n", 1, 'did you mean "apiVersion"'),
    ("missing-kind", "a.yaml", "apiVersion: bpfpolicy.io/v1\nmetadata: {name: x}\n", 1, 'missing required field "kind"'),
    ("foreign-unknown-kind", "a.yaml", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicyy\nmetadata: {name: x}\n", 2, 'did you mean "CiliumNetworkPolicy"'),
    ("missing-name", "a.yaml", XDP_HEAD.replace("metadata: {name: edge}\n", "metadata: {}\n") + "  interfaces: [eth0]\n  deny: [{sources: [10.0.0.0/8]}]\n", 3, "name"),
    ("bad-name", "a.yaml", XDP_HEAD.replace("name: edge", "name: Edge_1") + "  interfaces: [eth0]\n  deny: [{sources: [10.0.0.0/8]}]\n", 3, "is not valid"),
    ("name-injects-c", "a.yaml", XDP_HEAD.replace("name: edge", 'name: "x\\"; int evil(){}; //"') + "  interfaces: [eth0]\n  deny: [{sources: [10.0.0.0/8]}]\n", 3, "is not valid"),
    ("name-too-long", "a.yaml", XDP_HEAD.replace("name: edge", "name: " + "a" * 64) + "  interfaces: [eth0]\n  deny: [{sources: [10.0.0.0/8]}]\n", 3, "at most 63"),
    # -- XDPBlocklist
    ("xdp-port-out-of-range", "a.yaml", xdp("  deny:\n    - sources: [10.0.0.0/8]\n      ports: [70000]\n"), 8, "70000"),
    ("xdp-port-range-reversed", "a.yaml", xdp('  deny:\n    - sources: [10.0.0.0/8]\n      ports: ["9000-8000"]\n'), 8, "9000-8000"),
    ("xdp-bad-prefix-length", "a.yaml", xdp("  deny:\n    - sources: [10.0.0.0/33]\n"), 7, "10.0.0.0/33"),
    ("xdp-cidr-host-bits", "a.yaml", xdp("  deny:\n    - sources: [10.0.0.1/8]\n"), 7, "10.0.0.1/8"),
    ("xdp-not-an-address", "a.yaml", xdp("  deny:\n    - sources: [not-an-ip]\n"), 7, "not-an-ip"),
    ("xdp-unknown-protocol", "a.yaml", xdp("  deny:\n    - sources: [10.0.0.0/8]\n      protocols: [tcpp]\n"), 8, "tcp"),
    ("xdp-unknown-field", "a.yaml", xdp("  deny:\n    - sorces: [10.0.0.0/8]\n"), 7, 'did you mean "sources"'),
    ("xdp-wrong-type", "a.yaml", XDP_HEAD + "  interfaces: eth0\n  deny: [{sources: [10.0.0.0/8]}]\n", 5, "expected a list"),
    ("xdp-bad-mode", "a.yaml", xdp("  mode: turbo\n  deny: [{sources: [10.0.0.0/8]}]\n"), 6, "turbo"),
    ("xdp-missing-interfaces", "a.yaml", XDP_HEAD + "  deny: [{sources: [10.0.0.0/8]}]\n", 4, "interfaces"),
    ("xdp-missing-source-file", "a.yaml", xdp("  deny:\n    - sourceFiles: [lists/nope.txt]\n"), 7, "nope.txt"),
    ("xdp-negative-rate", "a.yaml", xdp("  deny: [{sources: [10.0.0.0/8]}]\n  rateLimit: {synPerSecond: -5}\n"), 7, "-5"),
    # -- NetworkPolicy (Cilium)
    ("np-except-outside", "a.yaml", NP_HEAD + "  egress:\n    - toCIDRSet:\n        - cidr: 10.0.0.0/8\n          except: [192.168.0.0/16]\n", 9, "192.168.0.0/16"),
    ("np-except-family", "a.yaml", NP_HEAD + "  egress:\n    - toCIDRSet:\n        - cidr: 10.0.0.0/8\n          except: ['2001:db8::/32']\n", 9, "2001:db8::/32"),
    ("np-bad-cidr", "a.yaml", NP_HEAD + "  egress:\n    - toCIDR: [10.0.0.0/40]\n", 7, "10.0.0.0/40"),
    ("np-fqdn", "a.yaml", NP_HEAD + "  egress:\n    - toFQDNs: [{matchName: example.com}]\n", 7, "toFQDNs"),
    ("np-icmps-with-ports", "a.yaml", NP_HEAD + "  egress:\n    - icmps: [{fields: [{type: 8}]}]\n      toPorts: [{ports: [{port: '80'}]}]\n", 7, "ICMP"),
    ("np-port-out-of-range", "a.yaml", NP_HEAD + "  ingress:\n    - toPorts: [{ports: [{port: '65536', protocol: TCP}]}]\n", 7, "65536"),
    ("np-endport-below-port", "a.yaml", NP_HEAD + "  ingress:\n    - toPorts:\n        - ports: [{port: '8080', endPort: 80, protocol: TCP}]\n", 8, "endPort"),
    ("np-icmp-name", "a.yaml", NP_HEAD + "  egress:\n    - icmps: [{fields: [{type: EchoRequst}]}]\n", 7, "EchoRequest"),
    ("np-bad-protocol", "a.yaml", NP_HEAD + "  ingress:\n    - toPorts: [{ports: [{port: '80', protocol: TPC}]}]\n", 7, "TPC"),
    ("np-two-peer-kinds", "a.yaml", NP_HEAD + "  ingress:\n    - fromCIDR: [10.0.0.0/8]\n      fromEndpoints: [{matchLabels: {a: b}}]\n", 8, "combining fromCIDR and fromEndpoints is not supported"),
    # -- SeccompProfile
    ("sc-unknown-syscall", "a.yaml", SC_HEAD + "  syscalls:\n    - names: [reed]\n      action: SCMP_ACT_ALLOW\n", 7, 'did you mean "read"'),
    ("sc-bad-action", "a.yaml", SC_HEAD + "  syscalls:\n    - names: [read]\n      action: SCMP_ACT_ALOW\n", 8, "SCMP_ACT_ALLOW"),
    ("sc-arg-index", "a.yaml", SC_HEAD + "  syscalls:\n    - names: [read]\n      action: SCMP_ACT_ALLOW\n      args: [{index: 6, value: 0, op: SCMP_CMP_EQ}]\n", 9, "index"),
    # -- TracingPolicy (Tetragon)
    ("tp-bad-operator", "a.yaml", TP_HEAD + "  kprobes:\n    - call: security_file_open\n      syscall: false\n      args: [{index: 0, type: file}]\n      selectors:\n        - matchArgs:\n            - {index: 0, operator: Equals, values: [/etc/shadow]}\n", 11, 'did you mean "Equal"'),
    ("tp-too-many-actions", "a.yaml", TP_HEAD + "  kprobes:\n    - call: security_file_open\n      syscall: false\n      selectors:\n        - matchActions: [{action: Post}, {action: Post}, {action: Post}, {action: Post}]\n", 9, "3"),
]


@pytest.mark.parametrize(("case", "name", "content", "line", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_reported_precisely(cli, tmp_path: Path, case: str, name: str,
                                         content: str | bytes, line: int, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out = cli("validate", str(path))
    assert code == 1, out
    located = [ln for ln in out.splitlines() if re.match(rf"^{re.escape(str(path))}:\d+:\d+: \S+: ", ln)]
    assert located, f"no file:line:col diagnostic in:\n{out}"
    assert any(f"{path}:{line}:" in ln and message in ln for ln in located), out
    assert "Traceback" not in out


def test_compile_writes_nothing_when_any_file_is_bad(cli, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "good.yaml").write_text(xdp("  deny: [{sources: [10.0.0.0/8]}]\n").replace("name: edge", "name: good"))
    (policies / "bad.yaml").write_text(xdp("  deny: [{sources: [10.0.0.0/33]}]\n"))
    out_dir = tmp_path / "out"
    code, out = cli("compile", str(policies), "--out", str(out_dir))
    assert code == 1
    assert "bad.yaml:6:" in out
    assert not out_dir.exists()


def test_duplicate_policy_names_across_files(cli, tmp_path: Path) -> None:
    for n in ("a", "b"):
        (tmp_path / f"{n}.yaml").write_text(xdp("  deny: [{sources: [10.0.0.0/8]}]\n"))
    code, out = cli("validate", str(tmp_path))
    assert code == 1
    assert re.search(r'b\.yaml:3:\d+: metadata\.name: duplicate XDPBlocklist "edge" \(also defined at .*a\.yaml:3:\d+\)', out), out


def test_lenient_drops_the_rule_and_says_so(cli, tmp_path: Path) -> None:
    p = tmp_path / "np.yaml"
    p.write_text(NP_HEAD + "  egress:\n    - toFQDNs: [{matchName: example.com}]\n    - toCIDR: [10.0.0.0/8]\n")
    code, out = cli("validate", "--lenient", str(p))
    assert code == 0, out
    assert f"{p}:7:" in out and "warning" in out and "dropped spec.egress[0]" in out


def test_usage_error_exits_2(cli) -> None:
    code, _ = cli("validate")
    assert code == 2
