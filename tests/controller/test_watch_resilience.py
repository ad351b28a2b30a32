"""A real `bpfpolicy watch` process fed every kind of bad input in turn: it keeps running,
reports the source Stalled with a message naming the file, leaves the applied program
attached and dropping, and is Ready again on the first cycle after the fix."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BPFPOLICY, REPO, ping

pytestmark = pytest.mark.kernel

GOOD = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: edge}}
spec:
  interfaces: [{{name: {ifname}, netns: {netns}}}]
  deny:
    - name: listed
      sources: [{source}]
"""
# bad policies name b's side of the pair: should one ever compile, it stays in our netns
HEAD = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: bad, labels: &r {{app: x}}}}
spec:
  interfaces: [{{name: {ifname}, netns: {netns}}}]
"""
RULE = HEAD + "  deny:\n    - name: r\n      sources: [192.0.2.9]\n      protocols: [tcp]\n      ports: [%s]\n"


def _bomb() -> str:
    lines = ["  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return HEAD.replace("spec:\n", "spec:\n" + "\n".join(lines) + "\n")


# (case, how the bad input is made, content, source reason, text the message must name)
CASES = [
    ("port with 5000 digits", "file", RULE % ("9" * 5000), "BuildFailed", "bad.yaml"),
    ("directory symlink loop", "loop", None, "BuildFailed", "loop"),
    ("YAML alias bomb, 9 levels of 9", "file", _bomb(), "BuildFailed", "bad.yaml"),
    ("!!int 1e5", "file", RULE % "!!int 1e5", "BuildFailed", "bad.yaml"),
    ("!!timestamp foo", "file", HEAD + "  deny:\n    - name: !!timestamp foo\n      sources: [192.0.2.9]\n",
     "BuildFailed", "bad.yaml"),
    ("merge key list then explicit key", "file",
     HEAD + "  deny:\n    - <<: [*r, {x: 1}]\n      name: r\n      sources: [192.0.2.9]\n", "BuildFailed", "bad.yaml"),
    ("invalid YAML", "file", HEAD + "  deny: [ {name: r, sources: [\n", "BuildFailed", "bad.yaml"),
    ("FIFO named like a policy", "fifo", None, "BuildFailed", "pipe.yaml"),
]


def _need_kind() -> None:
    from bpfpolicy.kinds import KINDS

    if "XDPBlocklist" not in KINDS:
        pytest.skip("XDPBlocklist kind not registered yet")


def _wait(pred, timeout: float = 60.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _source(cfg) -> dict:  # noqa: ANN001
    from bpfpolicy.controller.state import Store

    return Store(cfg.state_dir).status().get("source", {})


def _status(env: dict[str, str]) -> dict:
    proc = subprocess.run([*BPFPOLICY, "status", "--format", "json"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _xdp_id(pair) -> int | None:  # noqa: ANN001
    from bpfpolicy.kernel import xdp

    return xdp.query(pair.if_a, pair.ns_a).prog_id


def _inject(how: str, content: str | None, src: Path, arts: Path, stage: Path, veth) -> list[Path]:  # noqa: ANN001
    """Put one bad input into the watched tree atomically; returns what to remove to fix it."""
    if how == "file":
        tmp = stage / "bad.yaml"
        assert content is not None
        tmp.write_text(_fill(content, veth))
        os.rename(tmp, src / "bad.yaml")
        return [src / "bad.yaml"]
    if how == "loop":
        (stage / "loop").mkdir()
        os.symlink("..", stage / "loop" / "back")
        os.rename(stage / "loop", src / "loop")
        return [src / "loop"]
    if how == "fifo":
        os.mkfifo(src / "pipe.yaml")
        return [src / "pipe.yaml"]
    # (the verifier-rejects row moved to test_reconcile: a watched source never yields
    # hand-built artifacts, only `apply --prebuilt DIR` does)
    raise ValueError(f"unknown injection {how!r}")


def _fill(content: str, veth) -> str:  # noqa: ANN001
    return content.replace("{{", "\0").replace("}}", "\1").replace("{ifname}", veth.if_b) \
        .replace("{netns}", veth.ns_b).replace("\0", "{").replace("\1", "}")


def _remove(paths: list[Path]) -> None:
    import shutil

    for p in paths:
        if p.is_symlink() or not p.is_dir():
            p.unlink()
        else:
            shutil.rmtree(p)


def test_watch_survives_every_bad_input(ctl, veth, tmp_path: Path) -> None:
    _need_kind()
    from bpfpolicy.controller import events

    src, arts, stage = tmp_path / "src", tmp_path / "arts", tmp_path / "stage"
    for d in (src, arts, stage):
        d.mkdir()
    (src / "edge.yaml").write_text(GOOD.format(ifname=veth.if_a, netns=veth.ns_a, source=veth.ip4_b))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ctl.env, "BPFPOLICY_INTERVAL": "3600", "BPFPOLICY_METRICS_ADDR": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([*BPFPOLICY, "watch", str(src), str(arts)], env=env, cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait(lambda: _source(ctl).get("condition") == "Ready"), "first revision never applied"
        pid = _xdp_id(veth)
        assert pid is not None and not ping(veth)  # b's source address is dropped
        for case, how, content, reason, needle in CASES:
            fix = _inject(how, content, src, arts, stage, veth)
            assert _wait(lambda n=needle: _source(ctl).get("condition") == "Stalled"
                         and n in _source(ctl).get("message", "")), f"{case}: {_source(ctl)}"
            assert proc.poll() is None, f"{case}: watch exited"
            st = _status(env)
            assert st["source"]["condition"] == "Stalled" and st["source"]["reason"] == reason, case
            assert needle in st["source"]["message"] and "Traceback" not in st["source"]["message"], case
            assert _xdp_id(veth) == pid and not ping(veth), f"{case}: previous enforcement lost"
            assert any(e.get("reason") == reason and e.get("type") == "Warning" and needle in e.get("message", "")
                           for e in events.read(ctl.events_path)), f"{case}: no Warning event"
            _remove(fix)
            assert _wait(lambda: _source(ctl).get("condition") == "Ready"), f"{case}: not Ready after the fix"
            st = _status(env)
            assert st["source"]["reason"] == "ReconciliationSucceeded", case
            assert st["source"]["last_applied_revision"] == st["source"]["last_attempted_revision"], case
            assert [p["condition"] for p in st["policies"]] == ["Ready"], f"{case}: {st['policies']}"
            assert _xdp_id(veth) == pid and not ping(veth), case
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        m = re.search(r'bpfpolicy_cycle_errors_total\{reason="BuildFailed"\} (\S+)', body)
        assert m and float(m.group(1)) >= len([c for c in CASES if c[3] == "BuildFailed"])
        assert 'bpfpolicy_source_stalled{reason="BuildFailed"} 0.0' in body
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
