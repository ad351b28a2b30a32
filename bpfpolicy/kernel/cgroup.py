"""cgroup_skb attachments through bpf links (BPF_LINK_CREATE on a cgroup v2 directory).

A link is the right handle for a controller: it is pinned under the bpffs root (so the
program keeps filtering when the controller exits), `BPF_LINK_UPDATE` swaps the program
atomically with a compare-and-swap on the old one, and unpinning + `BPF_LINK_DETACH`
removes exactly our attachment and nobody else's (multi-attach cgroups stay intact).

API:
    attach(prog_fd, cgroup_path, direction) -> link_fd   # caller pins (bpf.obj_pin) / closes
    attach_pinned(prog_fd, cgroup_path, direction, pin) -> link_id
    update(link_pin_or_fd, new_prog_fd, old_prog_fd=None)   # atomic swap (EPERM if old is stale)
    link_prog_id(pin) -> prog_id | None                   # None when the pin is gone
    attached_prog_id(pin, cgroup_path) -> prog_id | None  # None unless on that cgroup now
    query(cgroup_path, direction) -> [prog_id]            # programs attached directly there
    detach(pin) -> bool
"""

from __future__ import annotations

import errno
import os

from . import bpf, pins
from .tc import query_ids

CGROUP_INET_INGRESS, CGROUP_INET_EGRESS = 0, 1
CGROUP_SETSOCKOPT = 22  # BPF_CGROUP_SETSOCKOPT (enum bpf_attach_type, uapi linux/bpf.h)
# attachment `direction` -> attach type; "setsockopt" is the cgroup/setsockopt hook
DIRECTIONS = {"ingress": CGROUP_INET_INGRESS, "egress": CGROUP_INET_EGRESS,
              "setsockopt": CGROUP_SETSOCKOPT}


def _attach_type(direction: str) -> int:
    try:
        return DIRECTIONS[direction]
    except KeyError:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}") from None


def _open_cgroup(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, f"cgroup {path} does not exist") from None


def attach(prog_fd: int, cgroup_path: str, direction: str) -> int:
    """BPF_LINK_CREATE(cgroup fd, BPF_CGROUP_INET_{INGRESS,EGRESS}); returns the link fd."""
    cg = _open_cgroup(cgroup_path)
    try:
        return bpf.link_create(prog_fd, cg, _attach_type(direction))
    finally:
        os.close(cg)


def attach_pinned(prog_fd: int, cgroup_path: str, direction: str, pin: str) -> int:
    """Attach and pin the link at `pin` in one step; returns the link id."""
    fd = attach(prog_fd, cgroup_path, direction)
    try:
        bpf.obj_pin(fd, pin)
        return int(bpf.link_info(fd)["id"])
    finally:
        os.close(fd)


def update(link: str | int, new_prog_fd: int, old_prog_fd: int | None = None) -> None:
    """Swap the program behind a pinned link (path) or link fd, atomically."""
    if isinstance(link, str):
        pins.update_link(link, new_prog_fd, old_prog_fd)
    else:
        bpf.link_update(link, new_prog_fd, old_prog_fd)


def link_prog_id(pin: str) -> int | None:
    return pins.pinned_link_prog_id(pin)


def attached_prog_id(pin: str, cgroup_path: str) -> int | None:
    """The program behind the link pinned at `pin`, if the link is attached to the cgroup
    at `cgroup_path` *now* (a cgroup v2 id is its directory's inode): a cgroup removed and
    recreated under the same path leaves the old link on the dead cgroup."""
    info = pins.pinned_link_info(pin)
    if info is None:
        return None
    try:
        if info.get("cgroup_id") is not None and info["cgroup_id"] != os.stat(cgroup_path).st_ino:
            return None
    except OSError:
        return None
    return int(info["prog_id"]) or None  # type: ignore[call-overload]


def link_on_cgroup(pin: str, cgroup_path: str) -> bool:
    """Whether the link pinned at `pin` is a live cgroup link on `cgroup_path` (a cgroup
    v2 id is its directory's inode number): only then may we swap its program."""
    info = pins.pinned_link_info(pin)
    try:
        return bool(info) and info.get("type") == "cgroup" and info.get("cgroup_id") == os.stat(cgroup_path).st_ino
    except OSError:
        return False


def query(cgroup_path: str, direction: str) -> list[int]:
    """Program ids attached directly to this cgroup (not inherited) for `direction`."""
    cg = _open_cgroup(cgroup_path)
    try:
        return query_ids(cg, _attach_type(direction))
    finally:
        os.close(cg)


def detach(pin: str) -> bool:
    """Detach the link pinned at `pin` and remove the pin; False when it was not there."""
    return pins.detach_link(pin)
