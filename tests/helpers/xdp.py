"""Test-side loader for XDPBlocklist artifacts: load the object with libbpf, fill the maps
from their contents, optionally attach in a netns. (The controller does the same from the
manifest; tests use this so they don't depend on it.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bpfpolicy.kernel import bpf, maps, xdp
from bpfpolicy.kernel.libbpf import BpfObject
from bpfpolicy.kinds.base import Artifact


@dataclass
class Loaded:
    artifact: Artifact
    obj: BpfObject
    attached: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def prog_fd(self) -> int:
        return self.obj.program("xdp_blocklist").fd

    def map_fd(self, name: str) -> int:
        return self.obj.map(name).fd

    def map_spec(self, name: str) -> dict[str, Any]:
        return next(m for m in self.artifact.manifest["maps"] if m["name"] == name)

    def run(self, packet: bytes, repeat: int = 1) -> bpf.TestRun:
        return bpf.prog_test_run(self.prog_fd, packet, repeat)

    def counters(self) -> dict[str, tuple[int, int]]:
        rules = self.artifact.manifest["counters"]["rules"]
        values = maps.read_counters(self.map_fd("rule_stats"), max(int(r["index"]) for r in rules) + 1)
        return {r["name"]: values[r["index"]] for r in rules}  # type: ignore[misc]

    def update(self, new: Artifact) -> dict[str, tuple[int, int]]:
        """Apply a new artifact's map contents as a delta (same program_hash required)."""
        assert new.manifest["program_hash"] == self.artifact.manifest["program_hash"]
        out = {}
        for m in new.manifest["maps"]:
            if "contents" not in m:
                continue
            old = self.artifact.files.get(m["contents"], b"")
            out[m["name"]] = maps.apply_map_contents(
                self.map_fd(m["name"]), old, new.files[m["contents"]], m["key_size"], m["value_size"],
                m["percpu"], m["type"])
        self.artifact = new
        return out

    def attach(self, ifname: str, netns: str | None, mode: str = "generic") -> str:
        used = xdp.attach(ifname, self.prog_fd, mode, netns)
        self.attached.append((ifname, netns))
        return used

    def close(self) -> None:
        for ifname, netns in self.attached:
            try:
                xdp.detach(ifname, netns)
            except OSError:
                pass
        self.obj.close()


def load(artifact: Artifact) -> Loaded:
    obj = BpfObject.open_mem(artifact.files["prog.bpf.o"], f"xdp_{artifact.name}"[:15])
    try:
        obj.load()
        for m in artifact.manifest["maps"]:
            if "contents" in m:
                maps.apply_map_contents(obj.map(m["name"]).fd, None, artifact.files[m["contents"]],
                                        m["key_size"], m["value_size"], m["percpu"], m["type"])
    except BaseException:
        obj.close()
        raise
    return Loaded(artifact, obj)
