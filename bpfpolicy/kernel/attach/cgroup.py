"""cgroup hooks through a pinned bpf_link (BPF_LINK_CREATE on a cgroup v2 directory):
the link keeps the program attached when the controller exits, BPF_LINK_UPDATE swaps
it atomically, and detaching the link removes exactly our attachment. Serves any cgroup
attach type `kernel.cgroup` knows (cgroup_skb ingress/egress, cgroup_sockopt with
direction "setsockopt"); a new one is a type name here plus its attach type number there."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from .. import cgroup
from ..pins import detach_link, pinned_link_id, pinned_link_prog_id, prog_by_id, update_link
from .base import Attacher, AttachRecord, Observation, SwapRequest, prog_id_of, register


class CgroupAttacher(Attacher):
    types = ("cgroup_skb", "cgroup_sockopt")

    def swap(self, req: SwapRequest, prog: Any) -> tuple[AttachRecord, int | None]:
        spec, final = req.spec, req.final_link_pin
        old: int | None = None
        if os.path.exists(final) and cgroup.link_on_cgroup(final, spec["cgroup"]):
            old = pinned_link_prog_id(final)
            update_link(final, prog.fd)
        else:
            cgroup.attach_pinned(prog.fd, spec["cgroup"], spec["direction"], req.staging_link_pin)
        rec: AttachRecord = {**spec, "link_pin": final, "prog_id": prog_id_of(prog.fd),
                             "link_id": pinned_link_id(final if old is not None else req.staging_link_pin)}
        return rec, old

    def rollback(self, record: AttachRecord, old_prog_id: int | None) -> None:
        rollback_link(record, old_prog_id)

    def detach(self, record: AttachRecord) -> None:
        if record.get("link_pin"):
            with contextlib.suppress(OSError):
                detach_link(record["link_pin"])

    def attached_prog_ids(self, record: AttachRecord, cache: Observation | None = None) -> list[int]:
        if not record.get("link_pin"):
            return []
        if record.get("cgroup"):
            pid = cgroup.attached_prog_id(record["link_pin"], record["cgroup"])  # on that cgroup now
        else:
            pid = pinned_link_prog_id(record["link_pin"])
        return [pid] if pid else []

    def reattach(self, record: AttachRecord, prog_fd: int, owner: str) -> AttachRecord:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record["link_pin"])
        cgroup.attach_pinned(prog_fd, record["cgroup"], record["direction"], record["link_pin"])
        return {**record, "prog_id": prog_id_of(prog_fd)}

    def describe(self, record: AttachRecord) -> str:
        return f"{record.get('type')}/{record.get('direction')} {record.get('cgroup')}"


def rollback_link(record: AttachRecord, old_prog_id: int | None) -> None:
    """Point a pinned link back at the program it ran before (best effort)."""
    if record.get("link_pin") and old_prog_id is not None:
        with contextlib.suppress(OSError), prog_by_id(old_prog_id) as fd:
            update_link(record["link_pin"], fd)


CGROUP = register(CgroupAttacher())
