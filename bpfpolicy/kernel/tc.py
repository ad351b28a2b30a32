"""tc attachments: tcx links (kernel >= 6.6) or clsact + cls_bpf direct-action filters.

Two mechanisms, one contract — attach a `sched_cls` program to an interface's ingress or
egress, and later swap it for another program atomically (no packet sees "no program"):

* **tcx** (6.6+): `BPF_LINK_CREATE` with `BPF_TCX_INGRESS`/`BPF_TCX_EGRESS` on the ifindex.
  Debian's libbpf 1.1 has no `bpf_program__attach_tcx`, so this goes through raw bpf(2)
  (`kernel.bpf.link_create`). The link must be pinned or it detaches when its last fd
  closes; swap with `kernel.bpf.link_update(link_fd, new, old)` (compare-and-swap: EPERM
  when the link no longer runs `old`). A second tcx attach of the same program → EEXIST.
  tcx returns EINVAL on 5.10/6.1 (docs/upstream.md §5.3), so `attach()` falls back.
* **cls_bpf** (any kernel): a `clsact` qdisc plus a `bpf da` filter at a fixed
  (prio, handle). `cls_attach()` always sends `replace-filter`: the first call creates
  the filter, later calls swap the program in place at the same prio — tc's atomic
  replace. Nothing to pin: the filter lives on the device.

All functions take an optional `netns` (a name under /run/netns) and do their work inside
it; the calling thread is switched back afterwards.

API:
    tcx_supported() -> (ok, detail)                       # probes the running kernel once
    tcx_attach(prog_fd, ifname, direction, netns) -> link_fd   # caller pins / closes it
    prog_query(ifname, direction, netns) -> [prog_id]     # tcx programs (BPF_PROG_QUERY)
    cls_attach(prog_fd, ifname, direction, netns, prio=, handle=, name=)
    cls_query(ifname, direction, netns) -> [{"prio", "handle", "prog_id", "name"}]
    cls_detach(ifname, direction, netns, prio=, handle=) -> bool
    attach(prog_fd, ifname, direction, netns, link_pin=None, prefer_tcx=True) -> dict
        # {"mechanism": "tcx", "link_id", "link_pin"} or {"mechanism": "tc", "prio", "handle"}
    attached_prog_ids(att: dict, ifname, direction, netns) -> [prog_id]
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
from functools import cache
from typing import Any

from . import bpf
from .netns import in_netns

TCX_INGRESS, TCX_EGRESS = 46, 47
PROG_QUERY = 16
DIRECTIONS = {"ingress": TCX_INGRESS, "egress": TCX_EGRESS}
CLSACT_PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
DEFAULT_PRIO = 0xB9F  # fixed so a replace hits the same filter (and stays clear of prio 1)
DEFAULT_HANDLE = 1
TCA_BPF_ID = 11


def socket_if_nametoindex(ifname: str) -> int:
    """ifindex in the *current* netns (call inside `in_netns`)."""
    import socket

    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise OSError(errno.ENODEV, f"no such interface {ifname!r}") from None


def _direction(direction: str) -> int:
    try:
        return DIRECTIONS[direction]
    except KeyError:
        raise ValueError(f"direction must be ingress or egress, got {direction!r}") from None


# --------------------------------------------------------------------------- tcx


def tcx_attach(prog_fd: int, ifname: str, direction: str, netns: str | None = None) -> int:
    """Create a tcx link; returns its fd. Pin it (bpf.obj_pin) to keep it attached."""
    with in_netns(netns):
        idx = socket_if_nametoindex(ifname)
        return bpf.link_create(prog_fd, idx, _direction(direction))


def prog_query(ifname: str, direction: str, netns: str | None = None, max_progs: int = 64) -> list[int]:
    """Program ids attached via tcx (links or mprog) on ifname/direction, in run order."""
    with in_netns(netns):
        idx = socket_if_nametoindex(ifname)
        return query_ids(idx, _direction(direction), max_progs)


def query_ids(target: int, attach_type: int, max_progs: int = 64) -> list[int]:
    """BPF_PROG_QUERY: program ids attached to `target` (ifindex or cgroup fd)."""
    ids = (ctypes.c_uint32 * max_progs)()
    a = ctypes.create_string_buffer(128)
    struct.pack_into("=IIIIQI", a, 0, target, attach_type, 0, 0, ctypes.addressof(ids), max_progs)
    try:
        bpf.sys_bpf(PROG_QUERY, a, f"target {target} attach type {attach_type}")
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EINVAL):  # nothing attached / no tcx here
            return []
        raise
    count = struct.unpack_from("=I", a, 24)[0]
    return list(ids[: min(count, max_progs)])


@cache
def tcx_supported() -> tuple[bool, str]:
    """Whether the running kernel accepts tcx links: query `lo` for BPF_TCX_INGRESS
    (kernels without tcx reject the attach type with EINVAL)."""
    a = ctypes.create_string_buffer(128)
    ids = (ctypes.c_uint32 * 1)()
    struct.pack_into("=IIIIQI", a, 0, 1, TCX_INGRESS, 0, 0, ctypes.addressof(ids), 1)
    try:
        bpf.sys_bpf(PROG_QUERY, a, "lo tcx_ingress")
    except OSError as e:
        if e.errno == errno.EPERM:
            return False, "needs root (CAP_NET_ADMIN + CAP_BPF) to probe"
        return False, f"BPF_PROG_QUERY tcx_ingress: {os.strerror(e.errno or 0)} (kernel < 6.6?)"
    return True, "BPF_TCX_INGRESS accepted by BPF_PROG_QUERY (kernel >= 6.6)"


# --------------------------------------------------------------------------- cls_bpf


def _ipr(netns: str | None) -> Any:
    import pyroute2

    return pyroute2.NetNS(netns) if netns else pyroute2.IPRoute()


def cls_attach(prog_fd: int, ifname: str, direction: str, netns: str | None = None, *,
               prio: int = DEFAULT_PRIO, handle: int = DEFAULT_HANDLE, name: str = "bpfpolicy") -> None:
    """Create clsact if needed, then `replace` the bpf da filter at (prio, handle): the
    first call creates it, every later call swaps the program atomically in place."""
    _direction(direction)
    from pyroute2.netlink.exceptions import NetlinkError

    with contextlib.closing(_ipr(netns)) as ipr:
        idx = _lookup(ipr, ifname)
        try:
            ipr.tc("add", "clsact", idx)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise OSError(e.code, f"add clsact on {ifname}: {e}") from None
        try:
            ipr.tc("replace-filter", "bpf", idx, f":{handle:x}", fd=prog_fd, name=name[:64],
                   parent=CLSACT_PARENT[direction], classid=1, direct_action=True, prio=prio)
        except NetlinkError as e:
            raise OSError(e.code, f"tc replace filter {ifname} {direction} prio {prio}: {e}") from None


def cls_query(ifname: str, direction: str, netns: str | None = None) -> list[dict[str, Any]]:
    """bpf filters on ifname/direction: prio, handle, prog_id (TCA_BPF_ID), name."""
    _direction(direction)
    out = []
    with contextlib.closing(_ipr(netns)) as ipr:
        idx = _lookup(ipr, ifname)
        for f in ipr.get_filters(idx, parent=CLSACT_PARENT[direction]):
            if f.get_attr("TCA_KIND") != "bpf":
                continue
            opts = f.get_attr("TCA_OPTIONS")
            if not opts:
                continue
            out.append({"prio": f["info"] >> 16, "handle": f["handle"],
                        "prog_id": _nla_u32(opts, TCA_BPF_ID),
                        "name": opts.get_attr("TCA_BPF_NAME")})
    return out


def _nla_u32(nest: Any, nla_type: int) -> int | None:
    """pyroute2 decodes TCA_BPF_ID as UNKNOWN; read the u32 from the raw message."""
    for _name, nla in nest.get("attrs", []):
        hdr = getattr(nla, "get", lambda *_: None)("header")
        if isinstance(hdr, dict) and hdr.get("type") == nla_type and hdr.get("length") == 8:
            return struct.unpack_from("=I", nla.data, nla.offset + 4)[0]
    return None


def cls_detach(ifname: str, direction: str, netns: str | None = None, *,
               prio: int = DEFAULT_PRIO, handle: int = DEFAULT_HANDLE) -> bool:
    """Delete our filter; False when it was not there (or the device is gone)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with contextlib.closing(_ipr(netns)) as ipr:
            idx = _lookup(ipr, ifname)
            ipr.tc("del-filter", "bpf", idx, f":{handle:x}", parent=CLSACT_PARENT[direction], prio=prio)
    except (NetlinkError, OSError):
        return False
    return True


