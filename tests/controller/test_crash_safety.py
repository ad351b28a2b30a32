"""Atomic replacement and crash safety on the real kernel.

* Program replacement under a continuous packet stream: a source address that both
  versions deny never gets through, while allowed traffic keeps flowing.
* `kill -9` of `bpfpolicy apply` at random points, 20 trials: the previous (or the new)
  version is always enforcing, a restart converges, and no programs, maps or pins leak.
"""

from __future__ import annotations

import random
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import helpers.controller_artifacts as artifacts
from conftest import BPFPOLICY, REPO, run_cli, udp_received

pytestmark = pytest.mark.kernel


def _addr(pair, last: int) -> str:  # noqa: ANN001
    return f"10.{pair.subnet[0]}.{pair.subnet[1]}.{last}"


def _add_sources(pair, *lasts: int) -> None:  # noqa: ANN001
    for last in lasts:
        subprocess.run(["ip", "-n", pair.ns_b, "addr", "add", f"{_addr(pair, last)}/24", "dev", pair.if_b],
                       check=True)


def test_replacement_under_packet_stream(ctl, veth, tmp_path: Path) -> None:
    from bpfpolicy.controller.reconcile import Reconciler
    from bpfpolicy.kernel import xdp
    from bpfpolicy.kernel.netns import socket_in_netns

    _add_sources(veth, 10, 11, 12, 13)
    both, allowed = _addr(veth, 10), _addr(veth, 11)
    versions = []
    for v in range(2):
        d = tmp_path / f"v{v}"
        artifacts.write(d, "edge", [both, _addr(veth, 12 + v)], interface=veth.if_a, netns=veth.ns_a, variant=v)
        versions.append(d)
    assert Reconciler(ctl, [versions[0]], prebuilt=True).cycle().ok
    assert udp_received(veth, 3, src=allowed) > 0  # ARP warm, path open

    rx = socket_in_netns(veth.ns_a, socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((veth.ip4_a, 0))
    rx.settimeout(0.2)
    txs = {}
    for src in (both, allowed):
        txs[src] = socket_in_netns(veth.ns_b, socket.AF_INET, socket.SOCK_DGRAM)
        txs[src].bind((src, 0))
    stop, got, sent = threading.Event(), {both: 0, allowed: 0}, [0]

    def send() -> None:
        while not stop.is_set():
            for s in txs.values():
                s.sendto(b"x", rx.getsockname())
            sent[0] += 1
            time.sleep(0.0005)

    def recv() -> None:
        while not stop.is_set():
            try:
                _, (src, _port) = rx.recvfrom(16)
            except TimeoutError:
                continue
            got[src] = got.get(src, 0) + 1

    threads = [threading.Thread(target=send), threading.Thread(target=recv)]
    for t in threads:
        t.start()
    ids = []
    try:
        for i in range(10):
            res = Reconciler(ctl, [versions[(i + 1) % 2]], prebuilt=True).cycle()
            assert res.ok and [o.action for o in res.applied.outcomes] == ["replace"]
            ids.append(xdp.query(veth.if_a, veth.ns_a).prog_id)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        rx.close()
        for s in txs.values():
            s.close()
    assert len(set(ids)) == 10  # ten real program replacements
    assert sent[0] > 100 and got[allowed] > 50  # the stream kept flowing
    assert got[both] == 0  # never a window without a program that denies it


def _our_progs(name: str) -> list[dict]:
    from bpfpolicy.kernel import bpftool

    return [p for p in bpftool.prog_show()
            if (p.get("metadata") or {}).get("bpfpolicy_policy") == f"XDPBlocklist/{name}"]


def _leaked_maps(base_id: int) -> set[int]:
    """Maps named like ours, created during the test, that no live program uses."""
    from bpfpolicy.kernel import bpftool

    used = {m for p in bpftool.prog_show() for m in p.get("map_ids", [])}
    return {m["id"] for m in bpftool.map_show()
            if m.get("name") in ("deny_v4", "rule_stats") and m["id"] > base_id} - used


def test_kill9_during_apply_20_trials(ctl, veth, tmp_path: Path) -> None:
    """Trials 0-5 die at each named stage (BPFPOLICY_CRASH_AT: after the verifier load,
    after filling maps, with pins staged, right after the swap, after the pin rename,
    half-way through a map delta); trials 6-19 are killed after a random delay."""
    from bpfpolicy.controller.apply import CRASH_STAGES
    from bpfpolicy.kernel import bpf, xdp

    name = f"crash-{secrets.token_hex(3)}"
    base_map = max(bpf.map_ids() or [0])
    dirs = []
    # v0 -> v1 replaces the program; v1 -> v2 is a map delta. All deny b.
    for v, (variant, extra) in enumerate([(0, ["192.0.2.1"]), (1, ["192.0.2.2"]),
                                          (1, [f"198.51.100.{i}" for i in range(1, 200)])]):
        d = tmp_path / f"v{v}"
        artifacts.write(d, name, [veth.ip4_b, *extra], interface=veth.if_a, netns=veth.ns_a, variant=variant)
        dirs.append(d)
    assert run_cli(ctl, "apply", "--prebuilt", str(dirs[0])).returncode == 0
    current = 0
    rng = random.Random(1234)
    killed = 0
    for trial in range(20):
        env = dict(ctl.env)
        stage = CRASH_STAGES[trial] if trial < len(CRASH_STAGES) else None
        if stage == "map-delta":
            if current != 1:
                assert run_cli(ctl, "apply", "--prebuilt", str(dirs[1])).returncode == 0
            target = 2
        else:
            target = 1 if current == 0 else 0
        if stage:
            env["BPFPOLICY_CRASH_AT"] = stage
        proc = subprocess.Popen([*BPFPOLICY, "apply", "--prebuilt", str(dirs[target])], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not stage:
            time.sleep(rng.uniform(0.05, 0.6))
            if proc.poll() is None:
                proc.kill()
        if proc.wait() == -9:
            killed += 1
        # whatever happened, a bpfpolicy program is enforcing and b is denied
        assert xdp.query(veth.if_a, veth.ns_a).prog_id is not None, f"trial {trial}: XDP gone"
        assert udp_received(veth, 2, wait=0.3) == 0, f"trial {trial} ({stage}): b got through"
        # a restart converges
        done = run_cli(ctl, "apply", "--prebuilt", str(dirs[target]))
        assert done.returncode == 0, done.stdout + done.stderr
        assert run_cli(ctl, "plan", "--prebuilt", str(dirs[target])).returncode == 0
        current = target
    assert killed >= len(CRASH_STAGES) + 3  # every staged crash, and some random ones
    pdir = ctl.bpffs_root / "XDPBlocklist" / name
    assert sorted(p.name for p in pdir.iterdir()) == ["map_deny_v4", "map_rule_stats", "prog_xdp_blocklist"]
    assert not (ctl.bpffs_root / "_staging").exists()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # freeing is RCU-deferred
        progs, leaked = _our_progs(name), _leaked_maps(base_map)
        if len(progs) == 1 and not leaked:
            break
        time.sleep(0.2)
    assert [p["id"] for p in progs] == [xdp.query(veth.if_a, veth.ns_a).prog_id]
    assert leaked == set()
