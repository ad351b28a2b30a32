"""Per-rule counters start at zero for a new rule (issue #10): a program replace must not
hand the old rule's counts to whichever rule now has its slot."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from conftest import run_cli

POLICY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: web}}
spec:
  endpointSelector: {{matchLabels: {{app: ctr}}}}
  ingress:
    - fromCIDR: [{peer}/32]
      toPorts: [{{ports: [{{port: "{port}", protocol: UDP}}]}}]
"""


def _send(pair, port: int, count: int) -> int:  # noqa: ANN001
    """`count` datagrams b → a:port; how many arrived."""
    from bpfpolicy.kernel.netns import socket_in_netns

    rx = socket_in_netns(pair.ns_a, socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket_in_netns(pair.ns_b, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind((pair.ip4_a, port))
        rx.settimeout(0.5)
        for i in range(count):
            tx.sendto(b"c%d" % i, (pair.ip4_a, port))
            time.sleep(0.01)
        got = 0
        for _ in range(count):
            try:
                rx.recv(64)
                got += 1
            except TimeoutError:
                break
        return got
    finally:
        rx.close()
        tx.close()


def _counters(ctl) -> dict[str, int]:  # noqa: ANN001
    out = run_cli(ctl, "status", "--format", "json")
    (row,) = [p for p in json.loads(out.stdout)["policies"] if p["policy"].startswith("NetworkPolicy/")]
    return {c["rule"]: c["packets"] for c in row["counters"]}


@pytest.mark.kernel
def test_a_rule_that_takes_an_old_rules_slot_starts_at_zero(ctl, veth, tmp_path: Path) -> None:
    cfg = Path(ctl.env["BPFPOLICY_CONFIG"])
    cfg.write_text(cfg.read_text() + f"endpoints:\n  - name: ctr\n    labels: {{app: ctr}}\n"
                   f"    interfaces: [{{name: {veth.if_a}, netns: {veth.ns_a}}}]\n"
                   f"    addresses: [{veth.ip4_a}]\n")
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "web.yaml").write_text(POLICY.format(peer=veth.ip4_b, port=7000))
    first = run_cli(ctl, "apply", str(pol))
    assert first.returncode == 0, first.stdout + first.stderr
    assert _send(veth, 7000, 3) == 3
    (old_rule,) = [r for r, n in _counters(ctl).items() if n == 3]

    # a new rule inserted first takes the old rule's slot and its path (spec.ingress[0])
    new_first = POLICY.format(peer=veth.ip4_b, port=7001) + (
        f"    - fromCIDR: [{veth.ip4_b}/32]\n      toPorts: [{{ports: [{{port: \"7000\", protocol: UDP}}]}}]\n")
    (pol / "web.yaml").write_text(new_first)
    second = run_cli(ctl, "apply", str(pol))
    assert second.returncode == 0, second.stdout + second.stderr
    after = _counters(ctl)
    assert after[old_rule] == 0, after  # the new rule at the old slot inherited nothing
    # every policy rule starts at zero (the built-in default-deny/reply counters are left
    # out: IPv6 neighbour discovery on the veth can tick them at any time)
    assert all(n == 0 for rule, n in after.items() if rule.startswith("NetworkPolicy/")), after
    assert _send(veth, 7001, 2) == 2
    assert _counters(ctl)[old_rule] == 2  # ingress[0] is now the 7001 rule: its own two packets
