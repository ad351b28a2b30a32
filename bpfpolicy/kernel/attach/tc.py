"""tc on an interface: a pinned tcx link (6.6+, swapped with BPF_LINK_UPDATE) or a
clsact + cls_bpf filter at a prio that is stable per (policy, attachment), so a new
version replaces exactly our filter and two policies on one interface never collide.
`BPFPOLICY_TC_MECHANISM=tc` forces cls_bpf for new attachments."""

from __future__ import annotations

import contextlib
import os
import zlib
from typing import Any

from .. import tc
from ..pins import pinned_link_prog_id, prog_by_id, update_link
from .base import Attacher, AttachRecord, Observation, SwapRequest, prog_id_of, register
from .xdp import describe_on_interface


def tc_prio(owner: str, index: int) -> int:
    """A stable cls_bpf prio per (policy, attachment): two policies on one interface
    never replace each other's filter, and a new version lands on the same prio."""
    return 0x1000 + zlib.crc32(f"{owner}#{index}".encode()) % 0x6000


class TcAttacher(Attacher):
    types = ("tc",)

    def swap(self, req: SwapRequest, prog: Any) -> tuple[AttachRecord, int | None]:
        spec, prev = req.spec, req.previous or {}
        prev_tc = prev.get("tc", {})
        rec: AttachRecord = {**spec}
        if prev_tc.get("mechanism") == "tcx" and os.path.exists(req.final_link_pin):
            old = pinned_link_prog_id(req.final_link_pin)
            update_link(req.final_link_pin, prog.fd)
            rec.update(tc=prev_tc, link_pin=req.final_link_pin, prog_id=prog_id_of(prog.fd))
            return rec, old
        prio = prev_tc.get("prio") or tc_prio(req.owner, spec["index"])
        old_ids = [f for f in tc.cls_query(spec["interface"], spec["direction"], spec.get("netns"))
                   if f["prio"] == prio] if req.previous else []
        res = tc.attach(prog.fd, spec["interface"], spec["direction"], spec.get("netns"),
                        link_pin=req.staging_link_pin, name=f"bpfpolicy-{req.owner.split('/', 1)[-1]}"[:32],
                        prio=prio, prefer_tcx=os.environ.get("BPFPOLICY_TC_MECHANISM", "auto") != "tc")
        if res.get("mechanism") == "tcx":
            res["link_pin"] = req.final_link_pin
            rec["link_pin"] = req.final_link_pin
        rec.update(tc=res, prog_id=prog_id_of(prog.fd))
        return rec, (old_ids[0]["prog_id"] if old_ids else None)

    def rollback(self, record: AttachRecord, old_prog_id: int | None) -> None:
        if old_prog_id is None:  # a first attach: a tcx link goes with its staging pin,
            if record.get("tc", {}).get("mechanism") == "tc":  # a cls_bpf filter must be removed
                self.detach(record)
            return
        with contextlib.suppress(OSError), prog_by_id(old_prog_id) as fd:
            if record.get("link_pin"):
                update_link(record["link_pin"], fd)
            else:
                tc.cls_attach(fd, record["interface"], record["direction"], record.get("netns"),
                              prio=record.get("tc", {}).get("prio", tc.DEFAULT_PRIO))

    def detach(self, record: AttachRecord) -> None:
        with contextlib.suppress(OSError):
            tc.detach(record.get("tc", {}), record["interface"], record["direction"], record.get("netns"))

    def attached_prog_ids(self, record: AttachRecord, cache: Observation | None = None) -> list[int]:
        try:
            return tc.attached_prog_ids(record.get("tc", {}), record["interface"], record["direction"],
                                        record.get("netns"))
        except OSError:
            return []

    def reattach(self, record: AttachRecord, prog_fd: int, owner: str) -> AttachRecord:
        tc.detach(record.get("tc", {}), record["interface"], record["direction"], record.get("netns"))
        prio = record.get("tc", {}).get("prio") or tc_prio(owner, record["index"])
        res = tc.attach(prog_fd, record["interface"], record["direction"], record.get("netns"),
                        link_pin=record.get("link_pin"), prio=prio)
        return {**record, "tc": res, "prog_id": prog_id_of(prog_fd)}

    def describe(self, record: AttachRecord) -> str:
        return describe_on_interface(record)


TC = register(TcAttacher())
