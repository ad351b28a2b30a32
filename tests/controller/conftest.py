"""Fixtures: a throwaway bpffs root and state dir per test, veth pairs in unique netns,
and helpers to run the controller in-process or as the real CLI."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parents[1]
BPFPOLICY = [sys.executable, "-m", "bpfpolicy"]


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF loads, netns)")
    if not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("bpffs not mounted at /sys/fs/bpf (run scripts/setup.sh)")


@pytest.fixture
def ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A HostConfig pointing at a unique bpffs root and a tmp state dir; everything the
    test loaded is destroyed afterwards. Hand-built artifact trees (helpers/controller_artifacts.py:
    they have no policy source) go through `Reconciler(..., prebuilt=True)` / `--prebuilt DIR`."""
    _need_root()
    from bpfpolicy.controller.config import load_config

    root = Path(f"/sys/fs/bpf/bpfpolicy-test-{secrets.token_hex(4)}")
    env = {"BPFPOLICY_BPFFS_ROOT": str(root), "BPFPOLICY_STATE_DIR": str(tmp_path / "state"),
           "BPFPOLICY_CONFIG": str(tmp_path / "config.yaml")}
    (tmp_path / "config.yaml").write_text("selfHeal: true\ninterval: 1\n")
    cfg = load_config(env=env)
    cfg.env = {**os.environ, **env}  # type: ignore[attr-defined]
    try:
        yield cfg
    finally:
        destroy(cfg)


def destroy(cfg) -> None:  # noqa: ANN001
    from bpfpolicy.controller.apply import _rmtree_pins, gc_staging, prune
    from bpfpolicy.controller.state import Store

    store = Store(cfg.state_dir)
    gc_staging(cfg)
    for key, entry in store.inventory().items():
        with contextlib.suppress(Exception):
            prune(cfg, key, entry, store)
    _rmtree_pins(cfg.bpffs_root)


@pytest.fixture
def veth():
    _need_root()
    from bpfpolicy.kernel.netns import VethPair

    pair = VethPair().create()
    try:
        yield pair
    finally:
        pair.destroy()


def run_cli(cfg, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    return subprocess.run([*BPFPOLICY, *args], env=cfg.env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def udp_received(pair, count: int = 3, src: str | None = None, wait: float = 0.5) -> int:  # noqa: ANN001
    """Send `count` UDP datagrams b → a (from `src`, default b's address); how many
    arrived. XDP on a's interface drops by IPv4 source address."""
    import socket
    import time

    from bpfpolicy.kernel.netns import socket_in_netns

    rx = socket_in_netns(pair.ns_a, socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket_in_netns(pair.ns_b, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind((pair.ip4_a, 0))
        rx.setblocking(False)
        tx.bind((src or pair.ip4_b, 0))
        for i in range(count):
            tx.sendto(b"probe%d" % i, rx.getsockname())
            time.sleep(0.01)
        got, deadline = 0, time.monotonic() + wait
        while time.monotonic() < deadline and got < count:
            try:
                rx.recv(64)
                got += 1
            except BlockingIOError:
                time.sleep(0.01)
        return got
    finally:
        rx.close()
        tx.close()


def ping(pair, count: int = 3) -> bool:  # noqa: ANN001
    """True when b's datagrams reach a (no ping binary needed)."""
    return udp_received(pair, count) > 0
