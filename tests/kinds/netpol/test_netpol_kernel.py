"""NetworkPolicy end to end in the kernel: network namespaces as hosts, real TCP/UDP/ICMP.

* interface endpoint: tc (tcx) programs on the endpoint's own veth in its netns;
* cgroup endpoint: cgroup_skb programs on a fresh cgroup v2; the probing process moves
  itself into the cgroup before it sends anything.
The peer namespace is not in the inventory, so it is `world` to the policy.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

HERE = Path(__file__).parent
PROBE = str(HERE.parents[1] / "helpers" / "netpol_probe.py")


@pytest.fixture(autouse=True)
def _needs(root_required, clang_required):
    from helpers.kernel_fixtures import require_kernel

    require_kernel()


class Servers:
    """TCP listeners and UDP echo servers inside a netns, served by one thread."""

    def __init__(self, netns: str, tcp: list[int], udp: list[int]) -> None:
        from bpfpolicy.kernel.netns import socket_in_netns

        self.socks: list[socket.socket] = []
        for fam, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            for port in tcp:
                s = socket_in_netns(netns, fam, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((any_addr, port))
                s.listen(16)
                self.socks.append(s)
            for port in udp:
                s = socket_in_netns(netns, fam, socket.SOCK_DGRAM)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((any_addr, port))
                self.socks.append(s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select(self.socks, [], [], 0.1)
            for s in ready:
                with contextlib.suppress(OSError):
                    if s.type == socket.SOCK_STREAM:
                        conn, _ = s.accept()
                        conn.close()
                    else:
                        data, addr = s.recvfrom(64)
                        s.sendto(data, addr)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for s in self.socks:
            s.close()


@contextlib.contextmanager
def servers(netns: str, tcp: list[int], udp: list[int] = ()) -> Iterator[Servers]:  # type: ignore[assignment]
    srv = Servers(netns, tcp, list(udp))
    try:
        yield srv
    finally:
        srv.close()


def probe(netns: str, probes: list[list[object]], cgroup: str | None = None) -> list[bool]:
    cmd = [sys.executable, PROBE, *(["--cgroup", cgroup] if cgroup else []), "--netns", netns,
           json.dumps(probes)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, f"probe failed: {out.stderr.strip()[-2000:]}"
    return json.loads(out.stdout)




def _compile(tmp_path, text, inventory):
    from helpers.netpol import compile_text

    (art,) = compile_text(tmp_path, text, inventory)
    return art


def _srv_inventory(pair):
    return [{"name": "srv", "labels": {"app": "srv"},
             "interfaces": [{"name": pair.if_a, "netns": pair.ns_a}],
             "addresses": [pair.ip4_a, pair.ip6_a]}]


INTERFACE_POLICY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: srv-in}}
spec:
  endpointSelector: {{matchLabels: {{app: srv}}}}
  enforcementMode: {mode}
  ingress:
  - fromCIDR: [{net}]
    toPorts: [{{ports: [{{port: "8000", endPort: 8003, protocol: TCP}}]}}]
  - fromCIDRSet: [{{cidr: {net}, except: [{client}/32]}}]
    toPorts: [{{ports: [{{port: "8010", protocol: TCP}}]}}]
  - toPorts: [{{ports: [{{port: "9000", endPort: 9002, protocol: UDP}}]}}]
  - icmps: [{{fields: [{{type: EchoRequest}}, {{type: EchoRequest, family: IPv6}}]}}]
  ingressDeny:
  - toPorts: [{{ports: [{{port: "8002", protocol: TCP}}]}}]
  egress:
  - toCIDR: [{client}/32]
    toPorts: [{{ports: [{{port: "7000", protocol: TCP}}]}}]
"""


def _interface_policy(pair, mode: str) -> str:
    net = ".".join(pair.ip4_a.split(".")[:3]) + ".0/24"
    return INTERFACE_POLICY.format(mode=mode, net=net, client=pair.ip4_b)


