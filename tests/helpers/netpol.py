"""Test-side loader for NetworkPolicy artifacts on the real kernel layer.

Loads an artifact's object through libbpf, fills its content maps from `maps/*.bin`,
attaches per the manifest (kernel/tc.py: tcx or clsact; kernel/cgroup.py: cgroup_skb
links), reads per-rule counters and drains the verdict-event ring buffer. The
controller's generic apply does the same for real deployments; this stays small so the
tests exercise the artifact itself.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from bpfpolicy.kernel import bpf, cgroup, tc
from bpfpolicy.kernel import libbpf as lb
from bpfpolicy.kernel.maps import read_counters, write_records
from bpfpolicy.kernel.ringbuf import drain
from bpfpolicy.kinds import Artifact, CompileContext
from bpfpolicy.kinds.netpol.events import decode
from bpfpolicy.kinds.netpol.kind import NetworkPolicyKind
from bpfpolicy.policy.load import load_file
from bpfpolicy.policy.validate import validate_documents


def compile_text(tmp: Path, text: str, inventory: list[dict[str, Any]], lenient: bool = False,
                 name: str = "policy.yaml") -> list[Artifact]:
    """Validate + compile policy YAML text (all documents merged) against an inventory.
    The file name is stable: `@policy file:line:col` comments are part of the C source."""
    f = tmp / name
    f.write_text(text)
    result = validate_documents(load_file(f), lenient=lenient)
    assert result.ok, "\n".join(str(d) for d in result.diagnostics)
    docs = [v.doc for v in result.policies]
    return NetworkPolicyKind().compile_set(docs, CompileContext(options={"inventory": inventory}))


class Loaded:
    """One artifact loaded into the kernel (maps filled), optionally attached."""

    def __init__(self, art: Artifact) -> None:
        self.art = art
        self.obj = lb.BpfObject.open_mem(art.files["prog.bpf.o"], art.name)
        self.obj.load()
        for m in art.manifest["maps"]:
            if m.get("contents"):
                mp = self.obj.map(m["name"])
                write_records(mp.fd, art.files[m["contents"]], m["key_size"], m["value_size"], False)
        self.tc_atts: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.cg_links: list[int] = []

    def prog_fd(self, name: str) -> int:
        return self.obj.program(name).fd

    def run(self, prog: str, data: bytes) -> int:
        return bpf.prog_test_run(self.prog_fd(prog), data).retval

    def attach(self, pin_dir: str) -> None:
        for i, att in enumerate(self.art.manifest["attachments"]):
            fd = self.prog_fd(att["program"])
            if att["type"] == "tc":
                rec = tc.attach(fd, att["interface"], att["direction"], att["netns"],
                                link_pin=os.path.join(pin_dir, f"link_{i}"), prio=100 + i, handle=100 + i)
                self.tc_atts.append((att, rec))
            else:
                self.cg_links.append(cgroup.attach(fd, att["cgroup"], att["direction"]))

    def detach(self) -> None:
        for att, rec in self.tc_atts:
            with contextlib.suppress(OSError):
                tc.detach(rec, att["interface"], att["direction"], att["netns"])
        for fd in self.cg_links:
            with contextlib.suppress(OSError):
                bpf.link_detach(fd)
            os.close(fd)
        self.tc_atts, self.cg_links = [], []

    def counters(self) -> dict[str, tuple[int, int]]:
        rules = self.art.manifest["counters"]["rules"]
        vals = read_counters(self.obj.map(self.art.manifest["counters"]["map"]).fd, len(rules))
        return {r["name"]: (v[0], v[1]) for r, v in zip(rules, vals, strict=True)}

    def events(self) -> list[dict[str, Any]]:
        """Drain the ring buffer (bpfpolicy.kernel.ringbuf, ring_buffer__consume)."""
        return [decode(r, self.art.manifest) for r in drain(self.obj.map("np_events").fd)]

    def close(self) -> None:
        self.detach()
        self.obj.close()

    def __enter__(self) -> Loaded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_kernel_test(art: Artifact) -> list[tuple[str, int, int]]:
    """Execute the artifact's kernel-test.txt prog-run vectors; (comment, expected, got)."""
    out = []
    with Loaded(art) as ld:
        comment = ""
        for line in art.files["kernel-test.txt"].decode().splitlines():
            if line.startswith("#"):
                comment = line
            elif line.startswith("prog-run "):
                _, prog, expect, data = line.split()
                out.append((comment, int(expect), ld.run(prog, bytes.fromhex(data))))
    return out
