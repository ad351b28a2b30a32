"""Captures: each `args:` entry of a hook as an ir.Capture (which macro copies it into
the event, from which backend read), and the matchArgs index -> (event slot, type) map
the selectors compare against."""

from __future__ import annotations

from typing import Any

from ..btf import Btf
from . import spec as S
from .backends import Backend, HookError, PathT, module
from .ir import ArgRead, Capture, Resolve, ResolveStep, Site

Positions = dict[int, tuple[int, str]]
INT_CTYPES = {1: "char", 2: "short", 4: "int", 8: "long long"}
KERNEL_STRUCT = {"cred": "cred", "user_namespace": "userns", "module": "module"}
NET_HOW = {"sock": "sock", "socket": "socket", "skb": "skb", "sockaddr": "sockaddr",
           "net_device": "net_device"}
PATH_HOW = {"file": "file", "path": "path", "dentry": "dentry", "linux_binprm": "binprm"}
# maxData: bytes of one argument sent after the event, in the same ring-buffer record.
# Tetragon reads up to 327360 bytes in chunks into a BPF map; bpfpolicy builds event + data
# in one per-CPU slot, and a per-CPU map value is at most PCPU_MIN_UNIT_SIZE (32 KiB) —
# struct tp_event (1688 B) + a 32-byte header + 16 KiB fits, with a power of 2 the
# verifier bounds by mask. Longer data is cut there and the argument says `truncated`.
MAX_DATA = 16384


class CaptureBuilder:
    """Builds the captures of one program; records which optional helpers they need."""

    def __init__(self, b: Backend, section: str, btf: Btf | None, site, uses) -> None:  # noqa: ANN001
        self.b = b
        self.section = section
        self.btf = btf
        self.site = site  # PathT -> Site
        self.uses = uses

    def build(self, hook: dict[str, Any], path: PathT) -> tuple[list[Capture], Positions]:
        captures: list[Capture] = []
        positions: Positions = {}
        for k, arg in enumerate(hook.get("args") or []):
            apath = (*path, "args", k)
            idx, t = int(arg["index"]), str(arg.get("type", "auto"))
            key = k if self.section == "tracepoints" else idx
            cap = self._one(k, idx, t, arg, apath)
            captures.append(cap)
            positions[key] = (k, self._matched_type(cap, t))
        return captures, positions

    @staticmethod
    def _matched_type(cap: Capture, t: str) -> str:
        if cap.how in ("data_loc", "module"):
            return "string"
        if cap.how == "int" and t == "auto":
            return "int64"
        return t

    def _read(self, idx: int, path: PathT) -> ArgRead:
        return module(self.b).read(self.b, idx, path, self.section, self.btf)

    def _one(self, k: int, idx: int, t: str, arg: dict[str, Any], apath: PathT) -> Capture:
        base = {"site": self.site(apath), "slot": k, "label": str(arg.get("label") or f"arg{idx}"),
                "type": t, "user": self.b.user}
        if t == "nop":
            return Capture(how="nop", read=ArgRead("none"), **base)
        read = self._read(idx, apath)
        resolve = None
        if arg.get("resolve"):
            resolve = self._resolve(idx, str(arg["resolve"]), apath)
            if resolve.final == "array":
                if t not in ("string", "filename", "char_buf"):
                    raise HookError((*apath, "resolve"), f"resolve ends at an array: type must be string (got {t})")
                return Capture(how="str", read=read, resolve=resolve, **{**base, "user": False})
        how, extra = self._how(t, idx, arg, read, apath)
        if arg.get("maxData"):
            if how not in ("str", "bytes") or resolve is not None:
                raise HookError((*apath, "maxData"), f"maxData reads a string or char_buf argument "
                                f"from its pointer; this {t} argument is captured as {how}")
            self.uses.data = True
            extra["max_data"] = True
        return Capture(how=how, read=read, resolve=resolve, **base, **extra)

    def _how(self, t: str, idx: int, arg: dict[str, Any], read: ArgRead,
             apath: PathT) -> tuple[str, dict[str, Any]]:
        if read.data_loc:
            return "data_loc", {}
        if t == "data_loc":
            raise HookError((*apath, "type"), "data_loc applies to __data_loc tracepoint fields")
        if t in S.INT_TYPES or t == "auto":
            size, signed = S.INT_TYPES.get(t, (8, True))
            ctype = ("signed " if signed and size == 1 else "" if signed else "unsigned ") + INT_CTYPES[size]
            return "int", {"ctype": ctype, "signed": signed}
        if t in ("string", "filename"):
            return "str", {}
        if t == "char_buf":
            size_idx = arg.get("sizeArgIndex")
            return "bytes", {"size": self._read(int(size_idx) - 1, apath) if size_idx else None}
        if t in KERNEL_STRUCT:
            self._kernel_pointer(t, idx, apath, "")
            self.uses.cred = self.uses.cred or t != "module"
            return KERNEL_STRUCT[t], {}
        if t in NET_HOW:
            if t != "sockaddr":
                self._kernel_pointer(t, idx, apath, "")
            self.uses.sock = self.uses.sock or t != "net_device"
            return NET_HOW[t], {}
        if t in S.PATH_TYPES:
            self._kernel_pointer(t, idx, apath, " (use string or fd)")
            return PATH_HOW[t], {}
        raise HookError((*apath, "type"), f"argument type {t} is not decoded by bpfpolicy")

    def _kernel_pointer(self, t: str, idx: int, apath: PathT, hint: str) -> None:
        if self.b.user:
            raise HookError((*apath, "type"), f"type {t} needs a kernel pointer, but "
                            f"argument {idx} of a syscall is a user value{hint}")

    def _resolve(self, idx: int, resolve: str, apath: PathT) -> Resolve:
        """Tetragon's `resolve: a.b.c`: follow BTF members from the argument's own type,
        one typed pointer per dereference."""
        path = (*apath, "resolve")
        b = self.b
        if b.user or b.kind in ("tracepoint", "raw_tracepoint"):
            raise HookError(path, "resolve needs a kernel function or LSM argument with BTF types")
        if self.btf is None:
            raise HookError(path, "resolve needs kernel BTF, which is unavailable")
        func = f"bpf_lsm_{b.func}" if b.kind == "lsm" else b.func
        base = self.btf.param(func, idx)
        if base is None or base.kind != "ptr" or not base.target:
            raise HookError(path, f"argument {idx} of {func} is not a pointer to a struct; nothing to resolve")
        return _walk(self.btf, base.target, resolve, path)