def test_interface_endpoint_tc_enforces_cilium_semantics(tmp_path, veth_pair, bpffs_dir):
    from helpers.netpol import Loaded

    pair = veth_pair
    art = _compile(tmp_path, _interface_policy(pair, "enforce"), _srv_inventory(pair))
    assert [a["interface"] for a in art.manifest["attachments"]] == [pair.if_a, pair.if_a]
    srv, cli = pair.ip4_a, pair.ip4_b
    with servers(pair.ns_a, [8000, 8002, 8003, 8004, 8010], [9000, 9002, 9003]), \
         servers(pair.ns_b, [7000, 7001]), Loaded(art) as ld:
        # before attaching: everything is open
        assert probe(pair.ns_b, [["tcp", srv, 8004], ["udp", srv, 9003]]) == [True, True]
        ld.attach(bpffs_dir)
        got = probe(pair.ns_b, [
            ["tcp", srv, 8000], ["tcp", srv, 8003],   # range bounds: allowed
            ["tcp", srv, 8004],                       # past the range: default deny
            ["tcp", srv, 8002],                       # deny beats the allowing range
            ["tcp", srv, 8010],                       # except carves the client out
            ["udp", srv, 9000], ["udp", srv, 9002],   # UDP range, reply via conntrack
            ["udp", srv, 9003],
            ["ping", srv],                            # icmps EchoRequest
            ["tcp", pair.ip6_a, 8000],                # IPv6 is not in the CIDR: default deny
            ["udp", pair.ip6_a, 9000],                # the L4-only rule: any peer, IPv6 too
            ["ping", pair.ip6_a],                     # ICMPv6 EchoRequest (NDP always passes)
        ])
        assert got == [True, True, False, False, False, True, True, False, True, False, True, True]
        # egress from the endpoint: allowed flow's replies pass the default-deny ingress
        assert probe(pair.ns_a, [["tcp", cli, 7000], ["tcp", cli, 7001]]) == [True, False]

        counters = ld.counters()
        assert counters["NetworkPolicy/srv-in:spec.ingressDeny[0]"][0] >= 1
        assert counters["NetworkPolicy/srv-in:spec.ingress[0]"][0] >= 2
        assert counters["NetworkPolicy/srv-in:spec.ingress[3]"][0] == 2  # one echo request per family
        assert counters["NetworkPolicy/srv-in:spec.egress[0]"][0] >= 1
        assert counters["ingress/default-deny"][0] >= 3
        assert counters["ingress/reply"][0] >= 1  # SYN-ACK of the egress connection
        assert counters["egress/default-deny"][0] >= 1  # SYN to 7001
        events = ld.events()
        denies = [e for e in events if e["action"] == "deny"]
        assert denies and all(e["rule"] == "NetworkPolicy/srv-in:spec.ingressDeny[0]" for e in denies)
        assert {(e["remote"], e["lport"]) for e in denies} == {(cli, 8002)}
        assert {(e["endpoint"], e["policy"], e["proto"]) for e in denies} == {("srv", "NetworkPolicy/srv-in", "TCP")}
        assert any(e["action"] == "default-deny" and e["lport"] == 8004 for e in events)

        ld.detach()
        assert probe(pair.ns_b, [["tcp", srv, 8004]]) == [True]  # detached: open again


def test_interface_endpoint_audit_mode_drops_nothing_and_logs(tmp_path, veth_pair, bpffs_dir):
    from helpers.netpol import Loaded

    pair = veth_pair
    art = _compile(tmp_path, _interface_policy(pair, "audit"), _srv_inventory(pair))
    srv = pair.ip4_a
    with servers(pair.ns_a, [8000, 8002, 8004]), servers(pair.ns_b, [7001]), Loaded(art) as ld:
        ld.attach(bpffs_dir)
        assert probe(pair.ns_b, [["tcp", srv, 8000], ["tcp", srv, 8002], ["tcp", srv, 8004]]) == [True] * 3
        assert probe(pair.ns_a, [["tcp", pair.ip4_b, 7001]]) == [True]
        events = ld.events()
        seen = {(e["action"], e["direction"], e["lport"] if e["direction"] == "ingress" else e["rport"])
                for e in events}
        assert ("audit-deny", "ingress", 8002) in seen
        assert ("audit-default-deny", "ingress", 8004) in seen
        assert ("audit-default-deny", "egress", 7001) in seen
        assert not any(e["action"] in ("deny", "default-deny") for e in events)
        assert ld.counters()["NetworkPolicy/srv-in:spec.ingressDeny[0]"][0] >= 1


CGROUP_POLICY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: app-out}}
spec:
  endpointSelector: {{matchLabels: {{app: app}}}}
  egress:
  - toCIDRSet: [{{cidr: {net}, except: [{srv}/32]}}]
  - toPorts: [{{ports: [{{port: "8000", endPort: 8001, protocol: TCP}}, {{port: "9000", protocol: UDP}}]}}]
  egressDeny:
  - toPorts: [{{ports: [{{port: "8001", protocol: ANY}}]}}]
