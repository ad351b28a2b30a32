"""`bpftool -j` as data: the same view an operator gets, parsed, with bookworm quirks fixed.

The controller's hot path reads pins and ids through bpf(2) directly; bpftool is for the
wider picture (status, leak checks, foreign objects): every program with its tag and
`bpf_metadata_*` (a free git/policy stamp), maps, links, per-device net attachments, and
the cgroup tree.

bpftool 7.1 (Debian bookworm) quirks (docs/upstream.md §5.4): tcx links show as `"type": 11`
(normalised here to "tcx"), `net show` omits tcx (use kernel.tc.prog_query), and
`net attach tcx_ingress` is rejected (we attach through bpf(2) anyway).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

_LINK_TYPES = {11: "tcx", 12: "uprobe_multi", 13: "netkit"}


class BpftoolError(OSError):
    pass


def available() -> bool:
    return shutil.which("bpftool") is not None


def run(*args: str, netns: str | None = None) -> Any:
    """`bpftool -j ARGS` (inside `ip netns exec NETNS` when given) → parsed JSON."""
    cmd = ["bpftool", "-j", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BpftoolError(proc.returncode, f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout or "null")


def prog_show() -> list[dict[str, Any]]:
    """Every loaded program: id, type, name, tag, map_ids, metadata {policy, hash, ...}."""
    return list(run("prog", "show") or [])


def map_show() -> list[dict[str, Any]]:
    return list(run("map", "show") or [])


def link_show() -> list[dict[str, Any]]:
    links = list(run("link", "show") or [])
    for link in links:
        if isinstance(link.get("type"), int):
            link["type"] = _LINK_TYPES.get(link["type"], str(link["type"]))
    return links


def net_show(netns: str | None = None) -> Any:
    return run("net", "show", netns=netns)


def cgroup_tree() -> list[dict[str, Any]]:
    return list(run("cgroup", "tree") or [])


def bpfpolicy_programs() -> list[dict[str, Any]]:
    """Programs stamped by bpfpolicy (`bpf_metadata_bpfpolicy_policy` in .rodata)."""
    return [p for p in prog_show() if (p.get("metadata") or {}).get("bpfpolicy_policy")]
