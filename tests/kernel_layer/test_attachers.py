"""Every `Attacher` in `kernel/attach/` against the real kernel, driven the way
`controller/apply.py` drives it: swap with a staging link pin that commit renames over
the final pin, roll back, detach — with tiny clang-built programs in a throwaway netns
(veth pair, real pings) or cgroup.

One row per hook: what it attaches, whether a swap reports the replaced program (the
link-per-version `auto` attacher does not: its old link goes with the old pin), whether
real traffic shows the swap, and the `describe()` text.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.kernel_fixtures import require_kernel

PROGRAMS_C = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int xdp_pass(struct xdp_md *c) { return XDP_PASS; }
SEC("xdp") int xdp_drop(struct xdp_md *c) { return XDP_DROP; }
SEC("tc") int tc_ok(struct __sk_buff *s) { return TC_ACT_OK; }
SEC("tc") int tc_shot(struct __sk_buff *s) { return TC_ACT_SHOT; }
SEC("cgroup_skb/ingress") int cg_allow(struct __sk_buff *s) { return 1; }
SEC("cgroup_skb/ingress") int cg_deny(struct __sk_buff *s) { return 0; }
SEC("tracepoint/syscalls/sys_enter_getppid") int tp_one(void *c) { return 0; }
SEC("tracepoint/syscalls/sys_enter_getppid") int tp_two(void *c) { return 0; }
char LICENSE[] SEC("license") = "GPL";
"""
OWNER = "Test/attachers"


@dataclass(frozen=True)
class Hook:
    """One row: attachment spec (built from the fixtures), the two programs swapped,
    whether swap reports the replaced id, whether pings show it, describe() text."""

    name: str
    spec: Callable[[object, str], dict[str, object]]  # (veth pair, cgroup dir) -> spec
    first: str
    second: str
    reports_replaced: bool
    traffic: bool
    describe: Callable[[object, str], str]
    env: dict[str, str] = field(default_factory=dict)


def _iface(t: str, **kw: object) -> Callable[[object, str], dict[str, object]]:
    return lambda v, cg: {"type": t, "interface": v.if_a, "netns": v.ns_a, **kw}  # type: ignore[attr-defined]


HOOKS = [
    Hook("xdp", _iface("xdp", mode="generic", program="p"), "xdp_pass", "xdp_drop", True, True,
         lambda v, cg: f"xdp {v.if_a}@{v.ns_a}"),  # type: ignore[attr-defined]
    Hook("tcx", _iface("tc", direction="ingress", program="p"), "tc_ok", "tc_shot", True, True,
         lambda v, cg: f"tc/ingress {v.if_a}@{v.ns_a}"),  # type: ignore[attr-defined]
    Hook("tc-clsact", _iface("tc", direction="ingress", program="p"), "tc_ok", "tc_shot", True, True,
         lambda v, cg: f"tc/ingress {v.if_a}@{v.ns_a}", env={"BPFPOLICY_TC_MECHANISM": "tc"}),  # type: ignore[attr-defined]
    Hook("cgroup_skb", lambda v, cg: {"type": "cgroup_skb", "cgroup": cg, "direction": "ingress", "program": "p"},
         "cg_allow", "cg_deny", True, False, lambda v, cg: f"cgroup_skb/ingress {cg}"),
    Hook("auto (tracepoint)", lambda v, cg: {"type": "tracepoint", "program": "tp_one"},
         "tp_one", "tp_two", False, False, lambda v, cg: "tracepoint tp_one"),
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def object_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    require_kernel()
    if shutil.which("clang") is None:
        pytest.skip("clang not installed (scripts/setup.sh installs it)")
    src = tmp_path_factory.mktemp("attachers") / "p.c"
    src.write_text(PROGRAMS_C)
    out = src.with_suffix(".o")
    arch_includes = f"/usr/include/{platform.machine()}-linux-gnu"  # <asm/types.h> on Debian
    subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-I", arch_includes, "-c", str(src), "-o", str(out)],
                   check=True)
    return out.read_bytes()


@pytest.fixture
def load(object_bytes: bytes) -> Iterator[Callable[[str], object]]:
    """Load a fresh copy of the object (new program ids) and hand out one program."""
    from bpfpolicy.kernel.libbpf import BpfObject

    opened: list[BpfObject] = []

    def program(name: str) -> object:
        obj = BpfObject.open_mem(object_bytes, name="attachers")
        opened.append(obj)
        obj.load()
        return obj.program(name)

    yield program
    for obj in opened:
        obj.close()


@pytest.fixture
def cgroup_dir() -> Iterator[str]:
    """A throwaway child of the cgroup v2 root."""
    from bpfpolicy.kernel.probe import cgroup2_root

    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 mount")
    cg = root / f"bpfpolicy-attachers-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        yield str(cg)
    finally:
        os.rmdir(cg)


