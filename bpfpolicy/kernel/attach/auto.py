"""Attach by the program's SEC() name, the way libbpf's `bpf_program__attach` does
(tracepoint, raw_tp, kprobe, uprobe, lsm, fentry, ...). The link is pinned; a new
version gets a new link (staged, renamed over the old pin at commit, which drops the
old link), so there is no in-place replace and nothing to roll back."""

from __future__ import annotations

import contextlib
from typing import Any

from ..pins import detach_link, pinned_link_prog_id
from .base import Attacher, AttachRecord, Observation, SwapRequest, prog_id_of, register
from .cgroup import rollback_link


class AutoAttacher(Attacher):
    types = ("tracepoint", "raw_tracepoint", "raw_tp", "kprobe", "kretprobe", "uprobe", "uretprobe",
             "lsm", "fentry", "fexit")

    def swap(self, req: SwapRequest, prog: Any) -> tuple[AttachRecord, int | None]:
        link = prog.attach()
        link.pin(req.staging_link_pin)
        link.disconnect()
        link.close()
        rec: AttachRecord = {**req.spec, "link_pin": req.final_link_pin, "prog_id": prog_id_of(prog.fd)}
        return rec, None

    def rollback(self, record: AttachRecord, old_prog_id: int | None) -> None:
        rollback_link(record, old_prog_id)

    def detach(self, record: AttachRecord) -> None:
        if record.get("link_pin"):
            with contextlib.suppress(OSError):
                detach_link(record["link_pin"])

    def attached_prog_ids(self, record: AttachRecord, cache: Observation | None = None) -> list[int]:
        pid = pinned_link_prog_id(record["link_pin"]) if record.get("link_pin") else None
        return [pid] if pid else []

    def reattach(self, record: AttachRecord, prog_fd: int, owner: str) -> AttachRecord:
        """The pinned link holds the program; a swap of its pin (drift) is repaired by
        the next replace, so only the record's program id is refreshed."""
        return {**record, "prog_id": prog_id_of(prog_fd)}

    def describe(self, record: AttachRecord) -> str:
        return f"{record.get('type')} {record.get('program', '')}".strip()


AUTO = register(AutoAttacher(), fallback=True)
