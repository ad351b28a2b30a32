"""Tetragon's JSON export shape for bpfpolicy's event stream.

`to_tetragon(ev)` turns one line of `bpfpolicy events --follow` into the object
Tetragon's export file holds (`GetEventsResponse` as protojson: one event key, plus
`node_name` and `time`), so jq filters and log pipelines written for Tetragon read our
output unchanged. Field names follow tetragon.proto (`ProcessKprobe`, `ProcessTracepoint`,
`ProcessLsm`, `ProcessUprobe`, `ProcessExec`, `ProcessExit`, `KprobeArgument`,
`KprobeAction`); docs/tracing.md "Events" cites them. Lines with no Tetragon counterpart
(controller events, fork records) give None.
"""

from __future__ import annotations

import base64
import platform
import socket
from typing import Any

# our hook section -> Tetragon's event key
EVENT_KEYS = {"kprobes": "process_kprobe", "fentries": "process_kprobe", "tracepoints": "process_tracepoint",
              "lsmhooks": "process_lsm", "uprobes": "process_uprobe", "usdts": "process_usdt"}
# our action names -> the KprobeAction enum (tetragon.proto)
ACTIONS = {"Post": "KPROBE_ACTION_POST", "NoPost": "KPROBE_ACTION_NOPOST", "Sigkill": "KPROBE_ACTION_SIGKILL",
           "Override": "KPROBE_ACTION_OVERRIDE", "Signal": "KPROBE_ACTION_SIGNAL",
           "FollowFD": "KPROBE_ACTION_FOLLOWFD", "UnfollowFD": "KPROBE_ACTION_UNFOLLOWFD",
           "CopyFD": "KPROBE_ACTION_COPYFD", "TrackSock": "KPROBE_ACTION_TRACKSOCK",
           "UntrackSock": "KPROBE_ACTION_UNTRACKSOCK", "NotifyEnforcer": "KPROBE_ACTION_NOTIFYENFORCER"}
# argument type -> KprobeArgument oneof key, for scalar values
SCALAR_KEYS = {"int": "int_arg", "int8": "int_arg", "int16": "int_arg", "int32": "int_arg", "fd": "int_arg",
               "uint8": "uint_arg", "uint16": "uint_arg", "uint32": "uint_arg", "uint64": "size_arg",
               "size_t": "size_arg", "long": "long_arg", "int64": "long_arg", "s64": "long_arg",
               "u64": "size_arg", "u32": "uint_arg", "s32": "int_arg", "auto": "int_arg"}
SYSCALL_PREFIX = {"x86_64": "__x64_", "aarch64": "__arm64_", "arm64": "__arm64_"}
# the symbolised stacks (symbolize.py) each event key has (repeated StackTraceEntry)
STACK_TRACES = {"process_kprobe": ("kernel_stack_trace", "user_stack_trace"),
                "process_uprobe": ("user_stack_trace",)}


def to_tetragon(ev: dict[str, Any], node_name: str | None = None) -> dict[str, Any] | None:
    """One bpfpolicy stream line -> Tetragon's export object (None: nothing to export)."""
    if ev.get("source", "kernel") != "kernel" or ev.get("error"):
        return None
    node = node_name or socket.gethostname()
    kind = ev.get("event")
    if kind in ("process_exec", "process_exit"):
        body = {k: ev[k] for k in ("process", "parent") if k in ev}
        if kind == "process_exit":
            body |= {"signal": ev.get("signal", ""), "status": ev.get("status", 0), "time": _nanos(ev.get("time"))}
        return {kind: body, "node_name": node, "time": _nanos(ev.get("time"))}
    key = EVENT_KEYS.get(str(ev.get("section")))
    if key is None:
        return None
    return {key: _hook_body(key, ev), "node_name": node, "time": _nanos(ev.get("time"))}


