"""Pinned bpffs objects as scoped file descriptors.

Every pin the controller reads (a program, map or link under the bpffs root) is opened
with `BPF_OBJ_GET` and must be closed again; `with pinned(path) as fd:` does both, so no
caller writes an obj_get/close pair by hand and an exception never leaks an fd. The
lookups below answer the questions the controller asks of a pin without holding the fd.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from . import bpf


@contextmanager
def pinned(path: str | os.PathLike[str], read_only: bool = False) -> Iterator[int]:
    """An fd for the object pinned at `path`, closed on exit (OSError when absent)."""
    fd = bpf.obj_get(str(path), read_only=read_only)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def prog_by_id(prog_id: int) -> Iterator[int]:
    """An fd for a loaded program by id, closed on exit (OSError when it is gone)."""
    fd = bpf.prog_get_fd_by_id(prog_id)
    try:
        yield fd
    finally:
        os.close(fd)


def pinned_prog_id(path: str | os.PathLike[str] | None) -> int | None:
    """The id of the program pinned at `path`; None when there is no such pin."""
    if not path:
        return None
    try:
        with pinned(path) as fd:
            return int(bpf.prog_info(fd)["id"])
    except OSError:
        return None


def pinned_map_info(path: str | os.PathLike[str]) -> dict[str, object] | None:
    """`bpf_map_info` of the map pinned at `path`; None when there is no such pin."""
    try:
        with pinned(path) as fd:
            return bpf.map_info(fd)
    except OSError:
        return None


def pinned_link_info(path: str | os.PathLike[str]) -> dict[str, object] | None:
    """`bpf_link_info` of the link pinned at `path`; None when there is no such pin."""
    try:
        with pinned(path) as fd:
            return bpf.link_info(fd)
    except OSError:
        return None


def pinned_link_id(path: str | os.PathLike[str]) -> int | None:
    info = pinned_link_info(path)
    return int(info["id"]) if info else None  # type: ignore[call-overload]


def pinned_link_prog_id(path: str | os.PathLike[str]) -> int | None:
    """The program behind the link pinned at `path` (None: no pin, or a detached link)."""
    info = pinned_link_info(path)
    return (int(info["prog_id"]) or None) if info else None  # type: ignore[call-overload]


def update_link(link_pin: str | os.PathLike[str], new_prog_fd: int, old_prog_fd: int | None = None) -> None:
    """Swap the program behind a pinned bpf_link atomically (`BPF_LINK_UPDATE`). Any link
    type that supports update (cgroup, tcx, XDP, netns) goes through here."""
    with pinned(link_pin) as fd:
        bpf.link_update(fd, new_prog_fd, old_prog_fd)


def detach_link(link_pin: str | os.PathLike[str]) -> bool:
    """Detach the bpf_link pinned at `link_pin` (`BPF_LINK_DETACH`) and remove the pin;
    False when it was not there. Works for every link type."""
    import contextlib

    try:
        with pinned(link_pin) as fd, contextlib.suppress(OSError):
            bpf.link_detach(fd)
    except OSError:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link_pin)
    return True