@dataclass
class Slot:
    """One attachment point, swapped the way controller/apply.py swaps: a new link is
    pinned in a staging dir and renamed over the final pin at commit."""

    spec: dict[str, object]
    pins: Path
    record: dict[str, object] | None = None

    @property
    def attacher(self):  # noqa: ANN201 - kernel.attach.base.Attacher
        from bpfpolicy.kernel.attach import attacher_for

        return attacher_for(self.spec)  # type: ignore[arg-type]

    def swap(self, prog: object, *, commit: bool = True, is_ours: Callable[[int], bool] = lambda _: True,
             ) -> tuple[dict[str, object], int | None]:
        from bpfpolicy.kernel.attach import SwapRequest

        (self.pins / "stage").mkdir(exist_ok=True)
        staging, final = self.pins / "stage" / "link_0", self.pins / "link_0"
        req = SwapRequest(spec={**self.spec, "index": 0}, previous=self.record,  # type: ignore[arg-type]
                          staging_link_pin=str(staging), final_link_pin=str(final), is_ours=is_ours, owner=OWNER)
        rec, old = self.attacher.swap(req, prog)
        if staging.exists():
            if commit:
                os.replace(staging, final)
            else:  # apply's failure path: the stage is removed, with any link pinned there
                staging.unlink()
        if commit:
            self.record = rec
        return rec, old

    def ids(self, record: dict[str, object] | None = None) -> list[int]:
        return self.attacher.attached_prog_ids(record or self.record)


def _prog_id(prog: object) -> int:
    from bpfpolicy.kernel import bpf

    return int(bpf.prog_info(prog.fd)["id"])  # type: ignore[attr-defined]


def _ping(veth: object) -> bool:
    """One echo from the peer namespace to the attached side (an ingress hook sees it)."""
    proc = subprocess.run(["ip", "netns", "exec", veth.ns_b, "ping", "-c1", "-W1", "-q", veth.ip4_a],  # type: ignore[attr-defined]
                          capture_output=True)
    return proc.returncode == 0


# --------------------------------------------------------------------------- tests


@pytest.mark.kernel
@pytest.mark.parametrize("hook", HOOKS, ids=[h.name for h in HOOKS])
def test_attacher_swaps_reports_rolls_back_and_detaches(hook: Hook, veth_pair: object, cgroup_dir: str,
                                                        bpffs_dir: str, load: Callable[[str], object],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in hook.env.items():
        monkeypatch.setenv(k, v)
    slot = Slot(hook.spec(veth_pair, cgroup_dir), Path(bpffs_dir))
    a, b = load(hook.first), load(hook.second)
    ida, idb = _prog_id(a), _prog_id(b)

    first, replaced = slot.swap(a)
    assert replaced is None and first["prog_id"] == ida and slot.ids() == [ida]
    assert slot.attacher.describe(first) == hook.describe(veth_pair, cgroup_dir)
    if hook.name.startswith("tc"):
        assert first["tc"]["mechanism"] == ("tc" if hook.env else "tcx")  # type: ignore[index]
    if hook.traffic:
        assert _ping(veth_pair), "the pass program lets the echo through"

    second, replaced = slot.swap(b)
    assert second["prog_id"] == idb and slot.ids() == [idb]
    assert replaced == (ida if hook.reports_replaced else None)
    if hook.traffic:
        assert not _ping(veth_pair), "the swapped-in drop program runs"

    slot.attacher.rollback(second, replaced)
    want_after_rollback = [ida] if hook.reports_replaced else [idb]  # auto: nothing to put back
    assert slot.ids(second) == want_after_rollback
    if hook.traffic:
        assert _ping(veth_pair), "rollback put the pass program back"

    current = first if hook.reports_replaced else second  # the inventory's record after rollback
    slot.attacher.detach(current)
    assert slot.ids(current) == []
    if hook.traffic:
        assert _ping(veth_pair)


@pytest.mark.kernel
@pytest.mark.parametrize("hook", HOOKS, ids=[h.name for h in HOOKS])
def test_rolling_back_a_first_attach_leaves_the_hook_empty(hook: Hook, veth_pair: object, cgroup_dir: str,
                                                           bpffs_dir: str, load: Callable[[str], object],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """apply's failure path on a new policy: swap, then rollback(record, None) and the
    staging pins removed — nothing of ours may stay attached."""
    for k, v in hook.env.items():
        monkeypatch.setenv(k, v)
    slot = Slot(hook.spec(veth_pair, cgroup_dir), Path(bpffs_dir))
    prog = load(hook.second)
    rec, replaced = slot.swap(prog, commit=False)
    assert replaced is None
    slot.attacher.rollback(rec, None)
    assert slot.ids(rec) == []
    if hook.traffic:
        assert _ping(veth_pair), "the drop program is gone"


@pytest.mark.kernel
def test_a_foreign_xdp_program_is_never_replaced(veth_pair: object, bpffs_dir: str,
                                                 load: Callable[[str], object]) -> None:
    from bpfpolicy.kernel import xdp
    from bpfpolicy.kernel.attach.base import AttachConflict

    foreign, ours = load("xdp_drop"), load("xdp_pass")
    xdp.attach(veth_pair.if_a, foreign.fd, "generic", veth_pair.ns_a)  # type: ignore[attr-defined]
    slot = Slot(HOOKS[0].spec(veth_pair, ""), Path(bpffs_dir))
    with pytest.raises(AttachConflict, match=rf"runs XDP program {_prog_id(foreign)}, which bpfpolicy did not"):
        slot.swap(ours, is_ours=lambda pid: False)
    assert slot.ids({**slot.spec}) == [_prog_id(foreign)]
    assert not _ping(veth_pair), "the foreign drop program still runs"