---
apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: app-ping}}
spec:
  endpointSelector: {{matchLabels: {{app: app}}}}
  egress:
  - toEntities: [world]
    icmps: [{{fields: [{{type: 8}}]}}]
"""


def test_cgroup_endpoint_cgroup_skb_merged_policies(tmp_path, veth_pair, cgroup_dir):
    from helpers.netpol import Loaded

    pair = veth_pair
    net = ".".join(pair.ip4_a.split(".")[:3]) + ".0/24"
    inventory = [{"name": "app", "labels": {"app": "app"}, "cgroup": cgroup_dir, "addresses": [pair.ip4_b]}]
    art = _compile(tmp_path, CGROUP_POLICY.format(net=net, srv=pair.ip4_a), inventory)
    assert {a["type"] for a in art.manifest["attachments"]} == {"cgroup_skb"}
    assert art.manifest["metadata"]["policies"] == ["NetworkPolicy/app-out", "NetworkPolicy/app-ping"]
    srv = pair.ip4_a
    with servers(pair.ns_a, [8000, 8001, 8002], [9000, 9001]), Loaded(art) as ld:
        ld.attach("")
        got = probe(pair.ns_b, [
            ["tcp", srv, 8000],   # L4 rule, reply through cgroup ingress via conntrack
            ["tcp", srv, 8001],   # denied (egressDeny ANY 8001) though the range allows it
            ["tcp", srv, 8002],   # the CIDR rule's except excludes srv: default deny
            ["udp", srv, 9000],
            ["udp", srv, 9001],
            ["ping", srv],        # second policy (merged): ICMP echo to world
            ["tcp", pair.ip6_a, 8000],  # IPv6 through cgroup_skb: the L4 rule (any peer)
            ["tcp", pair.ip6_a, 8002],
        ], cgroup=cgroup_dir)
        assert got == [True, False, False, True, False, True, True, False]
        # a process outside the cgroup is not the endpoint: unaffected
        assert probe(pair.ns_b, [["tcp", srv, 8001], ["tcp", srv, 8002]]) == [True, True]
        c = ld.counters()
        assert c["NetworkPolicy/app-out:spec.egressDeny[0]"][0] >= 1
        assert c["NetworkPolicy/app-ping:spec.egress[0]"][0] == 1
        assert c["ingress/reply"][0] >= 2
        assert c["ingress/default-deny"][0] == 0  # ingress has no policy: nothing default-denied


@pytest.fixture
def controller_cfg(tmp_path):
    """A controller HostConfig on a unique bpffs root + tmp state dir; torn down after."""
    import secrets

    from bpfpolicy.controller.apply import _rmtree_pins, gc_staging, prune
    from bpfpolicy.controller.config import load_config
    from bpfpolicy.controller.state import Store

    root = Path(f"/sys/fs/bpf/bpfpolicy-nptest-{secrets.token_hex(4)}")
    env = {"BPFPOLICY_BPFFS_ROOT": str(root), "BPFPOLICY_STATE_DIR": str(tmp_path / "state"),
           "BPFPOLICY_CONFIG": str(tmp_path / "config.yaml")}
    (tmp_path / "config.yaml").write_text("selfHeal: true\ninterval: 1\n")
    cfg = load_config(env=env)
    try:
        yield cfg
    finally:
        store = Store(cfg.state_dir)
        gc_staging(cfg)
        for key, entry in store.inventory().items():
            with contextlib.suppress(Exception):
                prune(cfg, key, entry, store)
        _rmtree_pins(cfg.bpffs_root)


def test_controller_applies_endpoint_artifact_and_map_delta(tmp_path, veth_pair, controller_cfg, monkeypatch):
    """The controller's generic apply (artifact tree source): attach, enforce, then a
    policy edit that only changes map contents is a map delta on the same program."""
    from bpfpolicy.controller.reconcile import Reconciler
    from bpfpolicy.kernel import tc

    from helpers.netpol import compile_text

    pair = veth_pair
    inv = _srv_inventory(pair)
    policy = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: srv}}
spec:
  endpointSelector: {{matchLabels: {{app: srv}}}}
  ingress:
  - toPorts: [{{ports: [{{port: "{port}", protocol: TCP}}]}}]
"""
    src = tmp_path / "artifacts"
    (art,) = compile_text(tmp_path, policy.format(port=8000), inv)
    art.write(src)
    with servers(pair.ns_a, [8000, 8001]):
        res = Reconciler(controller_cfg, [src], prebuilt=True).cycle()  # a hand-built artifact tree
        assert res.ok, res.error
        assert [o.action for o in res.applied.outcomes] == ["create"]
        ids = tc.prog_query(pair.if_a, "ingress", pair.ns_a)
        assert len(ids) == 1
        assert probe(pair.ns_b, [["tcp", pair.ip4_a, 8000], ["tcp", pair.ip4_a, 8001]]) == [True, False]
        from bpfpolicy.controller.status import collect

        (row,) = collect(controller_cfg)["policies"]
        by_rule = {c["rule"]: c["packets"] for c in row["counters"]}
        assert by_rule["NetworkPolicy/srv:spec.ingress[0]"] >= 1  # status names policy and rule
        assert by_rule["ingress/default-deny"] >= 1

        (art2,) = compile_text(tmp_path, policy.format(port=8001), inv)
        assert art2.manifest["program_hash"] == art.manifest["program_hash"]
        art2.write(src)
        res = Reconciler(controller_cfg, [src], prebuilt=True).cycle()  # a hand-built artifact tree
        assert res.ok, res.error
        assert [o.action for o in res.applied.outcomes] == ["update-map"]
        assert tc.prog_query(pair.if_a, "ingress", pair.ns_a) == ids  # no reload
        assert probe(pair.ns_b, [["tcp", pair.ip4_a, 8000], ["tcp", pair.ip4_a, 8001]]) == [False, True]


