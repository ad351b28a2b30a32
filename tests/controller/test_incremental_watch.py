"""Issue #15 through a real `bpfpolicy watch` loop (Watcher in a thread, real pins): a
one-line change to a 20k-line `sourceFiles` list lands in the pinned maps by patch —
a packet from the new source is dropped by the pinned program under BPF_PROG_TEST_RUN,
the program is never replaced — and after a mid-file edit, a deleted line, a truncated
file and a file replaced by rename the kernel's content maps hold exactly what a
from-scratch `bpfpolicy compile` in a fresh process produces. Truncation takes the full
lowering and the watch log says so. A NetworkPolicy CIDR added by a file-triggered
cycle ends up in maps only (update-map, same program)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BPFPOLICY, REPO

pytestmark = pytest.mark.kernel

POLICY = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: edge}}
spec:
  interfaces: [{{name: {ifname}, netns: {netns}}}]
  mode: generic
  deny:
    - name: listed
      sourceFiles: [list.txt]
"""
XDP_DROP, XDP_PASS = 1, 2


def _verdict(pin: Path, src: str) -> int | None:
    from bpfpolicy.kernel import bpf
    from bpfpolicy.kinds.xdp.packets import packet

    try:
        fd = bpf.obj_get(str(pin))
    except OSError:
        return None
    try:
        return bpf.prog_test_run(fd, packet(src, 17, 53)).retval
    finally:
        os.close(fd)


def _wait(pred, timeout: float = 60.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _inventory(cfg) -> dict:  # noqa: ANN001
    from bpfpolicy.controller.state import Store

    return Store(cfg.state_dir).inventory()


def _kernel_matches_full_compile(cfg, src: Path, out: Path) -> None:  # noqa: ANN001
    """Every content map behind the pins equals a from-scratch compile (fresh process)."""
    from bpfpolicy.controller.plan import _drop_zero_slots, read_map

    proc = subprocess.run([*BPFPOLICY, "compile", str(src), "--out", str(out)], env=cfg.env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    art = out / "XDPBlocklist" / "edge"
    manifest = json.loads((art / "manifest.json").read_text())
    pins = _inventory(cfg)["XDPBlocklist/edge"]["maps"]
    checked = 0
    for spec in manifest["maps"]:
        if not spec.get("contents"):
            continue
        want = _drop_zero_slots((art / spec["contents"]).read_bytes(), spec)
        got = read_map(pins[spec["name"]]["pin"], spec)
        assert got == want, f"{spec['name']}: kernel differs from a full compile"
        checked += 1
    assert checked >= 3


def test_list_edits_land_like_a_full_compile(ctl, veth, tmp_path: Path) -> None:
    from bpfpolicy.controller.watch import Watcher

    rng = random.Random(15)
    lines = [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in rng.sample(range(1 << 22), 20000)]
    src = tmp_path / "src"
    src.mkdir()
    listf = src / "list.txt"
    listf.write_text("\n".join(lines) + "\n")
    (src / "edge.yaml").write_text(POLICY.format(ifname=veth.if_a, netns=veth.ns_a))
    ctl.interval = 3600
    logs: list[str] = []
    w = Watcher(ctl, [src], log=logs.append)
    t = threading.Thread(target=w.run)
    t.start()
    pin = Path(ctl.bpffs_root) / "XDPBlocklist/edge/prog_xdp_blocklist"
    try:
        assert _wait(lambda: _verdict(pin, lines[0]) == XDP_DROP), logs
        assert _wait(lambda: "XDPBlocklist/edge" in _inventory(ctl)), logs  # the startup cycle is recorded
        assert _verdict(pin, "198.51.100.7") == XDP_PASS
        prog_id = _inventory(ctl)["XDPBlocklist/edge"]["programs"]["xdp_blocklist"]["id"]

        def replace(new: list[str]) -> None:
            tmp = src / ".list.txt.swp"
            tmp.write_text("\n".join(new) + "\n")
            os.replace(tmp, listf)  # a new inode, as editors and `git checkout` do

        cut = lines[:-100]  # a truncated file: more than a patch, same map sizes (no reload)
        steps = [  # (what, new lines, how written, probe source, verdict, fast path?)
            ("mid-file edit", [*lines[:10000], "198.51.100.7", *lines[10001:]], None, "198.51.100.7", XDP_DROP, True),
            ("deleted line", [*lines[:10000], *lines[10001:]], None, "198.51.100.7", XDP_PASS, True),
            ("truncated file", cut, None, lines[-1], XDP_PASS, False),
            ("replaced file", [*cut, "198.51.100.9"], replace, "198.51.100.9", XDP_DROP, True),
        ]
        for i, (what, new, how, probe, want, fast) in enumerate(steps):
            n = len(logs)
            (how or (lambda ls: listf.write_text("\n".join(ls) + "\n")))(new)
            assert _wait(lambda p=probe, v=want: _verdict(pin, p) == v), (what, logs[n:])  # noqa: B023
            assert _wait(lambda: any(x.startswith("[file]") for x in logs[n:])), (what, logs[n:])  # noqa: B023
            cycle = [x for x in logs[n:] if x.startswith("[file]") or x.startswith("  ")]
            assert any("XDPBlocklist/edge update-map ok" in x for x in cycle), (what, cycle)
            slow = [x for x in cycle if "full lowering" in x or "full diff" in x]
            if fast:
                assert not slow, (what, cycle)
            else:
                assert any("full lowering" in x for x in slow), (what, cycle)  # it says why
            _kernel_matches_full_compile(ctl, src, tmp_path / f"full{i}")
        assert _inventory(ctl)["XDPBlocklist/edge"]["programs"]["xdp_blocklist"]["id"] == prog_id
    finally:
        w.request_stop()
        t.join(timeout=60)


NETPOL = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: web}}
spec:
  endpointSelector: {{matchLabels: {{app: inc}}}}
  ingress:
    - fromCIDR: [{cidrs}]
