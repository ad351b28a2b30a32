"""The directory revision covers every file a policy reads, not only policy files, and
does not depend on how the source path is spelled; a real `bpfpolicy watch` reacts to
an edit of an XDPBlocklist `sourceFiles` list with a map delta and a new revision."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BPFPOLICY, REPO, udp_received

LISTED = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: edge}}
spec:
  interfaces: [{{name: {ifname}, netns: {netns}}}]
  deny:
    - name: bogons
      sources: [192.0.2.1]
      sourceFiles: [lists/drop.txt]
"""


def _tree(root: Path) -> Path:
    (root / "lists").mkdir(parents=True)
    (root / "edge.yaml").write_text(LISTED.format(ifname="x", netns="y"))
    (root / "lists" / "drop.txt").write_text("198.51.100.0/24\n")
    return root


def test_list_file_edit_is_a_new_revision(tmp_path: Path) -> None:
    from bpfpolicy.controller.source import scan

    root = _tree(tmp_path / "pol")
    before = scan([root])
    assert [f.name for f in before.files] == ["edge.yaml"]  # the list is fingerprinted, not loaded
    with open(root / "lists" / "drop.txt", "a") as f:
        f.write("203.0.113.7/32\n")
    assert scan([root]).digest != before.digest
    assert scan([root], "inventory-v2").digest != scan([root]).digest  # the host's inventory counts too


def test_revision_independent_of_path_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bpfpolicy.controller.source import scan

    root = _tree(tmp_path / "pol")
    monkeypatch.chdir(tmp_path)
    rel, absolute = scan([Path("pol")]).digest, scan([root.resolve()]).digest
    dotted = scan([Path("pol/../pol")]).digest
    assert rel == absolute == dotted
    assert scan([Path("pol/edge.yaml")]).digest == scan([root / "edge.yaml"]).digest


def _revision(cfg) -> str | None:  # noqa: ANN001
    from bpfpolicy.controller.state import Store

    return Store(cfg.state_dir).status().get("source", {}).get("last_applied_revision")


def _wait(pred, timeout: float = 60.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.kernel
def test_watch_applies_list_file_edit_as_map_delta(ctl, veth, tmp_path: Path) -> None:
    from bpfpolicy.controller.state import Store

    root = tmp_path / "pol"
    (root / "lists").mkdir(parents=True)
    (root / "edge.yaml").write_text(LISTED.format(ifname=veth.if_a, netns=veth.ns_a))
    (root / "lists" / "drop.txt").write_text("198.51.100.0/24\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ctl.env, "BPFPOLICY_INTERVAL": "3600", "BPFPOLICY_METRICS_ADDR": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([*BPFPOLICY, "watch", str(root)], env=env, cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait(lambda: "XDPBlocklist/edge" in Store(ctl.state_dir).inventory()), "never applied"
        first = _revision(ctl)
        prog = Store(ctl.state_dir).inventory()["XDPBlocklist/edge"]["programs"]
        assert udp_received(veth, 3) > 0  # b is not listed yet
        with open(root / "lists" / "drop.txt", "a") as f:  # append b's address to the list file only
            f.write(f"{veth.ip4_b}/32\n")
        assert _wait(lambda: _revision(ctl) not in (None, first)), "list edit produced no new revision"
        assert _wait(lambda: udp_received(veth, 2, wait=0.3) == 0), "b still passes after the list edit"
        assert Store(ctl.state_dir).inventory()["XDPBlocklist/edge"]["programs"] == prog  # map delta, same program
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "update-map" in err, err[-2000:]  # watch's cycle log names the map delta
