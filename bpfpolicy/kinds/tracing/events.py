"""The TracingPolicy ring-buffer event (`tracing_event_v1`): its layout, as written into
manifest.json, and a decoder `bpfpolicy events` uses to print JSON lines.

The C side is `struct tp_event` in codegen/templates/tracing_policy.bpf.c.j2; a test compiles the
template and checks these offsets against the object's BTF-free layout by decoding a
real event, so the two cannot drift silently.
"""

from __future__ import annotations

import struct
import time
from typing import Any

from . import spec as S
from .symbolize import StackLookup, pinned_stacks, symbolise

STR = S.CAPTURE_STRING
ARG_SIZE = 8 + 4 + 4 + STR
HEADER = struct.Struct("<QIIIIiIq16sII")  # time .. nargs
ARG = struct.Struct(f"<qII{STR}s")
ARG_KINDS = {0: "none", 1: "int", 2: "uint", 3: "string", 4: "path", 5: "bytes", 6: "sock",
             7: "cred", 8: "user_namespace"}
CREDINFO = struct.Struct("<IIIIQQQ")  # struct tp_credinfo
USERNSINFO = struct.Struct("<iII")  # struct tp_usernsinfo
SOCKINFO = struct.Struct("<HHHHI16s16s")  # struct tp_sockinfo
MONITOR_BIT = 31
TRUNCATED_BIT = 30  # a selector failed closed on a string longer than MAX_MATCH_STRING
DATA_HDR = struct.Struct("<QIIIIQ")  # maxData after the event: struct tp_data_hdr (capture.j2)


def event_layout() -> dict[str, Any]:
    binary_off = HEADER.size
    args_off = binary_off + STR
    stacks_off = args_off + S.MAX_ARGS * ARG_SIZE
    return {
        "size": stacks_off + 8,
        "clock": "CLOCK_MONOTONIC (bpf_ktime_get_ns)",
        "fields": {
            "time_ns": [0, "u64"], "pid": [8, "u32"], "tid": [12, "u32"], "uid": [16, "u32"],
            "hook": [20, "u32"], "selector": [24, "s32"], "actions": [28, "u32 bitmask of 1<<action id; bits 16-20 = last action id + 1; bit 31 = monitor; bit 30 = truncated"],
            "ret": [32, "s64"], "comm": [40, "char[16]"], "binary_len": [56, "u32"],
            "nargs": [60, "u32"], "binary": [binary_off, f"char[{STR}]"],
            "kernel_stack": [stacks_off, "s32 id in map `stacks`, -1 = none"],
            "user_stack": [stacks_off + 4, "s32 id in map `stacks`, -1 = none"],
        },
        "args": {"offset": args_off, "count": S.MAX_ARGS, "stride": ARG_SIZE,
                 "fields": {"ival": [0, "s64"], "len": [8, "u32"], "kind": [12, "u32"],
                            "buf": [16, f"char[{STR}]"]},
                 "kinds": ARG_KINDS},
        "actions": {str(v): k for k, v in S.ACTIONS.items()},
    }


def action_names(actions: int) -> list[str]:
    """The matched selector's actions, the last one run last (Tetragon's `action` is that
    one: spec.LAST_ACTION_SHIFT); no bits (a hook without selectors) is Post."""
    names = [name for name, bit in S.ACTIONS.items() if actions & (1 << bit)]
    last = ((actions & S.LAST_ACTION_MASK) >> S.LAST_ACTION_SHIFT) - 1
    by_id = {bit: name for name, bit in S.ACTIONS.items()}
    if last in by_id and by_id[last] in names:
        names = [n for n in names if n != by_id[last]] + [by_id[last]]
    return names or ["Post"]


def _cstr(raw: bytes, n: int | None = None) -> str:
    raw = raw[:n] if n is not None else raw.split(b"\0", 1)[0]
    return raw.decode(errors="replace")