"""


def test_a_cidr_added_to_a_network_policy_goes_into_maps_only(ctl, veth, tmp_path: Path) -> None:
    from bpfpolicy.controller.reconcile import Reconciler
    from bpfpolicy.kernel import bpf
    from bpfpolicy.kinds.netpol.packets import frame

    cfg_file = Path(ctl.env["BPFPOLICY_CONFIG"])
    cfg_file.write_text(cfg_file.read_text() + f"endpoints:\n  - name: inc\n    labels: {{app: inc}}\n"
                        f"    interfaces: [{{name: {veth.if_a}, netns: {veth.ns_a}}}]\n"
                        f"    addresses: [{veth.ip4_a}]\n")
    from bpfpolicy.controller.config import load_config

    cfg = load_config(env=ctl.env)
    cidrs = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(200)]
    src = tmp_path / "pol"
    src.mkdir()
    f = src / "web.yaml"
    f.write_text(NETPOL.format(cidrs=", ".join(cidrs)))
    rec = Reconciler(cfg, [src])
    first = rec.cycle()
    assert first.ok, first.error
    pin = Path(cfg.bpffs_root) / "NetworkPolicy/inc/prog_netpol_tc_ingress"
    pkt = frame("198.51.100.5", veth.ip4_a, 17, 4444, 53)

    def verdict() -> int:
        fd = bpf.obj_get(str(pin))
        try:
            return bpf.prog_test_run(fd, pkt).retval
        finally:
            os.close(fd)

    assert verdict() == 2  # TC_ACT_SHOT: ingress default deny
    ids = {p: e["id"] for p, e in _inventory(cfg)["NetworkPolicy/inc"]["programs"].items()}
    f.write_text(NETPOL.format(cidrs=", ".join([*cidrs, "198.51.100.5/32"])))
    res = rec.cycle(deep=False)  # what a file event runs
    assert res.ok, res.error
    assert [(o.key, o.action) for o in res.applied.outcomes] == [("NetworkPolicy/inc", "update-map")]
    assert verdict() == 0  # TC_ACT_OK: the new peer is allowed
    assert {p: e["id"] for p, e in _inventory(cfg)["NetworkPolicy/inc"]["programs"].items()} == ids
