"""tc (tcx and cls_bpf) and cgroup_skb attachments — the kernel helpers NetworkPolicy
uses — and the controller driving a generic artifact that uses both, with no kind code."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import udp_received

pytestmark = pytest.mark.kernel

SOURCE = r"""
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);
    __type(value, __u32);
    __uint(max_entries, 64);
} deny_src SEC(".maps");

/* drop IPv4 packets whose source is listed */
SEC("tc")
int tc_filter(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return TC_ACT_OK;
    if (skb->mark == %(magic)du)  /* variant marker */
        return TC_ACT_OK;
    return bpf_map_lookup_elem(&deny_src, &ip->saddr) ? TC_ACT_SHOT : TC_ACT_OK;
}

/* egress from the cgroup: 1 = allow, 0 = drop */
SEC("cgroup_skb/egress")
int cg_egress(struct __sk_buff *skb)
{
    return %(cg_verdict)d;
}

SEC("tc")
int tc_pass(struct __sk_buff *skb) { return TC_ACT_OK; }

char LICENSE[] SEC("license") = "GPL";
"""


def _object(variant: int = 0, cg_verdict: int = 1) -> bytes:
    from bpfpolicy.codegen.build import build_bpf

    return build_bpf(SOURCE % {"magic": 0x7FFF0000 + variant, "cg_verdict": cg_verdict}, name="att").object


def _cgroup2_root() -> Path:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            return Path(parts[1])
    pytest.skip("no cgroup v2 mount")


@pytest.fixture
def cgroup_dir():
    d = _cgroup2_root() / f"bpfpolicy-test-{secrets.token_hex(4)}"
    d.mkdir()
    try:
        yield d
    finally:
        try:
            d.rmdir()
        except OSError:
            pass


def _send_from_cgroup(cg: Path, pair, count: int = 3) -> int:  # noqa: ANN001
    """Send UDP b → a from a process placed in cgroup `cg`; datagrams received on a."""
    import socket

    from bpfpolicy.kernel.netns import socket_in_netns

    rx = socket_in_netns(pair.ns_a, socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((pair.ip4_a, 0))
    rx.settimeout(0.5)
    code = (f"import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for i in range({count}):\n"
            f"    try: s.sendto(b'x', ('{pair.ip4_a}', {rx.getsockname()[1]}))\n"
            f"    except OSError: pass\n")
    script = f"echo $$ > {cg}/cgroup.procs && exec ip netns exec {pair.ns_b} {sys.executable} -c \"$0\""
    subprocess.run(["sh", "-c", script, code], check=True)
    got = 0
    try:
        while got < count:
            rx.recv(16)
            got += 1
    except TimeoutError:
        pass
    finally:
        rx.close()
    return got


def _load(tmp_path: Path, obj: bytes):  # noqa: ANN202
    from bpfpolicy.kernel.libbpf import BpfObject

    p = tmp_path / f"att-{secrets.token_hex(3)}.o"
    p.write_bytes(obj)
    o = BpfObject.open_file(p)
    o.load()
    return o


def _deny(o, addr: str) -> None:  # noqa: ANN001
    import ipaddress

    from bpfpolicy.kernel import bpf

    bpf.map_update(o.map("deny_src").fd, ipaddress.IPv4Address(addr).packed, b"\0\0\0\0")


@pytest.mark.parametrize("mechanism", ["tc", "tcx"])
def test_tc_attach_and_atomic_replace(veth, tmp_path: Path, mechanism: str) -> None:
    from bpfpolicy.kernel import bpf, tc

    if mechanism == "tcx" and not tc.tcx_supported()[0]:
        pytest.skip(tc.tcx_supported()[1])
    o = _load(tmp_path, _object())
    _deny(o, veth.ip4_b)
    filt, passing = o.program("tc_filter").fd, o.program("tc_pass").fd
    pin = f"/sys/fs/bpf/bpfpolicy-test-link-{secrets.token_hex(4)}"
    assert udp_received(veth) > 0
    att = tc.attach(filt, veth.if_a, "ingress", veth.ns_a, link_pin=pin, prefer_tcx=mechanism == "tcx")
    try:
        assert att["mechanism"] == mechanism
        assert tc.attached_prog_ids(att, veth.if_a, "ingress", veth.ns_a) == [bpf.prog_info(filt)["id"]]
        assert udp_received(veth) == 0
        if mechanism == "tcx":
            fd = bpf.obj_get(pin)
            bpf.link_update(fd, passing, filt)
            with pytest.raises(OSError):  # compare-and-swap with a stale old program
                bpf.link_update(fd, passing, filt)
            os.close(fd)
            assert tc.prog_query(veth.if_a, "ingress", veth.ns_a) == [bpf.prog_info(passing)["id"]]
        else:
            tc.cls_attach(passing, veth.if_a, "ingress", veth.ns_a)  # replace in place
            assert len(tc.cls_query(veth.if_a, "ingress", veth.ns_a)) == 1
        assert tc.attached_prog_ids(att, veth.if_a, "ingress", veth.ns_a) == [bpf.prog_info(passing)["id"]]
        assert udp_received(veth) > 0
    finally:
        tc.detach(att, veth.if_a, "ingress", veth.ns_a)
        o.close()
    assert tc.attached_prog_ids(att, veth.if_a, "ingress", veth.ns_a) == []
    assert not os.path.exists(pin)


def test_cgroup_skb_link_attach_update_detach(veth, cgroup_dir: Path, tmp_path: Path) -> None:
    from bpfpolicy.kernel import bpf, cgroup

    drop, allow = _load(tmp_path, _object(cg_verdict=0)), _load(tmp_path, _object(cg_verdict=1))
    pin = f"/sys/fs/bpf/bpfpolicy-test-cg-{secrets.token_hex(4)}"
    assert _send_from_cgroup(cgroup_dir, veth) == 3
    link_id = cgroup.attach_pinned(drop.program("cg_egress").fd, str(cgroup_dir), "egress", pin)
    try:
        drop_id = bpf.prog_info(drop.program("cg_egress").fd)["id"]
        assert cgroup.query(str(cgroup_dir), "egress") == [drop_id]
        assert _send_from_cgroup(cgroup_dir, veth) == 0
        assert udp_received(veth) > 0  # processes outside the cgroup are unaffected
        cgroup.update(pin, allow.program("cg_egress").fd, drop.program("cg_egress").fd)
        assert cgroup.link_prog_id(pin) == bpf.prog_info(allow.program("cg_egress").fd)["id"]
        assert _send_from_cgroup(cgroup_dir, veth) == 3
    finally:
        assert cgroup.detach(pin)
        drop.close()
        allow.close()
    assert cgroup.query(str(cgroup_dir), "egress") == [] and link_id > 0


def _generic_artifact(out: Path, veth, cg: Path, variant: int, cg_verdict: int, deny: str) -> Path:  # noqa: ANN001
    import ipaddress

    from bpfpolicy.kinds.base import Artifact

    obj = _object(variant, cg_verdict)
    contents = ipaddress.IPv4Address(deny).packed + b"\0\0\0\0"
    manifest = {
        "object": "prog.bpf.o", "program_hash": hashlib.sha256(obj).hexdigest(),
        "programs": [{"name": "tc_filter", "type": "tc"}, {"name": "cg_egress", "type": "cgroup_skb"}],
        "maps": [{"name": "deny_src", "type": "hash", "key_size": 4, "value_size": 4,
                  "contents": "maps/deny_src.bin", "entries": 1, "percpu": False}],
        "attachments": [
            {"program": "tc_filter", "type": "tc", "direction": "ingress", "interface": veth.if_a, "netns": veth.ns_a},
            {"program": "cg_egress", "type": "cgroup_skb", "direction": "egress", "cgroup": str(cg)}],
    }
    return Artifact("NetworkPolicy", "web", {"prog.bpf.o": obj, "maps/deny_src.bin": contents}, manifest).write(out)


@pytest.mark.parametrize("mechanism", ["auto", "tc"])
def test_controller_drives_tc_and_cgroup_attachments(ctl, veth, cgroup_dir: Path, tmp_path: Path,
                                                     mechanism: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """tcx when the kernel has it ("auto"), and the clsact/cls_bpf path forced with
    BPFPOLICY_TC_MECHANISM=tc (what kernels before 6.6 get)."""
    monkeypatch.setenv("BPFPOLICY_TC_MECHANISM", mechanism)
    from bpfpolicy.controller.reconcile import Reconciler
    from bpfpolicy.controller.state import Store
    from bpfpolicy.controller.status import collect

    src = tmp_path / "src"
    _generic_artifact(src, veth, cgroup_dir, 0, 0, veth.ip4_b)
    res = Reconciler(ctl, [src], prebuilt=True).cycle()
    assert res.ok, [o.message for o in res.applied.outcomes]
    assert udp_received(veth) == 0  # tc ingress drops b
    assert _send_from_cgroup(cgroup_dir, veth) == 0  # cgroup egress drops
    entry = Store(ctl.state_dir).inventory()["NetworkPolicy/web"]
    row = collect(ctl)["policies"][0]
    assert row["condition"] == "Ready" and all(a["attached"] for a in row["attachments"])

    # a new program version: swapped in place (same cgroup link pin), verdicts follow
    _generic_artifact(src, veth, cgroup_dir, 1, 1, "192.0.2.1")
    res = Reconciler(ctl, [src], prebuilt=True).cycle()
    assert [o.action for o in res.applied.outcomes] == ["replace"]
    new = Store(ctl.state_dir).inventory()["NetworkPolicy/web"]
    assert new["programs"]["tc_filter"]["id"] != entry["programs"]["tc_filter"]["id"]
    assert new["attachments"][1]["link_pin"] == entry["attachments"][1]["link_pin"]
    assert new["attachments"][1]["link_id"] == entry["attachments"][1]["link_id"] is not None  # BPF_LINK_UPDATE
    assert udp_received(veth) > 0
    assert _send_from_cgroup(cgroup_dir, veth) == 3
    assert all(a["attached"] for a in collect(ctl)["policies"][0]["attachments"])
    from bpfpolicy.kernel import tc

    filters = tc.cls_query(veth.if_a, "ingress", veth.ns_a)
    if mechanism == "tc":  # replaced in place: still exactly one filter, now the new program
        assert [f["prog_id"] for f in filters] == [new["programs"]["tc_filter"]["id"]]
        assert new["attachments"][0]["tc"]["mechanism"] == "tc"
    elif tc.tcx_supported()[0]:
        assert filters == [] and new["attachments"][0]["tc"]["mechanism"] == "tcx"

    import shutil

    shutil.rmtree(src / "NetworkPolicy")
    assert Reconciler(ctl, [src], allow_empty=True, prebuilt=True).cycle().ok
    assert Store(ctl.state_dir).inventory() == {}
    assert tc.cls_query(veth.if_a, "ingress", veth.ns_a) == []
    assert tc.prog_query(veth.if_a, "ingress", veth.ns_a) == []
    from bpfpolicy.kernel import cgroup

    assert cgroup.query(str(cgroup_dir), "egress") == []
