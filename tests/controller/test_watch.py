"""`bpfpolicy watch` on real XDPBlocklist policies (compiled by the kind): debounced
bursts of writes, SIGHUP, SIGTERM leaving enforcement loaded, restart adoption, and a
git source with Flux-style revisions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BPFPOLICY, REPO, ping, run_cli

pytestmark = pytest.mark.kernel

POLICY = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: {name}}}
spec:
  interfaces: [{{name: {ifname}, netns: {netns}}}]
  deny:
    - name: listed
      sources: [{sources}]
"""


def _need_kind() -> None:
    from bpfpolicy.kinds import KINDS

    if "XDPBlocklist" not in KINDS:
        pytest.skip("XDPBlocklist kind not registered yet")


def _policy(veth, sources: list[str], name: str = "edge") -> str:  # noqa: ANN001
    return POLICY.format(name=name, ifname=veth.if_a, netns=veth.ns_a, sources=", ".join(sources))


def _wait(pred, timeout: float = 30.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _inventory(cfg) -> dict:  # noqa: ANN001
    from bpfpolicy.controller.state import Store

    return Store(cfg.state_dir).inventory()


def test_burst_of_1000_writes_is_debounced(ctl, veth, tmp_path: Path) -> None:
    _need_kind()
    from bpfpolicy.controller.watch import Watcher

    src = tmp_path / "src"
    src.mkdir()
    f = src / "edge.yaml"
    f.write_text(_policy(veth, ["192.0.2.1"]))
    ctl.interval = 3600
    w = Watcher(ctl, [src])
    t = threading.Thread(target=w.run)
    t.start()
    try:
        assert _wait(lambda: "XDPBlocklist/edge" in _inventory(ctl))
        start_cycles = w.cycles
        prog_id = _inventory(ctl)["XDPBlocklist/edge"]["programs"]["xdp_blocklist"]["id"]
        t0 = time.monotonic()
        for i in range(1000):  # 1,000 writes within about a second
            f.write_text(_policy(veth, [f"198.51.100.{i % 250}"]))
        final = _policy(veth, ["192.0.2.1", veth.ip4_b])
        f.write_text(final)
        burst = time.monotonic() - t0
        assert _wait(lambda: not ping(veth, 1), timeout=30)
        time.sleep(1.0)  # let any trailing cycle finish
        cycles = w.cycles - start_cycles
    finally:
        w.request_stop()
        t.join(timeout=30)
    # coalesced: one cycle per debounce window while writes keep coming, not one per write.
    # The bound is a count, not a timing (a loaded host stretches the burst over more
    # windows): 1,001 writes may cause at most 5% as many cycles.
    assert 1 <= cycles <= 50, f"{cycles} reconciles for 1,001 writes in {burst:.2f} s"
    # converged on the final content, by map delta (program never reloaded)
    assert _inventory(ctl)["XDPBlocklist/edge"]["programs"]["xdp_blocklist"]["id"] == prog_id
    assert run_cli(ctl, "plan", str(src)).returncode == 0


def test_sigterm_leaves_enforcement_and_restart_adopts(ctl, veth, tmp_path: Path) -> None:
    _need_kind()
    from bpfpolicy.kernel import xdp

    src = tmp_path / "src"
    src.mkdir()
    (src / "edge.yaml").write_text(_policy(veth, [veth.ip4_b]))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ctl.env, "BPFPOLICY_INTERVAL": "3600", "BPFPOLICY_METRICS_ADDR": f"127.0.0.1:{port}"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([*BPFPOLICY, "watch", str(src)], env=env, cwd=REPO, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    proc = start()
    try:
        assert _wait(lambda: "XDPBlocklist/edge" in _inventory(ctl))
        pid = xdp.query(veth.if_a, veth.ns_a).prog_id
        import urllib.request

        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'bpfpolicy_apply_total{action="create",result="success"} 1.0' in body
        assert "bpfpolicy_reconcile_duration_seconds_count" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert xdp.query(veth.if_a, veth.ns_a).prog_id == pid and not ping(veth)  # still enforcing

    proc = start()
    try:
        # the restarted controller adopts the pinned program: no reload
        assert _wait(lambda: any(e.get("reason") == "ControllerStarted" for e in _events(ctl)[-1:]))
        time.sleep(1.5)
        proc.send_signal(signal.SIGHUP)  # reconcile now
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "[SIGHUP]" in err and "no changes" in err
    assert xdp.query(veth.if_a, veth.ns_a).prog_id == pid
    applied = [e for e in _events(ctl) if e.get("reason") == "Applied"]
    assert len(applied) == 1  # only the first start loaded anything


def _events(cfg) -> list[dict]:  # noqa: ANN001
    from bpfpolicy.controller import events

    return events.read(cfg.events_path)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}).stdout.strip()


def test_git_source_revisions(ctl, veth, tmp_path: Path) -> None:
    _need_kind()
    from bpfpolicy.controller.config import GitSource
    from bpfpolicy.controller.reconcile import Reconciler
    from bpfpolicy.controller.status import collect

    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "policies" / "edge.yaml").write_text(_policy(veth, ["192.0.2.1"]))
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    sha1 = _git(repo, "rev-parse", "HEAD")
    ctl.git = GitSource(repo=str(repo), ref="main", poll_interval=1, path="policies")
    rec = Reconciler(ctl)
    res = rec.cycle()
    assert res.ok and res.revision == f"main@sha1:{sha1}"
    assert ping(veth)

    (repo / "policies" / "edge.yaml").write_text(_policy(veth, ["192.0.2.1", veth.ip4_b]))
    _git(repo, "commit", "-qam", "block b")
    sha2 = _git(repo, "rev-parse", "HEAD")
    res = rec.cycle()
    assert res.ok and res.revision == f"main@sha1:{sha2}"
    assert [o.action for o in res.applied.outcomes] == ["update-map"]
    assert not ping(veth)
    st = collect(ctl)
    assert st["source"]["last_applied_revision"] == f"main@sha1:{sha2}"
    assert st["source"]["history"][:2] == [f"main@sha1:{sha2}", f"main@sha1:{sha1}"]
    assert st["policies"][0]["revision"] == f"main@sha1:{sha2}"

    # a broken commit: build fails, nothing changes, attempted != applied
    (repo / "policies" / "edge.yaml").write_text("apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {name: edge}\nspec: {deny: 3}\n")
    _git(repo, "commit", "-qam", "oops")
    sha3 = _git(repo, "rev-parse", "HEAD")
    res = rec.cycle()
    assert res.error and "build failed" in res.error
    st = json.loads(run_cli(ctl, "status", "--format", "json").stdout)
    assert st["source"]["condition"] == "Stalled" and st["source"]["reason"] == "BuildFailed"
    assert st["source"]["last_attempted_revision"] == f"main@sha1:{sha3}"
    assert st["source"]["last_applied_revision"] == f"main@sha1:{sha2}"
    assert not ping(veth)