def test_deny_only_policy_turns_on_default_deny_for_its_direction_only(tmp_path, veth_pair, bpffs_dir):
    """Cilium: a deny section alone makes its direction default-deny; the other stays open."""
    from helpers.netpol import Loaded

    pair = veth_pair
    text = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deny-only}
spec:
  endpointSelector: {matchLabels: {app: srv}}
  ingressDeny:
  - toPorts: [{ports: [{port: "8001", protocol: TCP}]}]
"""
    art = _compile(tmp_path, text, _srv_inventory(pair))
    assert art.manifest["metadata"]["default"] == {"ingress": "default-deny", "egress": "pass"}
    with servers(pair.ns_a, [8000, 8001]), servers(pair.ns_b, [7000]), Loaded(art) as ld:
        ld.attach(bpffs_dir)
        assert probe(pair.ns_b, [["tcp", pair.ip4_a, 8000], ["tcp", pair.ip4_a, 8001]]) == [False, False]
        assert probe(pair.ns_a, [["tcp", pair.ip4_b, 7000], ["ping", pair.ip4_b]]) == [True, True]
        c = ld.counters()
        assert c["CiliumNetworkPolicy/deny-only:spec.ingressDeny[0]"][0] >= 1
        assert c["ingress/default-deny"][0] >= 1
        assert c["ingress/reply"][0] >= 2  # SYN-ACK and echo reply of the open egress


def test_policy_change_cuts_established_flow_once_rechecked(tmp_path, veth_pair, bpffs_dir):
    """A map-only policy change bumps the generation: the established UDP flow (same
    socket, same ports) is re-checked on its next packet and dropped."""
    from bpfpolicy.kernel.maps import apply_map_contents
    from bpfpolicy.kernel.netns import socket_in_netns

    from helpers.netpol import Loaded

    pair = veth_pair
    text = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: udp}}
spec:
  endpointSelector: {{matchLabels: {{app: srv}}}}
  ingress:
  - toPorts: [{{ports: [{{port: "{port}", protocol: UDP}}]}}]
"""
    a = _compile(tmp_path, text.format(port=9000), _srv_inventory(pair))
    b = _compile(tmp_path, text.format(port=9001), _srv_inventory(pair))
    assert a.manifest["program_hash"] == b.manifest["program_hash"]
    with servers(pair.ns_a, [], [9000, 9001]), Loaded(a) as ld:
        ld.attach(bpffs_dir)
        s = socket_in_netns(pair.ns_b, socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.0)

        def echo() -> bool:
            s.sendto(b"x", (pair.ip4_a, 9000))
            try:
                return s.recv(8) == b"x"
            except OSError:
                return False

        try:
            assert echo() and echo()
            slot = "NetworkPolicy/udp:spec.ingress[0]"
            assert ld.counters()[slot][0] == 2  # the established packet counts to its rule
            for m in a.manifest["maps"]:
                if m.get("contents"):
                    apply_map_contents(ld.obj.map(m["name"]).fd, a.files[m["contents"]],
                                       b.files[m["contents"]], m["key_size"], m["value_size"])
            assert not echo()  # same flow, new generation: re-checked, now denied
        finally:
            s.close()
