"""XDP on an interface through netlink: native mode first, generic as the fallback, and
replace with the expected program (XDP_FLAGS_REPLACE) so a swap never races another
writer and never leaves the interface without a program."""

from __future__ import annotations

import contextlib
from typing import Any

from .. import netdev, xdp
from ..pins import prog_by_id
from .base import (
    AttachConflict,
    Attacher,
    AttachRecord,
    Observation,
    SwapRequest,
    prog_id_of,
    register,
)


class XdpAttacher(Attacher):
    types = ("xdp",)

    def swap(self, req: SwapRequest, prog: Any) -> tuple[AttachRecord, int | None]:
        spec = req.spec
        cur = xdp.query(spec["interface"], spec.get("netns")).prog_id
        if cur is not None and not req.is_ours(cur):
            raise AttachConflict(f"{spec['interface']} runs XDP program {cur}, which bpfpolicy did not attach")
        rec: AttachRecord = {**spec}
        rec["mode_used"] = xdp.attach(spec["interface"], prog.fd, spec.get("mode", "auto"), spec.get("netns"),
                                      expected_prog_id=cur)
        rec["prog_id"] = prog_id_of(prog.fd)
        return rec, cur

    def rollback(self, record: AttachRecord, old_prog_id: int | None) -> None:
        iface, netns = record["interface"], record.get("netns")
        with contextlib.suppress(OSError):
            if old_prog_id is None:
                xdp.detach(iface, netns, expected_prog_id=record["prog_id"])
                return
            with prog_by_id(old_prog_id) as fd:
                xdp.attach(iface, fd, netns=netns, expected_prog_id=record["prog_id"])

    def detach(self, record: AttachRecord) -> None:
        with contextlib.suppress(OSError):
            cur = xdp.query(record["interface"], record.get("netns")).prog_id
            if cur is not None and cur == record.get("prog_id"):
                xdp.detach(record["interface"], record.get("netns"), expected_prog_id=cur)

    def attached_prog_ids(self, record: AttachRecord, cache: Observation | None = None) -> list[int]:
        try:
            if cache is not None:
                ns = record.get("netns")
                if ns not in cache.xdp_by_netns:
                    cache.xdp_by_netns[ns] = netdev.xdp_prog_ids(ns)
                pid = cache.xdp_by_netns[ns].get(record["interface"])
            else:
                pid = xdp.query(record["interface"], record.get("netns")).prog_id
        except OSError:
            return []
        return [pid] if pid else []

    def reattach(self, record: AttachRecord, prog_fd: int, owner: str) -> AttachRecord:
        cur = xdp.query(record["interface"], record.get("netns")).prog_id
        xdp.attach(record["interface"], prog_fd, record.get("mode", "auto"), record.get("netns"),
                   expected_prog_id=cur)
        return {**record, "prog_id": prog_id_of(prog_fd)}

    def describe(self, record: AttachRecord) -> str:
        return describe_on_interface(record)


def describe_on_interface(record: AttachRecord) -> str:
    """`<type>[/<direction>] <interface>[@<netns>]`."""
    where = record.get("interface", "?") + (f"@{record['netns']}" if record.get("netns") else "")
    direction = f"/{record['direction']}" if record.get("direction") else ""
    return f"{record.get('type')}{direction} {where}"


XDP = register(XdpAttacher())
