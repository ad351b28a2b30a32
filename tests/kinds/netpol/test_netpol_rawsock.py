"""Raw-socket egress from inside a NetworkPolicy endpoint (issue #10), with real sockets.

The endpoint (a) is a tc endpoint (its veth in netns a) that also names a cgroup: tc
judges its packets, the cgroup carries the cgroup/setsockopt guard refusing
PACKET_QDISC_BYPASS. An AF_PACKET socket in netns a writes Ethernet frames to b; a UDP
listener in b tells whether they arrived. Each case is one row.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel

ALLOWED, DENIED = 9000, 9001
SOL_PACKET, PACKET_QDISC_BYPASS = 263, 20
POLICY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {name: rawsock}
spec:
  endpointSelector: {matchLabels: {app: srv}}
  egress:
  - toEntities: [all]
  egressDeny:
  - toPorts: [{ports: [{port: "9001", protocol: UDP}]}]
"""
# (case, port, PACKET_QDISC_BYPASS, delivered)
AF_PACKET_ROWS = [
    ("af-packet-allowed-port", ALLOWED, False, True),  # control
    ("af-packet-denied-port", DENIED, False, False),  # dev_queue_xmit -> tc egress drops it
]
# (case, sender in the endpoint cgroup, setsockopt errno: 0 = accepted)
BYPASS_ROWS = [
    ("bypass-in-endpoint-cgroup", True, errno.EPERM),
    ("bypass-outside-cgroup", False, 0),  # control: the guard is the endpoint's only
]


@pytest.fixture(autouse=True)
def _needs(root_required, clang_required):
    from helpers.kernel_fixtures import require_kernel

    require_kernel()




def _frame(pair, port: int) -> bytes:  # noqa: ANN001
    """Ethernet + IPv4 + UDP from a to b, checksums left for nobody (UDP csum 0)."""
    payload = f"raw{port}".encode()
    src, dst = ipaddress.ip_address(pair.ip4_a), ipaddress.ip_address(pair.ip4_b)
    l4 = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, 17, 0, src.packed, dst.packed)
    total = sum(struct.unpack("!10H", hdr))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    hdr = hdr[:10] + struct.pack("!H", ~total & 0xFFFF) + hdr[12:]
    mac = {s: bytes.fromhex(pair.mac(s).replace(":", "")) for s in "ab"}
    return mac["b"] + mac["a"] + b"\x08\x00" + hdr + l4


def _delivered(pair, port: int) -> bool:  # noqa: ANN001
    from bpfpolicy.kernel.netns import socket_in_netns

    rx = socket_in_netns(pair.ns_b, socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket_in_netns(pair.ns_a, socket.AF_PACKET, socket.SOCK_RAW)
    try:
        rx.bind(("0.0.0.0", port))
        rx.settimeout(0.5)
        tx.bind((pair.if_a, 0))
        for _ in range(3):
            with contextlib.suppress(BlockingIOError, OSError):  # ENOBUFS: tc egress shot it
                tx.send(_frame(pair, port))
        try:
            return rx.recv(64) == f"raw{port}".encode()
        except TimeoutError:
            return False
    finally:
        rx.close()
        tx.close()


def _endpoint(tmp_path, pair, cgroup: str | None):  # noqa: ANN001
    from helpers.netpol import compile_text

    ep = {"name": "srv", "labels": {"app": "srv"}, "addresses": [pair.ip4_a],
          "interfaces": [{"name": pair.if_a, "netns": pair.ns_a}]}
    if cgroup:
        ep["cgroup"] = cgroup
    (art,) = compile_text(tmp_path, POLICY, [ep])
    return art


@pytest.mark.parametrize("case,port,bypass,delivered", AF_PACKET_ROWS, ids=[r[0] for r in AF_PACKET_ROWS])
def test_af_packet_egress_on_tc(case, port, bypass, delivered, tmp_path, veth_pair, bpffs_dir):
    from helpers.netpol import Loaded

    with Loaded(_endpoint(tmp_path, veth_pair, None)) as lo:
        lo.attach(bpffs_dir)
        assert _delivered(veth_pair, port) is delivered, case


SETSOCKOPT = (
    "import errno, os, socket, sys\n"
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
    "try:\n    s.setsockopt(263, 20, 1)\n    print(0)\n"
    "except OSError as e:\n    print(e.errno)\n"
)


def _setsockopt_errno(cgroup: str | None) -> int:
    """A real process (created in `cgroup` when given) opens an AF_PACKET socket and asks
    for PACKET_QDISC_BYPASS; its errno (0: accepted)."""
    def join() -> None:
        if cgroup:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    out = subprocess.run([sys.executable, "-c", SETSOCKOPT], preexec_fn=join,  # noqa: PLW1509
                         capture_output=True, text=True, timeout=30, check=True)
    return int(out.stdout.strip())


@pytest.mark.parametrize("case,inside,want", BYPASS_ROWS, ids=[r[0] for r in BYPASS_ROWS])
def test_qdisc_bypass_refused_in_endpoint_cgroup(case, inside, want, tmp_path, veth_pair, bpffs_dir, cgroup_dir):
    from helpers.netpol import Loaded

    art = _endpoint(tmp_path, veth_pair, cgroup_dir)
    atts = {(a["type"], a["direction"]) for a in art.manifest["attachments"]}
    assert atts == {("tc", "ingress"), ("tc", "egress"), ("cgroup_sockopt", "setsockopt")}
    with Loaded(art) as lo:
        lo.attach(bpffs_dir)
        assert _setsockopt_errno(cgroup_dir if inside else None) == want, case


def test_cgroup_only_endpoint_warns_at_egress_rule(tmp_path):
    """cgroup_skb cannot see AF_PACKET egress: a warning at the egress rule, none when
    the endpoint has interfaces (tc enforces)."""
    from bpfpolicy.kinds import CompileContext
    from bpfpolicy.kinds.netpol.kind import NetworkPolicyKind
    from bpfpolicy.policy.load import load_file
    from bpfpolicy.policy.validate import validate_documents

    f = tmp_path / "policy.yaml"
    f.write_text(POLICY)
    models = [p.model for p in validate_documents(load_file(f)).policies]
    base = {"name": "srv", "labels": {"app": "srv"}, "addresses": ["10.9.0.1"], "cgroup": "/sys/fs/cgroup/x"}

    def warnings(ep: dict) -> list[str]:
        got = NetworkPolicyKind().compile_all(models, CompileContext(options={"inventory": [ep]}))
        return [str(d) for d in got.diagnostics if "AF_PACKET" in d.message]

    (w,) = warnings(base)
    assert w.startswith(f"{f}:7:5: spec.egress[0]: warning: inventory endpoint 'srv': AF_PACKET"), w
    assert "CAP_NET_RAW" in w and "interfaces" in w
    assert warnings({**base, "interfaces": ["eth0"]}) == []