def _lookup(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise OSError(errno.ENODEV, f"no such interface {ifname!r}")
    return int(found[0])


# --------------------------------------------------------------------------- either


def attach(prog_fd: int, ifname: str, direction: str, netns: str | None = None, *,
           link_pin: str | None = None, prefer_tcx: bool = True,
           prio: int = DEFAULT_PRIO, handle: int = DEFAULT_HANDLE, name: str = "bpfpolicy") -> dict[str, Any]:
    """Attach with tcx when possible (pinning the link at `link_pin`), else cls_bpf.
    Returns a description to store (and to pass to `attached_prog_ids`/`detach`)."""
    if prefer_tcx and link_pin and tcx_supported()[0]:
        fd = tcx_attach(prog_fd, ifname, direction, netns)
        try:
            bpf.obj_pin(fd, link_pin)
            info = bpf.link_info(fd)
            return {"mechanism": "tcx", "link_id": info["id"], "link_pin": link_pin,
                    "ifindex": info.get("ifindex")}
        finally:
            os.close(fd)
    cls_attach(prog_fd, ifname, direction, netns, prio=prio, handle=handle, name=name)
    return {"mechanism": "tc", "prio": prio, "handle": handle}


def attached_prog_ids(att: dict[str, Any], ifname: str, direction: str, netns: str | None = None) -> list[int]:
    """Program ids currently behind an attachment made by `attach()` ([] when gone).

    A tcx link outlives its interface: when the device is deleted the kernel detaches
    the link (its ifindex becomes 0) but the pin still names the program. So the link
    counts only while it is attached to the interface that has this name *now* — a
    deleted and recreated interface (same name, new ifindex) reads as detached."""
    try:
        if att.get("mechanism") == "tcx":
            fd = bpf.obj_get(att["link_pin"])
            try:
                info = bpf.link_info(fd)
            finally:
                os.close(fd)
            with in_netns(netns):
                now = socket_if_nametoindex(ifname)
            if not info.get("ifindex") or info["ifindex"] != now:
                return []
            return [int(info["prog_id"])]
        return [f["prog_id"] for f in cls_query(ifname, direction, netns)
                if f["prio"] == att.get("prio", DEFAULT_PRIO) and f["prog_id"] is not None]
    except OSError:
        return []


def detach(att: dict[str, Any], ifname: str, direction: str, netns: str | None = None) -> None:
    """Remove an attachment made by `attach()` (tcx: unpin + detach the link)."""
    if att.get("mechanism") == "tcx":
        with contextlib.suppress(OSError):
            fd = bpf.obj_get(att["link_pin"])
            try:
                bpf.link_detach(fd)
            finally:
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(att["link_pin"])
        return
    cls_detach(ifname, direction, netns, prio=att.get("prio", DEFAULT_PRIO),
               handle=att.get("handle", DEFAULT_HANDLE))