def _walk(btf: Btf, base: str, resolve: str, path: PathT) -> Resolve:
    cur, var, pending, steps = base, 0, [], []
    parts = resolve.split(".")
    for i, part in enumerate(parts):
        m = btf.member(cur, part)
        if m is None:
            raise HookError(path, f'struct {cur.lstrip("#")} has no member "{part}" (resolve "{resolve}")')
        pending.append(part)
        access = ".".join(pending)
        if i == len(parts) - 1:
            final = {"array": "array", "struct": "struct"}.get(m.kind, "read")
            return Resolve(base, tuple(steps), final, var, access)
        if m.kind == "ptr" and m.target:
            steps.append(ResolveStep(len(steps) + 1, m.target, access))
            cur, var, pending = m.target, len(steps), []
        elif m.kind == "struct":
            cur = m.target
        else:
            raise HookError(path, f'cannot resolve through "{part}": it is neither a pointer to '
                            "a struct nor an embedded struct")
    raise HookError(path, "empty resolve path")


def check_max_data(r, section: str, hook: dict[str, Any], apath: PathT, arg: dict[str, Any],  # noqa: ANN001
                   drop: PathT) -> None:
    """maxData (check.py calls this): a string or char_buf whose size is known, one per hook."""
    if not arg.get("maxData"):
        return
    t = str(arg.get("type", "auto"))
    where = (*apath, "maxData")
    if t not in S.IMPLEMENTED_TYPES and t in S.ARG_TYPES:  # e.g. Tetragon's iov_iter (tty.yaml)
        r.unsupported(where, f"maxData on {t}: bpfpolicy does not decode {t} arguments (maxData "
                      "reads string and char_buf arguments)", drop=where)
    elif t not in ("string", "char_buf", "filename"):
        r.error(where, f"maxData applies to string and char_buf arguments (this one is {t})")
    elif t == "char_buf" and "sizeArgIndex" not in arg and not arg.get("returnCopy"):
        r.error(where, "maxData on a char_buf needs its size: sizeArgIndex, or returnCopy (the "
                "return value)")
    elif hook.get("return") and not arg.get("returnCopy"):
        r.unsupported(where, "maxData on a return: true hook is read at the return, so only with "
                      "returnCopy (the pointer of another argument is not kept for a large read)",
                      drop=where)
    elif sum(1 for a in hook.get("args") or [] if a.get("maxData")) > 1 and \
            next(a for a in hook["args"] if a.get("maxData")) is not arg:
        r.unsupported(where, f"maxData on more than one argument of a hook: bpfpolicy sends one "
                      f"argument's data (up to {MAX_DATA} bytes) after the event", drop=where)


__all__ = ["MAX_DATA", "CaptureBuilder", "Positions", "Site", "check_max_data"]
