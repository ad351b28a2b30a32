"""Shared pytest fixtures for kernel tests (imported by tests/conftest.py).

* `require_kernel()` — skip unless root with bpffs mounted (what every kernel test needs).
* `veth_pair` — two fresh network namespaces joined by a veth pair with IPv4 + IPv6
  addresses (see bpfpolicy.kernel.netns.VethPair); unique names, always cleaned up.
* `bpffs_dir` — a unique directory under /sys/fs/bpf for pins, removed afterwards.
* `cgroup_dir` — a throwaway cgroup v2 directory; leftover processes go back to the root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator

import pytest


def kernel_skip_reason() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (BPF loads, network namespaces)"
    if not os.path.ismount("/sys/fs/bpf"):
        return "bpffs is not mounted at /sys/fs/bpf (run scripts/setup.sh)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


def require_kernel() -> None:
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def veth_pair() -> Iterator[object]:
    """A VethPair: attach programs on `.if_a` in `.ns_a`, send from `.if_b` in `.ns_b`."""
    require_kernel()
    from bpfpolicy.kernel.netns import VethPair

    pair = VethPair()
    try:
        pair.create()
        yield pair
    finally:
        pair.destroy()


@pytest.fixture
def bpffs_dir() -> Iterator[str]:
    """A private pin directory on bpffs (bpffs rejects dots in names: none here)."""
    require_kernel()
    path = os.path.join("/sys/fs/bpf", f"bpfpolicy-test-{uuid.uuid4().hex[:12]}")
    os.makedirs(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


CGROUP_ROOT = "/sys/fs/cgroup/unified"


@pytest.fixture
def cgroup_dir() -> Iterator[str]:
    """A throwaway cgroup v2 directory (cgroup_skb endpoints, cgroup/setsockopt guards);
    any process left in it is moved back to the root before it is removed."""
    if not os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.procs")):
        pytest.skip(f"no cgroup v2 hierarchy at {CGROUP_ROOT}")
    path = os.path.join(CGROUP_ROOT, f"bpfpolicy-test-{uuid.uuid4().hex[:10]}")
    os.mkdir(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError), open(os.path.join(path, "cgroup.procs")) as f:
            for pid in f.read().split():
                with contextlib.suppress(OSError), open(os.path.join(CGROUP_ROOT, "cgroup.procs"), "w") as r:
                    r.write(pid)
        with contextlib.suppress(OSError):
            os.rmdir(path)
