"""Attach, atomically replace, query and detach XDP programs on an interface, optionally
inside a named network namespace.

Mechanism (chosen): **netlink** (`IFLA_XDP`) with `XDP_FLAGS_REPLACE` +
`IFLA_XDP_EXPECTED_FD` — a kernel-side compare-and-swap (5.7+). Why netlink rather than
an XDP bpf_link:
  * the attachment belongs to the interface and survives the controller process
    without any pin, so a crashed or restarted controller never drops enforcement;
  * `ip link`, `bpftool net` and xdp-tools all see and report it;
  * replacement is still atomic, and a stale expected fd fails (EEXIST) instead of
    clobbering someone else's program.
An XDP *link* (`attach_link`, pinned by the caller, swapped with `bpf.link_update`) is
offered too; it protects against other tools overwriting the program but detaches if the
pin is lost. Don't mix the two on one interface (netlink then fails with EBUSY).

pyroute2's `link("set", xdp_fd=...)` sends neither flags nor the expected fd, so we pass
the nested attribute list ourselves (docs/upstream.md §5.3).

Modes: "native" (driver, XDP_FLAGS_DRV_MODE), "generic" (skb, XDP_FLAGS_SKB_MODE),
"auto" = native, falling back to generic when the driver refuses.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from . import bpf
from .netns import in_netns

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE, "hw": XDP_FLAGS_HW_MODE}
_ATTACHED = {0: None, 1: "native", 2: "generic", 3: "hw", 4: "multi",  # raw values, and
             "xdp": "native", "xdpgeneric": "generic", "xdpoffload": "hw",  # pyroute2's names
             "xdpmulti": "multi", "none": None}


@dataclass(frozen=True)
class XdpState:
    """What netlink reports for an interface."""

    ifindex: int
    prog_id: int | None  # the attached program (None: nothing attached)
    mode: str | None  # "native" | "generic" | "hw" | "multi" | None


def _ipr():  # noqa: ANN202 - pyroute2 type
    from pyroute2 import IPRoute

    return IPRoute()


def _netlink_error(e: Exception, what: str) -> OSError:
    code = getattr(e, "code", None) or _errno.EIO
    return OSError(code, f"{what}: {os.strerror(code)}")


def _lookup(ipr, ifname: str, netns: str | None) -> int:  # noqa: ANN001
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        where = f" in netns {netns}" if netns else ""
        raise OSError(_errno.ENODEV, f"no interface {ifname!r}{where}")
    return int(idx[0])


def query(ifname: str, netns: str | None = None) -> XdpState:
    """Which program (id) is attached to `ifname`, and in which mode."""
    with in_netns(netns), _ipr() as ipr:
        idx = _lookup(ipr, ifname, netns)
        msg = ipr.get_links(idx)[0]
        xdp = msg.get_attr("IFLA_XDP")
        if xdp is None:
            return XdpState(idx, None, None)
        mode = _ATTACHED.get(xdp.get_attr("IFLA_XDP_ATTACHED") or 0)
        prog_id = xdp.get_attr("IFLA_XDP_PROG_ID")
        if prog_id is None and mode:
            prog_id = xdp.get_attr("IFLA_XDP_DRV_PROG_ID") or xdp.get_attr("IFLA_XDP_SKB_PROG_ID")
        return XdpState(idx, int(prog_id) if prog_id else None, mode)


def _set(ipr, idx: int, fd: int, flags: int, expected_fd: int | None, what: str) -> None:  # noqa: ANN001
    attrs: list[tuple[str, int]] = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    try:
        ipr.link("set", index=idx, xdp={"attrs": attrs})
    except Exception as e:  # pyroute2 NetlinkError
        if hasattr(e, "code"):
            raise _netlink_error(e, what) from None
        raise


def attach(ifname: str, prog_fd: int, mode: str = "auto", netns: str | None = None,
           expected_prog_id: int | None = None) -> str:
    """Attach `prog_fd` to `ifname`; returns the mode actually used.

    * `expected_prog_id=None`: only if nothing is attached (UPDATE_IF_NOEXIST; EBUSY if
      something is).
    * `expected_prog_id=N`: atomically replace program N (which must still be the one
      attached, else EEXIST) — keeps N's mode; `mode` is then ignored.
    """
    with in_netns(netns), _ipr() as ipr:
        idx = _lookup(ipr, ifname, netns)
        where = f"{ifname}{' in netns ' + netns if netns else ''}"
        if expected_prog_id is not None:
            state = query(ifname)
            if state.prog_id != expected_prog_id:
                raise OSError(_errno.EEXIST, f"XDP replace on {where}: expected program "
                              f"{expected_prog_id} but {state.prog_id} is attached")
            old_fd = bpf.prog_get_fd_by_id(expected_prog_id)
            try:
                used = state.mode if state.mode in MODE_FLAGS else "native"
                _set(ipr, idx, prog_fd, MODE_FLAGS[used] | XDP_FLAGS_REPLACE, old_fd,
                     f"XDP replace on {where}")
                return used
            finally:
                os.close(old_fd)
        def set_mode(m: str) -> str:
            _set(ipr, idx, prog_fd, MODE_FLAGS[m] | XDP_FLAGS_UPDATE_IF_NOEXIST, None,
                 f"XDP attach ({m}) on {where}")
            return m

        return _first_mode_that_works(mode, set_mode)


_T = TypeVar("_T")


def _first_mode_that_works(mode: str, attempt: Callable[[str], _T]) -> _T:
    """`auto` tries native (driver) mode, then generic; a busy interface (EBUSY/EEXIST:
    something else is attached) is an answer, not a reason to fall back."""
    last: OSError | None = None
    for m in (["native", "generic"] if mode == "auto" else [mode]):
        try:
            return attempt(m)
        except OSError as e:
            last = e
            if e.errno in (_errno.EBUSY, _errno.EEXIST):
                raise
    assert last is not None
    raise last


def detach(ifname: str, netns: str | None = None, expected_prog_id: int | None = None) -> bool:
    """Remove the XDP program from `ifname` (only if it is `expected_prog_id`, when given).
    Returns False if nothing was attached."""
    with in_netns(netns), _ipr() as ipr:
        idx = _lookup(ipr, ifname, netns)
        state = query(ifname)
        if state.prog_id is None:
            return False
        if expected_prog_id is not None and state.prog_id != expected_prog_id:
            raise OSError(_errno.EEXIST, f"XDP detach on {ifname}: program {state.prog_id} is "
                          f"attached, not {expected_prog_id}")
        flags = MODE_FLAGS.get(state.mode or "", 0)
        if expected_prog_id is not None:
            old_fd = bpf.prog_get_fd_by_id(expected_prog_id)
            try:
                _set(ipr, idx, -1, flags | XDP_FLAGS_REPLACE, old_fd, f"XDP detach on {ifname}")
            finally:
                os.close(old_fd)
        else:
            _set(ipr, idx, -1, flags, None, f"XDP detach on {ifname}")
        return True


def attach_link(ifname: str, prog_fd: int, mode: str = "auto", netns: str | None = None) -> tuple[int, str]:
    """Alternative: an XDP bpf_link. Returns (link fd, mode). Pin the fd (bpf.obj_pin) or
    the program detaches when the fd closes; swap programs with bpf.link_update()."""
    from .netns import ifindex

    idx = ifindex(ifname, netns)

    def create(m: str) -> tuple[int, str]:
        with in_netns(netns):
            return bpf.link_create(prog_fd, idx, bpf.BPF_XDP, MODE_FLAGS[m]), m

    return _first_mode_that_works(mode, create)
