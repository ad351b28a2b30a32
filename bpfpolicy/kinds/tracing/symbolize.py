"""Stack traces as names: kernel addresses through `/proc/kallsyms`, user addresses through
`/proc/<pid>/maps` and the mapped file's ELF symbol table (elf.py).

Both are read at decode time, in user space: the BPF program stores only a stack id
(`bpf_get_stackid`), so the names are those of the running kernel and of the process as it
is mapped *when the event is decoded*. A process that has exited by then has no maps: its
frames keep their addresses only (`symbol` absent), which the event says rather than
guessing. kallsyms shows addresses to root only (kptr_restrict); without them kernel frames
keep their addresses too.
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .elf import Elf, ElfError

STACK_DEPTH = 127  # PERF_MAX_STACK_DEPTH: the `stacks` map's value is 127 u64 addresses
# kallsyms holds ~200k lines; parsed once per decoder process (the kernel's text does not move).
KALLSYMS = "/proc/kallsyms"

StackLookup = Callable[[int], "bytes | None"]


def addresses(raw: bytes | None) -> list[int]:
    """A `stacks` map value -> its non-zero addresses, innermost first."""
    if not raw:
        return []
    ips = struct.unpack_from(f"<{len(raw) // 8}Q", raw)
    return [ip for ip in ips if ip]


@functools.lru_cache(maxsize=1)
def _kallsyms(path: str = KALLSYMS) -> tuple[list[int], list[tuple[str, str | None]]]:
    """Sorted text symbols (t/T/w/W) with their module; empty when addresses are hidden."""
    rows: list[tuple[int, str, str | None]] = []
    try:
        text = Path(path).read_text()
    except OSError:
        return [], []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] not in "tTwW":
            continue
        addr = int(parts[0], 16)
        if addr:
            rows.append((addr, parts[2], parts[3].strip("[]") if len(parts) > 3 else None))
    rows.sort()
    return [r[0] for r in rows], [(r[1], r[2]) for r in rows]


def kernel_frames(ips: list[int]) -> list[dict[str, Any]]:
    """Kernel addresses -> `{address, symbol, offset[, module]}` (Tetragon's StackTraceEntry)."""
    addrs, names = _kallsyms()
    out = []
    for ip in ips:
        frame: dict[str, Any] = {"address": f"{ip:#x}"}
        k = bisect.bisect_right(addrs, ip) - 1
        if k >= 0:
            name, module = names[k]
            frame.update(symbol=name, offset=f"{ip - addrs[k]:#x}")
            if module:
                frame["module"] = module
        out.append(frame)
    return out


def _maps(pid: int) -> list[tuple[int, int, int, str]]:
    """Executable file mappings of `pid`: (start, end, file offset, path)."""
    rows = []
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            rows.append((lo, hi, int(parts[2], 16), parts[5].strip()))
    return rows


@functools.lru_cache(maxsize=64)
def _elf_symbols(path: str, mtime_ns: int) -> Elf | None:
    """The ELF file behind a mapping (cached per path and mtime: a rebuilt binary is re-read)."""
    del mtime_ns
    try:
        return Elf.open(path)
    except (OSError, ElfError):
        return None


def user_frames(pid: int, ips: list[int]) -> list[dict[str, Any]]:
    """User addresses of `pid` -> `{address, symbol, offset, module}` through its maps."""
    maps = _maps(pid)
    out = []
    for ip in ips:
        frame: dict[str, Any] = {"address": f"{ip:#x}"}
        hit = next((m for m in maps if m[0] <= ip < m[1]), None)
        if hit is not None:
            lo, _hi, off, path = hit
            frame["module"] = path
            try:
                elf = _elf_symbols(path, Path(path).stat().st_mtime_ns)
            except OSError:
                elf = None
            sym = elf.symbol_at_offset(ip - lo + off) if elf is not None else None
            if sym is not None:
                frame.update(symbol=sym[0], offset=f"{sym[1]:#x}")
        out.append(frame)
    return out


def pinned_stacks(manifest: dict[str, Any]) -> StackLookup | None:
    """The `stacks` map of an applied policy, read through its bpffs pin: the event stream
    (`watch`'s export, `events --follow`) puts the applied artifact's map pins in its copy
    of the manifest (`pins`). The pin is opened per lookup, so a replaced policy's new map
    is read, never a stale descriptor; None when there is no pin to read."""
    pin = (manifest.get("pins") or {}).get("stacks")
    if not pin:
        return None

    def lookup(stack_id: int) -> bytes | None:
        from ...kernel import bpf

        try:
            fd = bpf.obj_get(str(pin), read_only=True)
        except OSError:
            return None  # unpinned since (destroyed, replaced): an empty trace, the ids stay
        try:
            return bpf.map_lookup(fd, stack_id.to_bytes(4, "little"), STACK_DEPTH * 8)
        except OSError:
            return None
        finally:
            os.close(fd)
    return lookup


def symbolise(out: dict[str, Any], stacks: StackLookup | None, pid: int) -> None:
    """Replace `kernel_stack_id`/`user_stack_id` with symbolised `kernel_stack_trace` /
    `user_stack_trace` when the decoder can read the `stacks` map (ids stay otherwise)."""
    if stacks is None:
        return
    if "kernel_stack_id" in out:
        out["kernel_stack_trace"] = kernel_frames(addresses(stacks(out["kernel_stack_id"])))
    if "user_stack_id" in out:
        out["user_stack_trace"] = user_frames(pid, addresses(stacks(out["user_stack_id"])))
