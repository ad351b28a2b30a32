"""Install seccomp filters: prctl(PR_SET_NO_NEW_PRIVS) + seccomp(SECCOMP_SET_MODE_FILTER).

ctypes only, no libseccomp. A filter applies to the calling thread (all threads with
TSYNC) and is inherited across fork/exec; it can never be removed, so callers install
it in the process that will exec the confined command (or in a forked child).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Iterable

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
_NR_SECCOMP = {"x86_64": 317, "aarch64": 277, "i386": 354, "i686": 354}
_NR_PRCTL = {"x86_64": 157, "aarch64": 167, "i386": 172, "i686": 172}


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class SeccompError(OSError):
    pass


def syscall(nr: int, *args: int) -> tuple[int, int]:
    """Raw syscall(2): returns (result, errno). Arguments are passed as 64-bit longs."""
    ctypes.set_errno(0)
    res = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) for a in args])
    return res, ctypes.get_errno() if res == -1 else 0


def flag_bits(flags: Iterable[str]) -> int:
    bits = 0
    for f in flags:
        name = f if f.startswith("SECCOMP_") else "SECCOMP_FILTER_FLAG_" + f.upper()
        if name not in FLAGS:
            raise ValueError(f"unknown seccomp flag {f}")
        bits |= FLAGS[name]
    return bits


def install(filter_bytes: bytes, flags: Iterable[str] = (), no_new_privs: bool = True) -> None:
    """Install `filter_bytes` (struct sock_filter[]) on the calling thread."""
    if len(filter_bytes) % 8 or not filter_bytes:
        raise SeccompError(22, "filter must be a non-empty array of 8-byte struct sock_filter")
    n = len(filter_bytes) // 8
    if n > 4096:
        raise SeccompError(22, f"filter has {n} instructions; the kernel accepts at most 4096")
    arr = (SockFilter * n).from_buffer_copy(filter_bytes)
    prog = SockFprog(n, ctypes.cast(arr, ctypes.POINTER(SockFilter)))
    machine = platform.machine()
    if no_new_privs:
        res, err = syscall(_NR_PRCTL[machine], PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if res != 0:
            raise SeccompError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    ctypes.set_errno(0)
    res = _libc.syscall(ctypes.c_long(_NR_SECCOMP[machine]), ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
                        ctypes.c_ulong(flag_bits(flags)), ctypes.byref(prog))
    if res != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(err)}")


def verify(filter_bytes: bytes, flags: Iterable[str] = ()) -> str | None:
    """Let the kernel check a filter (seccomp_check_filter + JIT) without confining us:
    install it in a forked child that exits at once. Returns the error, or None."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        msg = b""
        try:
            install(filter_bytes, flags)
        except (OSError, ValueError, KeyError) as e:
            msg = str(e).encode()[:4000] or b"error"
        finally:
            try:
                os.write(w, msg)
            finally:
                os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"the child installing the filter was killed by signal {os.WTERMSIG(status)}"
    return out.decode(errors="replace") or None