def decode_event(raw: bytes, manifest: dict[str, Any], boot_offset_ns: int | None = None,
                 stacks: StackLookup | None = None) -> dict[str, Any]:
    """One ring-buffer record -> the JSON object `bpfpolicy events` prints. With `stacks`
    (stack id -> the `stacks` map's value) stack ids become symbolised traces (symbolize.py)."""
    (t, pid, tid, uid, hook, selector, actions, ret, comm, binary_len, nargs) = HEADER.unpack_from(raw, 0)
    layout = manifest.get("events") or {}
    hooks = layout.get("hooks") or []
    meta = hooks[hook] if hook < len(hooks) else {}
    if boot_offset_ns is None:
        boot_offset_ns = time.time_ns() - time.monotonic_ns()
    out: dict[str, Any] = {
        "time": _iso(t + boot_offset_ns),
        "policy": (manifest.get("metadata") or {}).get("policy"),
        "hook": meta.get("name", hook), "hook_path": meta.get("path"),
        "pid": pid, "tid": tid, "uid": uid, "comm": _cstr(comm),
        "binary": _cstr(raw[HEADER.size:HEADER.size + STR], min(binary_len, STR - 1)),
        "selector": selector if selector >= 0 else None,
        "action": action_names(actions),
        "monitor": bool(actions & (1 << MONITOR_BIT)),
        # A matched string was too long to compare (tracing_policy.bpf.c.j2 TP_TRUNCATED):
        # the selector failed closed, so its actions ran without a full comparison.
        "truncated": bool(actions & (1 << TRUNCATED_BIT)),
        "args": [],
    }
    if meta.get("return"):
        out["return"] = ret
        if meta.get("return_type"):
            out["return_type"] = meta["return_type"]  # returnArg's type (Tetragon's return oneof)
    stacks_off = HEADER.size + STR + S.MAX_ARGS * ARG_SIZE
    if len(raw) >= stacks_off + 8:
        kstack, ustack = struct.unpack_from("<ii", raw, stacks_off)
        if kstack >= 0:
            out["kernel_stack_id"] = kstack
        if ustack >= 0:
            out["user_stack_id"] = ustack
        if stacks is None and ("kernel_stack_id" in out or "user_stack_id" in out):
            stacks = pinned_stacks(manifest)  # the event stream: the applied policy's pinned map
        symbolise(out, stacks, pid)
    specs = meta.get("args") or []
    by_slot: dict[int, dict[str, Any]] = {}
    base = HEADER.size + STR
    for k in range(min(nargs, S.MAX_ARGS)):
        ival, length, kind, buf = ARG.unpack_from(raw, base + k * ARG_SIZE)
        spec = specs[k] if k < len(specs) else {}
        arg: dict[str, Any] = {"index": spec.get("index", k), "type": spec.get("type")}
        if spec.get("label"):
            arg["label"] = spec["label"]
        name = ARG_KINDS.get(kind, "none")
        if name in ("int", "uint"):
            arg["value"] = ival if name == "int" else ival & 0xFFFFFFFFFFFFFFFF
            if spec.get("type") == "fd":
                _resolve_fd(arg, pid, ival)
        elif name in ("string", "path"):
            arg["value"] = _cstr(buf, min(length, STR - 1))
        elif name == "sock":
            arg["value"] = _sockinfo(buf)
        elif name == "cred":
            uid, gid, euid, egid, eff, perm, inh = CREDINFO.unpack_from(buf, 0)
            arg["value"] = {"uid": uid, "gid": gid, "euid": euid, "egid": egid,
                            "cap_effective": f"{eff:#x}", "cap_permitted": f"{perm:#x}",
                            "cap_inheritable": f"{inh:#x}"}
        elif name == "user_namespace":
            level, owner, inum = USERNSINFO.unpack_from(buf, 0)
            arg["value"] = {"level": level, "owner": owner, "ns_inum": inum}
        elif name == "bytes":
            arg["value"] = buf[:min(length, STR)].hex()
            arg["size"] = ival
        else:
            continue
        out["args"].append(arg)
        by_slot[k] = arg
    _max_data(raw, by_slot)
    return with_process(out, meta, pid, t)


def _max_data(raw: bytes, by_slot: dict[int, dict[str, Any]]) -> None:
    """maxData: the record goes on after the event with one argument's data (up to
    capture.MAX_DATA bytes); it replaces the TP_STR_MAX bytes the event kept."""
    end = event_layout()["size"]
    if len(raw) < end + DATA_HDR.size:
        return
    _t, _hook, slot, n, flags, size = DATA_HDR.unpack_from(raw, end)
    arg = by_slot.get(slot)
    if arg is None:
        return
    data = raw[end + DATA_HDR.size:end + DATA_HDR.size + n]
    if "size" in arg:
        arg["value"] = data.hex()
        arg["size"] = size
    else:
        arg["value"] = data.decode(errors="replace")
    arg["max_data"] = len(data)
    arg["truncated"] = bool(flags & 1)


def with_process(out: dict[str, Any], meta: dict[str, Any], pid: int, ktime: int) -> dict[str, Any]:
    """The hook's section (Tetragon's event type), message and tags, and the `process` /
    `parent` blocks of the process cache (docs/tracing.md "Events")."""
    from .process_cache import shared

    out.setdefault("section", meta.get("section"))
    if meta.get("message"):
        out.setdefault("message", meta["message"])
    if meta.get("tags"):
        out.setdefault("tags", list(meta["tags"]))
    return out | shared().blocks(pid, ktime)


def decode_process(raw: bytes, manifest: dict[str, Any]) -> dict[str, Any]:
    """A process-sensor record (layout `tracing_process_v1`) fed to the shared cache:
    exec/exit -> `process_exec` / `process_exit` events; fork -> a `process_fork` line
    (only links the cache; the Tetragon formatter drops it)."""
    from .process import decode_record
    from .process_cache import shared

    rec = decode_record(raw)
    cache = shared()
    ev = cache.feed(rec)
    if ev is None:
        ev = {"event": "process_fork", "pid": rec["pid"], "ppid": rec["ppid"]}
    return {"time": _iso(rec["ktime"] + cache.boot_offset_ns), **ev}


def _resolve_fd(arg: dict[str, Any], pid: int, fd: int) -> None:
    """An `fd` argument -> its path from /proc/<pid>/fd/<n>, read when the event is decoded
    (Tetragon resolves in the kernel at the hook). The process must still be alive and the
    fd not reused since: `resolved_at: decode` says so; an unresolvable fd stays a number."""
    import os

    if fd < 0 or pid <= 0:
        return
    try:
        path = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return
    arg.update(value=path, fd=fd, resolved_at="decode")


def _sockinfo(buf: bytes) -> dict[str, Any]:
    import ipaddress

    family, proto, sport, dport, state, saddr, daddr = SOCKINFO.unpack_from(buf, 0)
    out: dict[str, Any] = {"family": family, "protocol": proto, "sport": sport, "dport": dport,
                           "state": state}
    if family == 2:
        out.update(saddr=str(ipaddress.IPv4Address(saddr[:4])), daddr=str(ipaddress.IPv4Address(daddr[:4])))
    elif family == 10:
        out.update(saddr=str(ipaddress.IPv6Address(saddr)), daddr=str(ipaddress.IPv6Address(daddr)))
    return out


def _iso(ns: int) -> str:
    secs, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rem // 1_000_000:03d}Z"
