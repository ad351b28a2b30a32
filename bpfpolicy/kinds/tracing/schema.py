"""Builds the two TracingPolicy JSON Schemas (native and Tetragon's `cilium.io/v1alpha1`).

Both schemas describe Tetragon's full field set so every real field is *recognised*;
whether bpfpolicy implements a field is decided by the semantic checks, which can say
precisely why (an "unknown field" error would be wrong for a valid Tetragon policy).
Operator, action and type names are plain strings here: the checker answers a typo with
a did-you-mean that knows Tetragon's docs-vs-code spellings.

Regenerate with `python -m bpfpolicy.kinds.tracing.schema` (a test checks they are current).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...resources import SCHEMAS_DIR

NATIVE_FILE = "tracingpolicy.json"
FOREIGN_FILE = "tetragon-tracingpolicy.json"


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), desc: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = list(required)
    if desc:
        out["description"] = desc
    return out


def _s(desc: str, **kw: Any) -> dict[str, Any]:
    return {"type": "string", "description": desc, **kw}


def _i(desc: str, **kw: Any) -> dict[str, Any]:
    return {"type": "integer", "description": desc, **kw}


def _b(desc: str) -> dict[str, Any]:
    return {"type": "boolean", "description": desc}


def _list(item: dict[str, Any] | str, desc: str, **kw: Any) -> dict[str, Any]:
    items = {"$ref": f"#/$defs/{item}"} if isinstance(item, str) else item
    return {"type": "array", "description": desc, "items": items, **kw}


SCALAR_VALUE = {"type": ["string", "integer"], "description": "a value (strings; integers are accepted and read as their decimal text)"}


def definitions() -> dict[str, Any]:
    arg = _obj({
        "index": _i("0-based argument index (tracepoints: field index in the format file, counting common_* fields)", minimum=0),
        "type": _s("argument type, e.g. int, string, file, path, char_buf (docs/upstream.md §2.1)"),
        "sizeArgIndex": _i("1-based index of the argument holding this buffer's size", minimum=0),
        "returnCopy": _b("copy the buffer again when the function returns"),
        "maxData": _b("read up to the large char_buf limit"),
        "label": _s("name shown in events"),
        "resolve": _s("BTF path to dereference from the argument, e.g. mm.owner.comm"),
        "btfType": _s("BTF type of the argument for resolve"),
        "source": _s("where a data argument comes from (pt_regs, current_task)"),
    }, ("index",), "one captured argument")
    arg_selector = _obj({
        "index": _i("argument index the operator applies to", minimum=0),
        "args": _list({"type": "integer", "minimum": 0}, "argument indexes (CelExpr)"),
        "operator": _s("operator: Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix, GT, LT, Mask, In, NotIn, InMap, ..."),
        "values": _list(SCALAR_VALUE, "values the argument is compared with"),
    }, ("operator",), "an argument filter")
    pid_selector = _obj({
        "operator": _s("In or NotIn"),
        "values": _list({"type": "integer", "minimum": 0}, "PIDs", maxItems=64),
        "isNamespacePID": _b("compare the PID as seen in the process' own PID namespace"),
        "followForks": _b("also match the children of matching processes"),
    }, ("operator", "values"), "a PID filter")
    binary_selector = _obj({
        "operator": _s("In, NotIn, Prefix, NotPrefix, Postfix, NotPostfix"),
        "values": _list({"type": "string"}, "executable paths"),
        "followChildren": _b("also match the children of matching binaries"),
    }, ("operator", "values"), "an executable filter")
    ns_selector = _obj({
        "namespace": _s("Uts, Ipc, Mnt, Pid, PidForChildren, Net, Time, TimeForChildren, Cgroup, User"),
        "operator": _s("In or NotIn"),
        "values": _list(SCALAR_VALUE, "namespace inode numbers, or host_ns"),
    }, ("namespace", "operator", "values"), "a namespace filter")
    ns_change_selector = _obj({
        "operator": _s("In or NotIn"),
        "values": _list({"type": "string"}, "namespaces"),
    }, ("operator", "values"), "a namespace-change filter")
    cap_selector = _obj({
        "type": _s("Effective, Inheritable or Permitted"),
        "operator": _s("In or NotIn"),
        "isNamespaceCapability": _b("capability relative to the user namespace"),
        "values": _list({"type": "string"}, "capability names, e.g. CAP_SYS_ADMIN"),
    }, ("operator", "values"), "a capability filter")
    action = _obj({
        "action": _s("Post, NoPost, Sigkill, Signal, Override, GetUrl, DnsLookup, TrackSock, UntrackSock, NotifyEnforcer, CleanupEnforcerNotification, Set"),
        "argFd": _i("(removed FollowFD) fd argument index"),
        "argName": _i("(removed FollowFD) name argument index"),
        "argError": _i("error returned by Override (and NotifyEnforcer); an int32 in Tetragon",
                       minimum=-2**31, maximum=2**31 - 1),
        "argSig": _i("signal sent by Signal (and NotifyEnforcer)", minimum=0, maximum=2**32 - 1),
        "argSock": _i("socket argument index for TrackSock/UntrackSock", minimum=0),
        "argUrl": _s("URL fetched by GetUrl"),
        "argFqdn": _s("name resolved by DnsLookup"),
        "argIndex": _i("argument index written by Set", minimum=0),
        "argValue": _i("value written by Set"),
        "kernelStackTrace": _b("attach a kernel stack trace to Post events"),
        "userStackTrace": _b("attach a user stack trace to Post events"),
        "imaHash": _b("attach the IMA hash of a file argument to Post events"),
        "rateLimit": {"type": ["string", "integer"], "description": "at most one event per interval: N (seconds), Ns, Nm or Nh"},
        "rateLimitScope": _s("thread, process or global"),
        "enforcerNotifyActionArg": _i("argument passed to the enforcer"),
    }, ("action",), "an action run when the selector matches")
    selector = _obj({
        "matchPIDs": _list("pidSelector", "PID filters"),
        "matchArgs": _list("argSelector", "argument filters"),
        "matchData": _list("argSelector", "data filters"),
        "matchReturnArgs": _list("argSelector", "return value filters"),
        "matchBinaries": _list("binarySelector", "executable filters"),
        "matchParentBinaries": _list("binarySelector", "parent executable filters"),
        "matchNamespaces": _list("nsSelector", "namespace filters"),
        "matchNamespaceChanges": _list("nsChangeSelector", "namespace-change filters"),
        "matchCapabilities": _list("capSelector", "capability filters"),
        "matchCapabilityChanges": _list("capSelector", "capability-change filters"),
        "matchActions": _list("action", "actions when the selector matches (default Post)"),
        "matchReturnActions": _list("action", "actions at function return"),
        "macros": _list({"type": "string"}, "names of spec.selectorsMacros merged into this selector"),
    }, (), "a selector: all its filters must match; the first matching selector's actions run")
    common_hook = {
        "args": _list("arg", "arguments to capture"),
        "data": _list("arg", "extra data to capture"),
        "selectors": _list("selector", "selectors (OR); none means Post every call"),
        "message": _s("message shown in events"),
        "tags": _list({"type": "string"}, "tags shown in events"),
    }
    kprobe = _obj({
        "call": _s("kernel function, sys_X for syscalls, or list:NAME"),
        "syscall": {**_b("the function is a syscall (arguments read from the inner pt_regs); Tetragon's CRD default is true"), "default": True},
        "return": _b("report at function return, with returnArg"),
        "returnArg": {"$ref": "#/$defs/arg"},
        "returnArgAction": _s("TrackSock or UntrackSock on the returned socket"),
        "ignore": _obj({"callNotFound": _b("skip the hook when the function does not exist")}, desc="what to ignore"),
        **common_hook,
    }, ("call",), "a kernel function hook")
    tracepoint = _obj({
        "subsystem": _s("tracepoint subsystem, e.g. syscalls"),
        "event": _s("tracepoint event, e.g. sys_enter_openat"),
        "raw": _b("attach as a raw tracepoint (args are the tracepoint's C arguments)"),
        **common_hook,
    }, ("subsystem", "event"), "a kernel tracepoint hook")
    lsmhook = _obj({"hook": _s("LSM hook name without security_, e.g. file_open"), **common_hook},
                   ("hook",), "a BPF LSM hook")
    uprobe = _obj({
        "path": _s("executable or library path"),
        "symbols": _list({"type": "string"}, "symbols to probe"),
        "offsets": _list({"type": "integer", "minimum": 0}, "offsets to probe"),
        "refCtrOffsets": _list({"type": "integer", "minimum": 0}, "reference counter offsets"),
        "addrs": _list({"type": "integer", "minimum": 0}, "addresses to probe"),
        "btfPath": _s("BTF of the binary"),
        "return": _b("report at function return"),
        "returnArg": {"$ref": "#/$defs/arg"},
        "preload": _b("preload"),
        **common_hook,
    }, ("path",), "a user-space probe")
    usdt = _obj({
        "path": _s("executable path"),
        "provider": _s("USDT provider"),
        "name": _s("USDT name"),
        **common_hook,
    }, ("path", "provider", "name"), "a user-space static tracepoint")
    label_selector = {
        "type": "object", "additionalProperties": False, "description": "a Kubernetes label selector",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array", "items": _obj({
                "key": _s("label key"), "operator": _s("In, NotIn, Exists, DoesNotExist"),
                "values": _list({"type": "string"}, "values")}, ("key", "operator"))},
        },
    }
    spec = _obj({
        "kprobes": _list("kprobe", "kernel function hooks"),
        "tracepoints": _list("tracepoint", "tracepoint hooks"),
        "lsmhooks": _list("lsmhook", "BPF LSM hooks"),
        "uprobes": _list("uprobe", "user-space probes"),
        "usdts": _list("usdt", "user-space static tracepoints"),
        "fentries": _list("kprobe", "fentry hooks (kprobe schema)"),
        "loader": _b("report loaded libraries"),
        "lists": _list(_obj({
            "name": _s("list name, used as list:NAME"),
            "values": _list({"type": "string"}, "functions or syscalls"),
            "type": _s("syscalls, generated_syscalls, generated_ftrace"),
            "pattern": _s("regex for generated_ftrace"),
            "validated": _b("set by Tetragon"),
        }, ("name",)), "named lists of functions"),
        "enforcers": _list(_obj({"calls": _list({"type": "string"}, "syscalls to enforce on")}, ("calls",)), "enforcers"),
        "options": _list(_obj({"name": _s("option name"), "value": _s("option value")}, ("name",)), "policy options"),
        "podSelector": label_selector,
        "containerSelector": label_selector,
        "hostSelector": label_selector,
        "nodeSelector": label_selector,
        "selectorsMacros": {"type": "object", "description": "named selectors for `macros`",
                            "additionalProperties": {"$ref": "#/$defs/selector"}},
    }, (), "Tetragon TracingPolicySpec")
    return {
        "arg": arg, "argSelector": arg_selector, "pidSelector": pid_selector,
        "binarySelector": binary_selector, "nsSelector": ns_selector,
        "nsChangeSelector": ns_change_selector, "capSelector": cap_selector, "action": action,
        "selector": selector, "kprobe": kprobe, "tracepoint": tracepoint, "lsmhook": lsmhook,
        "uprobe": uprobe, "usdt": usdt, "spec": spec,
    }


def _metadata() -> dict[str, Any]:
    return _obj({
        "name": _s("policy name (DNS-1123 label)"),
        "namespace": _s("Kubernetes namespace (TracingPolicyNamespaced)"),
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    }, ("name",), "object metadata")


def schema(native: bool) -> dict[str, Any]:
    if native:
        api = {"const": "bpfpolicy.io/v1"}
        kind = {"const": "TracingPolicy"}
        title = "bpfpolicy TracingPolicy (spec = Tetragon's TracingPolicySpec)"
    else:
        api = {"const": "cilium.io/v1alpha1"}
        kind = {"enum": ["TracingPolicy", "TracingPolicyNamespaced"]}
        title = "Tetragon TracingPolicy / TracingPolicyNamespaced (cilium.io/v1alpha1)"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {**api, "description": "API version"},
            "kind": {**kind, "description": "kind"},
            "metadata": _metadata(),
            "spec": {"$ref": "#/$defs/spec"},
        },
        "$defs": definitions(),
    }


def render(native: bool) -> str:
    return json.dumps(schema(native), indent=2) + "\n"


def write(directory: Path = SCHEMAS_DIR) -> None:
    (directory / NATIVE_FILE).write_text(render(True))
    (directory / FOREIGN_FILE).write_text(render(False))


if __name__ == "__main__":
    write()
