"""The reconcile loop on the real kernel: converge, map deltas without reload, verifier
rejection keeps the old version, drift repair, prune safety, plan exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import helpers.controller_artifacts as artifacts
from conftest import ping, run_cli

pytestmark = pytest.mark.kernel


def _cycle(cfg, path: Path, **kw):  # noqa: ANN001, ANN202
    from bpfpolicy.controller.reconcile import Reconciler

    return Reconciler(cfg, [path], prebuilt=True, **kw).cycle()  # hand-built artifact trees


def _xdp_id(pair) -> int | None:  # noqa: ANN001
    from bpfpolicy.kernel import xdp

    return xdp.query(pair.if_a, pair.ns_a).prog_id


def _inv(cfg) -> dict:  # noqa: ANN001
    from bpfpolicy.controller.state import Store

    return Store(cfg.state_dir).inventory()


def _src(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    return d


def test_add_modify_remove_converge(ctl, veth, tmp_path: Path) -> None:
    src = _src(tmp_path, "src")
    artifacts.write(src, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    assert ping(veth)  # nothing attached yet
    res = _cycle(ctl, src)
    assert res.ok and [o.action for o in res.applied.outcomes] == ["create"]
    pid = _xdp_id(veth)
    assert pid == _inv(ctl)["XDPBlocklist/edge"]["programs"]["xdp_blocklist"]["id"]
    assert not ping(veth)  # b's source address is denied
    # counters: the dropped echo requests were counted for rule 0
    from bpfpolicy.controller.status import collect

    rows = collect(ctl)["policies"]
    assert rows[0]["condition"] == "Ready" and rows[0]["counters"][0]["packets"] >= 1

    # a blocklist change is a map delta: same program id, b allowed again
    artifacts.write(src, "edge", ["192.0.2.1"], interface=veth.if_a, netns=veth.ns_a)
    res = _cycle(ctl, src)
    assert [o.action for o in res.applied.outcomes] == ["update-map"]
    assert "+1/−1" in res.applied.outcomes[0].message
    assert _xdp_id(veth) == pid
    assert ping(veth, 2)

    # a restarted controller (fresh process state) adopts the pins: no-op, same program
    res = _cycle(ctl, src)
    assert res.ok and res.applied.outcomes == [] and _xdp_id(veth) == pid

    # remove: refused to prune down to empty without allow_empty, then pruned
    shutil.rmtree(src / "XDPBlocklist")
    res = _cycle(ctl, src)
    assert res.error and "--allow-empty" in res.error and _xdp_id(veth) == pid
    res = _cycle(ctl, src, allow_empty=True)
    assert res.ok and [o.action for o in res.applied.outcomes] == ["prune"]
    assert _xdp_id(veth) is None
    assert not (ctl.bpffs_root / "XDPBlocklist" / "edge").exists()
    assert _inv(ctl) == {}


def test_verifier_rejection_keeps_previous_version(ctl, veth, tmp_path: Path) -> None:
    good, bad = _src(tmp_path, "good"), _src(tmp_path, "bad")
    artifacts.write(good, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    artifacts.write(bad, "edge", ["192.0.2.1"], interface=veth.if_a, netns=veth.ns_a, broken=True)
    assert run_cli(ctl, "apply", "--prebuilt", str(good)).returncode == 0
    pid = _xdp_id(veth)
    proc = run_cli(ctl, "apply", "--prebuilt", str(bad))
    assert proc.returncode == 1
    assert "outside of the packet" in proc.stdout
    assert _xdp_id(veth) == pid and not ping(veth)  # old version still enforcing
    st = json.loads(run_cli(ctl, "status", "--format", "json").stdout)
    row = st["policies"][0]
    assert row["condition"] == "Stalled" and row["reason"] == "VerifierFailed"
    assert "outside of the packet" in row["message"] and "invalid access to packet" in row["log"]
    assert row["last_applied_revision"] != row["last_attempted_revision"]
    evs = [json.loads(x) for x in run_cli(ctl, "events").stdout.splitlines()]
    assert any(e["reason"] == "VerifierFailed" and e["type"] == "Warning" for e in evs)
    # the watch loop does not retry the same broken digest every cycle (no event storm)
    from bpfpolicy.controller.reconcile import Reconciler

    res = Reconciler(ctl, [bad], prebuilt=True).cycle(retry_failed=False)
    assert res.applied.outcomes == []
    evs2 = [json.loads(x) for x in run_cli(ctl, "events").stdout.splitlines()]
    assert sum(e["reason"] == "VerifierFailed" for e in evs2) == 1
    st = json.loads(run_cli(ctl, "status", "--format", "json").stdout)
    assert st["policies"][0]["condition"] == "Stalled" and st["source"]["condition"] == "Stalled"
    # nothing of the rejected version is left behind
    assert sorted(p.name for p in (ctl.bpffs_root / "XDPBlocklist" / "edge").iterdir()) == [
        "map_deny_v4", "map_rule_stats", "prog_xdp_blocklist"]
    assert not (ctl.bpffs_root / "_staging").exists() or not any((ctl.bpffs_root / "_staging").iterdir())
    # a revert (git revert) makes it Ready again without touching the kernel
    res = _cycle(ctl, good)
    assert res.ok and res.applied.outcomes == [] and _xdp_id(veth) == pid
    st = json.loads(run_cli(ctl, "status", "--format", "json").stdout)
    assert st["policies"][0]["condition"] == "Ready" and st["source"]["condition"] == "Ready"


def test_plan_exit_codes(ctl, veth, tmp_path: Path) -> None:
    src = _src(tmp_path, "src")
    artifacts.write(src, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    proc = run_cli(ctl, "plan", "--prebuilt", str(src))
    assert proc.returncode == 1 and "create" in proc.stdout
    assert run_cli(ctl, "apply", "--prebuilt", str(src)).returncode == 0
    proc = run_cli(ctl, "plan", "--prebuilt", str(src), "--format", "json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["changes"] is False
    artifacts.write(src, "edge", [veth.ip4_b, "192.0.2.7"], interface=veth.if_a, netns=veth.ns_a)
    proc = run_cli(ctl, "plan", "--prebuilt", str(src))
    assert proc.returncode == 1 and "+1/−0" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklistt\nmetadata: {name: x}\nspec: {}\n")
    proc = run_cli(ctl, "plan", str(bad))
    assert proc.returncode == 2 and "bad.yaml:2:1: kind: unknown kind" in proc.stderr
    assert run_cli(ctl, "plan", str(tmp_path / "missing")).returncode == 2


def test_drift_detected_repaired_and_reported(ctl, veth, tmp_path: Path) -> None:
    src = _src(tmp_path, "src")
    artifacts.write(src, "edge", [veth.ip4_b, "192.0.2.9"], interface=veth.if_a, netns=veth.ns_a)
    assert _cycle(ctl, src).ok
    pid = _xdp_id(veth)

    # 1. XDP detached behind our back
    subprocess.run(["ip", "-n", veth.ns_a, "link", "set", "dev", veth.if_a, "xdpgeneric", "off"], check=True)
    assert _xdp_id(veth) is None and ping(veth)
    from bpfpolicy.controller.status import collect

    row = collect(ctl)["policies"][0]
    assert row["condition"] == "Reconciling" and row["reason"] == "DriftDetected"
    res = _cycle(ctl, src)
    assert [(o.action, o.drift) for o in res.applied.outcomes] == [("reattach", True)]
    assert _xdp_id(veth) == pid and not ping(veth)

    # 2. a map entry edited: b's address removed from the blocklist
    from bpfpolicy.kernel import bpf

    fd = bpf.obj_get(str(ctl.bpffs_root / "XDPBlocklist/edge/map_deny_v4"))
    import ipaddress

    bpf.map_delete(fd, ipaddress.IPv4Address(veth.ip4_b).packed)
    bpf.map_update(fd, ipaddress.IPv4Address("198.51.100.1").packed, b"\0\0\0\0")
    assert ping(veth)
    res = _cycle(ctl, src)
    assert [(o.action, o.drift) for o in res.applied.outcomes] == [("update-map", True)]
    assert "+1/−1" in res.applied.outcomes[0].message
    assert bpf.map_lookup(fd, ipaddress.IPv4Address("198.51.100.1").packed, 4) is None
    import os

    os.close(fd)
    assert _xdp_id(veth) == pid and not ping(veth)

    # 3. a pin deleted: reloaded and swapped in, pins restored
    (ctl.bpffs_root / "XDPBlocklist/edge/prog_xdp_blocklist").unlink()
    res = _cycle(ctl, src)
    assert [(o.action, o.drift) for o in res.applied.outcomes] == [("replace", True)]
    assert (ctl.bpffs_root / "XDPBlocklist/edge/prog_xdp_blocklist").exists()
    assert _xdp_id(veth) == _inv(ctl)["XDPBlocklist/edge"]["programs"]["xdp_blocklist"]["id"]
    assert not ping(veth)

    from bpfpolicy.controller import events

    reasons = [e["reason"] for e in events.read(ctl.events_path)]
    assert reasons.count("DriftRepaired") == 3
    row = collect(ctl)["policies"][0]
    assert row["condition"] == "Ready" and row["last_drift"]["detail"]


def test_self_heal_off_and_suspend(ctl, veth, tmp_path: Path) -> None:
    src = _src(tmp_path, "src")
    artifacts.write(src, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    assert _cycle(ctl, src).ok
    subprocess.run(["ip", "-n", veth.ns_a, "link", "set", "dev", veth.if_a, "xdpgeneric", "off"], check=True)
    ctl.self_heal = False
    res = _cycle(ctl, src)
    assert res.applied.outcomes == [] and _xdp_id(veth) is None  # reported, not repaired
    from bpfpolicy.controller.status import collect

    assert collect(ctl)["policies"][0]["reason"] == "DriftDetected"
    ctl.self_heal = True
    assert run_cli(ctl, "suspend").returncode == 0
    ctl.suspend = False
    res = _cycle(ctl, src)
    assert res.skipped == "suspended" and _xdp_id(veth) is None
    assert run_cli(ctl, "resume").returncode == 0
    res = _cycle(ctl, src)
    assert res.ok and _xdp_id(veth) is not None


def test_seccomp_artifact_installed_atomically(ctl, tmp_path: Path) -> None:
    src = _src(tmp_path, "src")
    artifacts.write_seccomp(src, "web")
    res = _cycle(ctl, src)
    assert res.ok and [o.action for o in res.applied.outcomes] == ["create"]
    installed = ctl.state_dir / "seccomp" / "web" / "filter.bin"
    assert installed.read_bytes() == (src / "SeccompProfile/web/filter.bin").read_bytes()
    installed.write_bytes(b"tampered")
    res = _cycle(ctl, src)
    assert [(o.action, o.drift) for o in res.applied.outcomes] == [("replace", True)]
    assert installed.read_bytes() == (src / "SeccompProfile/web/filter.bin").read_bytes()
    shutil.rmtree(src / "SeccompProfile")
    assert _cycle(ctl, src, allow_empty=True).ok
    assert not installed.parent.exists()


def test_destroy_events_and_metrics(ctl, veth, tmp_path: Path) -> None:
    from bpfpolicy.controller import metrics

    src = _src(tmp_path, "src")
    artifacts.write(src, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    before = metrics.REGISTRY.get_sample_value("bpfpolicy_apply_total", {"action": "create", "result": "success"}) or 0
    assert _cycle(ctl, src).ok
    after = metrics.REGISTRY.get_sample_value("bpfpolicy_apply_total", {"action": "create", "result": "success"})
    assert after == before + 1
    assert metrics.REGISTRY.get_sample_value("bpfpolicy_map_entries", {"policy": "XDPBlocklist/edge", "map": "deny_v4"}) == 1
    assert (metrics.REGISTRY.get_sample_value("bpfpolicy_policies", {"condition": "Ready"}) or 0) >= 1
    assert not ping(veth)
    assert _cycle(ctl, src).ok  # a deep no-op cycle refreshes per-rule counters
    rule = f"deny-{veth.ip4_b}"
    assert metrics.REGISTRY.get_sample_value("bpfpolicy_rule_packets_total",
                                             {"kind": "XDPBlocklist", "policy": "XDPBlocklist/edge", "rule": rule}) >= 1
    assert _xdp_id(veth) is not None
    proc = run_cli(ctl, "destroy", "--yes")
    assert proc.returncode == 0 and "removed XDPBlocklist/edge" in proc.stdout
    assert _xdp_id(veth) is None and ping(veth)
    assert not ctl.bpffs_root.exists() or not any(ctl.bpffs_root.iterdir())
    assert _inv(ctl) == {}
    evs = [json.loads(x) for x in run_cli(ctl, "events", "--policy", "XDPBlocklist/edge").stdout.splitlines()]
    assert [e["reason"] for e in evs] == ["Applied", "Pruned"]


def test_runtime_maps_survive_program_replacement(ctl, veth, tmp_path: Path) -> None:
    """Counters (a map without `contents`) are reused by pin when a new program version
    is loaded; content maps are fresh."""
    src = _src(tmp_path, "src")
    artifacts.write(src, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    assert _cycle(ctl, src).ok
    assert not ping(veth)
    from bpfpolicy.controller.status import collect

    before = collect(ctl)["policies"][0]["counters"][0]["packets"]
    old = _inv(ctl)["XDPBlocklist/edge"]
    artifacts.write(src, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a, variant=3)
    res = _cycle(ctl, src)
    assert [o.action for o in res.applied.outcomes] == ["replace"]
    new = _inv(ctl)["XDPBlocklist/edge"]
    assert new["programs"]["xdp_blocklist"]["id"] != old["programs"]["xdp_blocklist"]["id"]
    assert new["maps"]["rule_stats"]["id"] == old["maps"]["rule_stats"]["id"]
    assert new["maps"]["deny_v4"]["id"] != old["maps"]["deny_v4"]["id"]
    assert before >= 1 and collect(ctl)["policies"][0]["counters"][0]["packets"] >= before
    assert not ping(veth)
    assert collect(ctl)["policies"][0]["counters"][0]["packets"] > before


def test_lost_inventory_adopts_pinned_objects(ctl, veth, tmp_path: Path) -> None:
    """State dir wiped (bpfman #1563-style): the pins and the attachment are adopted
    (reload + compare-and-swap against the pinned program), nothing leaks or detaches."""
    src = _src(tmp_path, "src")
    artifacts.write(src, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    assert _cycle(ctl, src).ok
    (ctl.state_dir / "inventory.json").unlink()
    res = _cycle(ctl, src)
    assert [(o.action, o.drift, o.ok) for o in res.applied.outcomes] == [("replace", True, True)]
    assert _xdp_id(veth) == _inv(ctl)["XDPBlocklist/edge"]["programs"]["xdp_blocklist"]["id"]
    assert not ping(veth)
    assert _cycle(ctl, src).applied.outcomes == []


def test_real_seccomp_profile_installed_for_exec(ctl, tmp_path: Path) -> None:
    """The repo's example SeccompProfile goes through compile → controller install →
    `bpfpolicy exec --seccomp NAME` (which looks it up in the state dir)."""
    from bpfpolicy.kinds import KINDS

    from conftest import REPO

    if "SeccompProfile" not in KINDS or not (REPO / "policies" / "seccomp").is_dir():
        pytest.skip("SeccompProfile kind or policies/seccomp not present")
    src = REPO / "policies" / "seccomp"
    proc = run_cli(ctl, "apply", str(src))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = [p.name for p in (ctl.state_dir / "seccomp").iterdir() if not p.name.startswith(".")]
    assert names and all((ctl.state_dir / "seccomp" / n / "filter.bin").stat().st_size % 8 == 0 for n in names)
    assert run_cli(ctl, "exec", "--seccomp", names[0], "--", "/bin/true").returncode == 0
    assert run_cli(ctl, "plan", str(src)).returncode == 0


def test_revision_stamped_into_program_metadata(ctl, veth, tmp_path: Path) -> None:
    from bpfpolicy.kernel import bpftool

    src = _src(tmp_path, "src")
    artifacts.write(src, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    res = _cycle(ctl, src)
    assert res.ok
    pid = _inv(ctl)["XDPBlocklist/edge"]["programs"]["xdp_blocklist"]["id"]
    meta = bpftool.run("prog", "show", "id", str(pid))["metadata"]
    assert meta["bpfpolicy_revision"] == res.revision and meta["bpfpolicy_policy"] == "XDPBlocklist/edge"


def test_one_failing_policy_does_not_block_others(ctl, veth, tmp_path: Path) -> None:
    src = _src(tmp_path, "src")
    artifacts.write(src, "good", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    artifacts.write(src, "bad", ["192.0.2.1"], interface=None, netns=None, broken=True)
    proc = run_cli(ctl, "apply", "--prebuilt", str(src), "--format", "json")
    assert proc.returncode == 1
    out = {o["policy"]: o for o in json.loads(proc.stdout)["outcomes"]}
    assert out["XDPBlocklist/good"]["ok"] and not out["XDPBlocklist/bad"]["ok"]
    assert out["XDPBlocklist/bad"]["reason"] == "VerifierFailed"
    assert not ping(veth)
    st = {p["policy"]: p for p in json.loads(run_cli(ctl, "status", "--format", "json").stdout)["policies"]}
    assert st["XDPBlocklist/good"]["condition"] == "Ready" and st["XDPBlocklist/bad"]["condition"] == "Stalled"
    assert not (ctl.bpffs_root / "XDPBlocklist" / "bad").exists()


def test_foreign_xdp_program_is_not_replaced(ctl, veth, tmp_path: Path) -> None:
    """An interface already running someone else's XDP program: bpfpolicy refuses
    (Stalled / AttachConflict) instead of clobbering it."""
    from bpfpolicy.codegen.build import build_bpf

    obj = tmp_path / "foreign.o"
    obj.write_bytes(build_bpf('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                              'SEC("xdp") int foreign(struct xdp_md *c) { return XDP_PASS; }\n'
                              'char LICENSE[] SEC("license") = "GPL";\n', name="foreign").object)
    subprocess.run(["ip", "-n", veth.ns_a, "link", "set", "dev", veth.if_a, "xdpgeneric", "obj", str(obj),
                    "sec", "xdp"], check=True)
    foreign = _xdp_id(veth)
    src = _src(tmp_path, "src")
    artifacts.write(src, "edge", [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    res = _cycle(ctl, src)
    assert not res.ok and res.applied.outcomes[0].reason == "AttachConflict"
    assert f"runs XDP program {foreign}" in res.applied.outcomes[0].message
    assert _xdp_id(veth) == foreign and ping(veth)
    assert not (ctl.bpffs_root / "XDPBlocklist" / "edge").exists()
    subprocess.run(["ip", "-n", veth.ns_a, "link", "set", "dev", veth.if_a, "xdpgeneric", "off"], check=True)
