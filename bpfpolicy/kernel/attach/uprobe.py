"""uprobes (and USDT probes, which are uprobes at a note's address) through the uprobe
PMU: `bpf_program__attach_uprobe_opts` with the binary, the symbol or file offset and the
reference-counter (USDT semaphore) offset named by the program's SEC():
`uprobe/<path>:<symbol>` or `uprobe/<path>:+0x<offset>`, optionally `?ref_ctr=0x<offset>`.

libbpf's SEC()-derived attach cannot express an offset without a symbol or a
ref_ctr_offset at all, so uprobes get their own Attacher. The link is pinned like the
SEC()-derived ones (`auto`), so rollback, detach and drift checks are the same.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from typing import Any

from .auto import AutoAttacher
from .base import AttachRecord, SwapRequest, prog_id_of, register


class _UprobeOpts(ctypes.Structure):
    """libbpf's `struct bpf_uprobe_opts` (1.1): sz, ref_ctr_offset, bpf_cookie, retprobe,
    func_name. `sz` lets newer libbpf versions accept this older layout."""

    _fields_ = [("sz", ctypes.c_size_t), ("ref_ctr_offset", ctypes.c_size_t),
                ("bpf_cookie", ctypes.c_uint64), ("retprobe", ctypes.c_bool),
                ("func_name", ctypes.c_char_p)]


def attach_uprobe(prog: Any, binary: str, offset: int = 0, symbol: str = "",
                  ref_ctr_offset: int = 0, retprobe: bool = False, pid: int = -1) -> Any:
    """Attach a loaded `kernel.libbpf.Program`; returns its `Link`. `symbol` (resolved by
    libbpf in the binary at attach time, so a rebuilt library is followed) wins over
    `offset`, which is then added to the symbol's address."""
    from ..libbpf import BpfLoadError, Link, _Captured, lib

    so = lib()
    fn = so.bpf_program__attach_uprobe_opts
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
                   ctypes.POINTER(_UprobeOpts)]
    opts = _UprobeOpts(ctypes.sizeof(_UprobeOpts), ref_ctr_offset, 0, retprobe,
                       symbol.encode() if symbol else None)
    what = f"{binary}:{symbol or hex(offset)}" + (f" ref_ctr {hex(ref_ctr_offset)}" if ref_ctr_offset else "")
    with _Captured() as log:
        ptr = fn(prog._ptr, pid, os.fsencode(binary), offset if not symbol else 0, ctypes.byref(opts))
    if not ptr:
        err = ctypes.get_errno() or errno.EINVAL
        raise BpfLoadError(err, f"attach {prog.name} (uprobe {what}): {os.strerror(err)}", "\n".join(log))
    return Link(ptr, f"{prog.name}:uprobe {what}")


SECTION = re.compile(r"u(?P<ret>ret)?probe/(?P<path>/[^:?]+):(?:\+(?P<off>0x[0-9a-f]+)|(?P<sym>[A-Za-z0-9_.]+))"
                     r"(?:\?ref_ctr=(?P<ref>0x[0-9a-f]+))?")


def parse_section(sec: str) -> dict[str, Any]:
    """binary, symbol, offset, ref_ctr_offset, retprobe of a uprobe SEC() name."""
    m = SECTION.fullmatch(sec)
    if m is None:
        raise OSError(errno.EINVAL, f"SEC({sec!r}) names no uprobe target (uprobe/<path>:<symbol> "
                      "or uprobe/<path>:+0x<offset>)")
    return {"binary": m["path"], "symbol": m["sym"] or "", "offset": int(m["off"] or "0", 16),
            "ref_ctr_offset": int(m["ref"] or "0", 16), "retprobe": bool(m["ret"])}


def attach_section(prog: Any) -> Any:
    """Attach a loaded program at the target its SEC() names."""
    return attach_uprobe(prog, **parse_section(prog.section))


class UprobeAttacher(AutoAttacher):
    types = ("uprobe", "uretprobe")

    def swap(self, req: SwapRequest, prog: Any) -> tuple[AttachRecord, int | None]:
        link = attach_section(prog)
        link.pin(req.staging_link_pin)
        link.disconnect()
        link.close()
        rec: AttachRecord = {**req.spec, "link_pin": req.final_link_pin, "prog_id": prog_id_of(prog.fd)}
        return rec, None

    def describe(self, record: AttachRecord) -> str:
        return f"uprobe {record.get('program', '')}"


UPROBE = register(UprobeAttacher())