def _hook_body(key: str, ev: dict[str, Any]) -> dict[str, Any]:
    """process/parent, the hook's identity in the key's own fields, args, action, policy."""
    body: dict[str, Any] = {k: ev[k] for k in ("process", "parent") if k in ev}
    hook = str(ev.get("hook") or "")
    if key == "process_tracepoint":
        body["subsys"], _, body["event"] = hook.partition("/")
    elif key in ("process_uprobe", "process_usdt"):
        body["path"], _, body["symbol"] = hook.rpartition(":") if ":" in hook else ("", "", hook)
    else:
        body["function_name"] = function_name(hook)
    body["args"] = [a for a in map(argument, ev.get("args") or []) if a is not None]
    if "return" in ev:
        body["return"] = {SCALAR_KEYS.get(str(ev.get("return_type") or "int"), "int_arg"): ev["return"]}
    body["action"] = action(ev.get("action") or ["Post"])
    for trace in STACK_TRACES.get(key, ()):
        if ev.get(trace):
            body[trace] = [stack_entry(f) for f in ev[trace]]
    body["policy_name"] = str(ev.get("policy") or "").split("/", 1)[-1]
    if ev.get("message"):
        body["message"] = ev["message"]
    if ev.get("tags"):
        body["tags"] = list(ev["tags"])
    return body


def function_name(call: str, arch: str | None = None) -> str:
    """Tetragon names a syscall kprobe by its arch entry point (`__x64_sys_openat`)."""
    prefix = SYSCALL_PREFIX.get(arch or platform.machine(), "")
    return prefix + call if call.startswith("sys_") else call


def action(actions: list[str]) -> str:
    """Tetragon reports one action, the last one run (do_action sets msg->action each time;
    docs/upstream.md §2.3): the flat event lists it last (events.action_names)."""
    return ACTIONS.get(actions[-1] if actions else "Post", "KPROBE_ACTION_UNKNOWN")


def argument(arg: dict[str, Any]) -> dict[str, Any] | None:
    """Our `{index, type, label, value}` -> a KprobeArgument (`{"<type>_arg": value, label}`)."""
    typ, value = str(arg.get("type") or "auto"), arg.get("value")
    if typ in ("file", "path", "linux_binprm") or (typ == "fd" and isinstance(value, str)):
        out: dict[str, Any] = {f"{'path' if typ == 'path' else 'file' if typ != 'linux_binprm' else 'linux_binprm'}_arg":
                               {"path": value}}
    elif typ in ("string", "char_iovec", "filename") or (isinstance(value, str) and typ not in SCALAR_KEYS):
        out = {"string_arg": value}
    elif typ == "char_buf":
        out = {"bytes_arg": base64.b64encode(bytes.fromhex(str(value or ""))).decode()}
    elif isinstance(value, dict) and "dport" in value:
        out = {"sock_arg": value}
    elif isinstance(value, dict) and "cap_effective" in value:
        out = {"process_credentials_arg": value}
    elif isinstance(value, dict) and "ns_inum" in value:
        out = {"user_ns_arg": {"level": value["level"], "uid": value["owner"], "ns": {"inum": value["ns_inum"]}}}
    elif isinstance(value, int):
        out = {SCALAR_KEYS.get(typ, "int_arg"): value}
    else:
        return None
    if arg.get("label"):
        out["label"] = arg["label"]
    return out


def stack_entry(frame: dict[str, Any]) -> dict[str, Any]:
    """Our `{address, symbol, offset, module}` (hex strings) -> a StackTraceEntry; its
    uint64 fields as protojson prints them (decimal strings), empty fields left out."""
    out: dict[str, Any] = {"address": str(int(str(frame["address"]), 16))}
    if frame.get("offset"):
        out["offset"] = str(int(str(frame["offset"]), 16))
    for k in ("symbol", "module"):
        if frame.get(k):
            out[k] = frame[k]
    return out


def _nanos(iso: Any) -> str:
    """RFC 3339 with nanoseconds, as protojson prints google.protobuf.Timestamp."""
    s = str(iso or "")
    if not s.endswith("Z") or "." not in s:
        return s
    head, frac = s[:-1].split(".", 1)
    return f"{head}.{frac[:9].ljust(9, '0')}Z"
