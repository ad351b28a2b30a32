"""libbpf (`libbpf.so.1`, Debian bookworm's 1.1) through ctypes.

libbpf does the heavy ELF work: relocations, BTF, map creation, CO-RE, .rodata. We wrap
only what the controller and tests need:

    with BpfObject.open_file("prog.bpf.o") as obj:       # or BpfObject.open_mem(data, name)
        obj.map("rule_stats").reuse_fd(pinned_fd)        # keep runtime state across reloads
        obj.map("deny_v4").set_max_entries(1_000_000)
        obj.load()                                       # BpfLoadError(.log = verifier log)
        prog = obj.program("xdp_blocklist")
        prog.pin("/sys/fs/bpf/.../prog_xdp_blocklist")
        link = prog.attach_xdp(ifindex, flags)           # or .attach() / attach_cgroup / attach_tcx
        link.pin(".../link_0"); link.update_program(other_prog)

Object fds stay valid until `close()`; pinned objects outlive the process. Every failure
raises OSError (errno from libbpf); load failures raise `BpfLoadError` whose message ends
with the verifier log libbpf printed, so the user sees *why* the kernel refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import threading
from collections.abc import Iterator
from functools import cache
from typing import Any

c_void_p, c_char_p, c_int, c_uint, c_size_t = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                               ctypes.c_uint, ctypes.c_size_t)

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2
_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)


class BpfLoadError(OSError):
    """The kernel (verifier) or libbpf refused an object; `.log` holds libbpf's output."""

    def __init__(self, err: int, message: str, log: str) -> None:
        super().__init__(err, message)
        self.log = log

    def __str__(self) -> str:
        tail = self.log.strip()
        if len(tail) > 8000:
            tail = "...\n" + tail[-8000:]
        return f"{self.strerror}\n{tail}" if tail else str(self.strerror)


# --------------------------------------------------------------------------- library


@cache
def lib() -> ctypes.CDLL:
    """The loaded libbpf with prototypes declared (once per process)."""
    name = "libbpf.so.1"
    try:
        so = ctypes.CDLL(name, use_errno=True)
    except OSError:
        found = ctypes.util.find_library("bpf")
        if not found:
            raise OSError(_errno.ENOENT, "libbpf.so.1 not found: apt install libbpf1") from None
        so = ctypes.CDLL(found, use_errno=True)
    protos: dict[str, tuple[Any, list[Any]]] = {
        "libbpf_set_print": (c_void_p, [_PRINT_FN]),
        "libbpf_major_version": (c_uint, []),
        "libbpf_minor_version": (c_uint, []),
        "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
        "bpf_object__open_mem": (c_void_p, [c_void_p, c_size_t, c_void_p]),
        "bpf_object__load": (c_int, [c_void_p]),
        "bpf_object__close": (None, [c_void_p]),
        "bpf_object__name": (c_char_p, [c_void_p]),
        "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
        "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
        "bpf_map__name": (c_char_p, [c_void_p]),
        "bpf_map__fd": (c_int, [c_void_p]),
        "bpf_map__type": (c_int, [c_void_p]),
        "bpf_map__key_size": (c_uint, [c_void_p]),
        "bpf_map__value_size": (c_uint, [c_void_p]),
        "bpf_map__max_entries": (c_uint, [c_void_p]),
        "bpf_map__map_flags": (c_uint, [c_void_p]),
        "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint]),
        "bpf_map__set_map_flags": (c_int, [c_void_p, c_uint]),
        "bpf_map__reuse_fd": (c_int, [c_void_p, c_int]),
        "bpf_map__set_pin_path": (c_int, [c_void_p, c_char_p]),
        "bpf_map__pin": (c_int, [c_void_p, c_char_p]),
        "bpf_map__initial_value": (c_void_p, [c_void_p, ctypes.POINTER(c_size_t)]),
        "bpf_map__unpin": (c_int, [c_void_p, c_char_p]),
        "bpf_program__name": (c_char_p, [c_void_p]),
        "bpf_program__section_name": (c_char_p, [c_void_p]),
        "bpf_program__fd": (c_int, [c_void_p]),
        "bpf_program__type": (c_int, [c_void_p]),
        "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
        "bpf_program__pin": (c_int, [c_void_p, c_char_p]),
        "bpf_program__unpin": (c_int, [c_void_p, c_char_p]),
        "bpf_program__attach": (c_void_p, [c_void_p]),
        "bpf_program__attach_xdp": (c_void_p, [c_void_p, c_int]),
        "bpf_program__attach_cgroup": (c_void_p, [c_void_p, c_int]),
        "bpf_link__fd": (c_int, [c_void_p]),
        "bpf_link__pin": (c_int, [c_void_p, c_char_p]),
        "bpf_link__update_program": (c_int, [c_void_p, c_void_p]),
        "bpf_link__disconnect": (None, [c_void_p]),
        "bpf_link__destroy": (c_int, [c_void_p]),
        "bpf_link__open": (c_void_p, [c_char_p]),
    }
    optional = {"bpf_program__attach_tcx": (c_void_p, [c_void_p, c_int, c_void_p])}
    for fname, (res, args) in {**protos, **optional}.items():
        if not hasattr(so, fname):
            if fname in optional:
                continue
            raise OSError(_errno.ENOSYS, f"libbpf lacks {fname}")
        fn = getattr(so, fname)
        fn.restype, fn.argtypes = res, args
    _install_printer(so)
    return so


def version() -> tuple[int, int]:
    return (int(lib().libbpf_major_version()), int(lib().libbpf_minor_version()))


def has_tcx() -> bool:
    """Whether this libbpf can attach tcx (libbpf >= 1.3; the kernel needs >= 6.6)."""
    return hasattr(lib(), "bpf_program__attach_tcx")


# libbpf prints through one global callback; we route its output into a per-thread buffer
# while a call that may fail is running, so the verifier log ends up in the exception.
_capture = threading.local()
_libc = ctypes.CDLL(None)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_libc.vsnprintf.restype = c_int


def _printer(level: int, fmt: bytes, va: int) -> int:
    sink = getattr(_capture, "lines", None)
    if sink is None or level == LIBBPF_DEBUG:
        return 0
    buf = ctypes.create_string_buffer(1 << 16)
    _libc.vsnprintf(buf, len(buf), fmt, va)  # x86-64/aarch64: va_list decays to a pointer
    sink.append(buf.value.decode(errors="replace"))
    return 0


_printer_ref = _PRINT_FN(_printer)  # keep the callback alive for the process lifetime


def _install_printer(so: ctypes.CDLL) -> None:
    so.libbpf_set_print(_printer_ref)


class _Captured:
    def __enter__(self) -> list[str]:
        self.prev = getattr(_capture, "lines", None)
        _capture.lines = []
        return _capture.lines

    def __exit__(self, *exc: object) -> None:
        _capture.lines = self.prev


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = -ret
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _check_ptr(ptr: int | None, what: str) -> int:
    if not ptr:
        err = ctypes.get_errno() or _errno.EINVAL
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ptr


# --------------------------------------------------------------------------- objects


class Map:
    """A map of an opened object (configure before load; fd valid after load)."""

    def __init__(self, obj: BpfObject, ptr: int) -> None:
        self._obj, self._ptr = obj, ptr

    @property
    def name(self) -> str:
        return lib().bpf_map__name(self._ptr).decode()

    @property
    def fd(self) -> int:
        return lib().bpf_map__fd(self._ptr)

    @property
    def type(self) -> int:
        return lib().bpf_map__type(self._ptr)

    @property
    def key_size(self) -> int:
        return lib().bpf_map__key_size(self._ptr)

    @property
    def value_size(self) -> int:
        return lib().bpf_map__value_size(self._ptr)

    @property
    def max_entries(self) -> int:
        return lib().bpf_map__max_entries(self._ptr)

    def set_max_entries(self, n: int) -> None:
        _check(lib().bpf_map__set_max_entries(self._ptr, n), f"set max_entries of map {self.name}")

    def set_map_flags(self, flags: int) -> None:
        _check(lib().bpf_map__set_map_flags(self._ptr, flags), f"set flags of map {self.name}")

    def reuse_fd(self, fd: int) -> None:
        """Use an existing kernel map (e.g. a pinned counter map) instead of creating one.
        libbpf dups `fd`; the caller keeps ownership of its own fd."""
        _check(lib().bpf_map__reuse_fd(self._ptr, fd), f"reuse fd {fd} for map {self.name}")

    def set_pin_path(self, path: str) -> None:
        """At load: reuse the map pinned at `path` if compatible, else create and pin it."""
        _check(lib().bpf_map__set_pin_path(self._ptr, os.fsencode(path)), f"pin path of map {self.name}")

    def pin(self, path: str) -> None:
        _check(lib().bpf_map__pin(self._ptr, os.fsencode(path)), f"pin map {self.name} at {path}")

    def replace_initial_bytes(self, placeholder: bytes, value: bytes) -> bool:
        """Before load, overwrite `len(value)` bytes of this map's initial value (a
        `.rodata`/`.data` section) where `placeholder` starts. Only data changes, never
        instructions, so program tags stay the same. False when the placeholder (with
        room for `value` after it) is not there."""
        size = c_size_t()
        ptr = lib().bpf_map__initial_value(self._ptr, ctypes.byref(size))
        if not ptr:
            return False
        at = ctypes.string_at(ptr, size.value).find(placeholder)
        if at < 0 or at + len(value) > size.value:
            return False
        ctypes.memmove(ptr + at, value, len(value))
        return True


class Link:
    """An attachment (bpf_link). Destroyed (detached) on close unless pinned/disconnected."""

    def __init__(self, ptr: int, what: str) -> None:
        self._ptr: int | None = ptr
        self.what = what

    @classmethod
    def open_pinned(cls, path: str) -> Link:
        return cls(_check_ptr(lib().bpf_link__open(os.fsencode(path)), f"open link {path}"), path)

    @property
    def fd(self) -> int:
        assert self._ptr
        return lib().bpf_link__fd(self._ptr)

    def pin(self, path: str) -> None:
        assert self._ptr
        _check(lib().bpf_link__pin(self._ptr, os.fsencode(path)), f"pin link {self.what} at {path}")

    def update_program(self, prog: Program) -> None:
        """Atomically switch this link to `prog` (BPF_LINK_UPDATE)."""
        assert self._ptr
        _check(lib().bpf_link__update_program(self._ptr, prog._ptr), f"update link {self.what}")

    def disconnect(self) -> None:
        """Keep the attachment alive after close (it must be pinned to stay reachable)."""
        if self._ptr:
            lib().bpf_link__disconnect(self._ptr)

    def close(self) -> None:
        if self._ptr:
            lib().bpf_link__destroy(self._ptr)
            self._ptr = None

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Program:
    def __init__(self, obj: BpfObject, ptr: int) -> None:
        self._obj, self._ptr = obj, ptr

    @property
    def name(self) -> str:
        return lib().bpf_program__name(self._ptr).decode()

    @property
    def section(self) -> str:
        return lib().bpf_program__section_name(self._ptr).decode()

    @property
    def fd(self) -> int:
        return lib().bpf_program__fd(self._ptr)

    @property
    def type(self) -> int:
        return lib().bpf_program__type(self._ptr)

    def set_autoload(self, on: bool) -> None:
        _check(lib().bpf_program__set_autoload(self._ptr, on), f"autoload {self.name}")

    def pin(self, path: str) -> None:
        _check(lib().bpf_program__pin(self._ptr, os.fsencode(path)), f"pin program {self.name} at {path}")

    def _link(self, ptr: int | None, what: str) -> Link:
        return Link(_check_ptr(ptr, f"attach {self.name} ({what})"), f"{self.name}:{what}")

    def attach(self) -> Link:
        """Auto-attach by SEC() name (tracepoint/, raw_tp/, lsm/, fentry/, ...)."""
        with _Captured() as log:
            ptr = lib().bpf_program__attach(self._ptr)
        if not ptr:
            err = ctypes.get_errno() or _errno.EINVAL
            raise BpfLoadError(err, f"attach {self.name} ({self.section}): {os.strerror(err)}", "\n".join(log))
        return Link(ptr, f"{self.name}:{self.section}")

    def attach_xdp(self, ifindex: int) -> Link:
        """XDP via bpf_link in the *current* netns (see kernel.xdp for netlink/flags)."""
        return self._link(lib().bpf_program__attach_xdp(self._ptr, ifindex), f"xdp ifindex {ifindex}")

    def attach_cgroup(self, cgroup_fd: int) -> Link:
        return self._link(lib().bpf_program__attach_cgroup(self._ptr, cgroup_fd), f"cgroup fd {cgroup_fd}")

    def attach_tcx(self, ifindex: int) -> Link:
        if not has_tcx():
            raise OSError(_errno.EOPNOTSUPP, f"libbpf {version()} has no tcx attach (needs >= 1.3)")
        return self._link(lib().bpf_program__attach_tcx(self._ptr, ifindex, None), f"tcx ifindex {ifindex}")


class BpfObject:
    """An opened (then loaded) BPF ELF object. Use as a context manager or call close()."""

    def __init__(self, ptr: int, keep: object = None) -> None:
        self._ptr: int | None = ptr
        self._keep = keep  # open_mem: libbpf copies, but keep the buffer until close anyway
        self.loaded = False

    @classmethod
    def open_file(cls, path: str | os.PathLike[str]) -> BpfObject:
        lib()
        with _Captured() as log:
            ptr = lib().bpf_object__open_file(os.fsencode(os.fspath(path)), None)
        if not ptr:
            err = ctypes.get_errno() or _errno.EINVAL
            raise BpfLoadError(err, f"open {path}: {os.strerror(err)}", "\n".join(log))
        return cls(ptr)

    @classmethod
    def open_mem(cls, data: bytes, name: str = "prog") -> BpfObject:
        """Open an object from bytes (an artifact's prog.bpf.o read into memory)."""
        lib()
        buf = ctypes.create_string_buffer(data, len(data))
        opts = _open_opts(name)
        with _Captured() as log:
            ptr = lib().bpf_object__open_mem(buf, len(data), ctypes.byref(opts))
        if not ptr:
            err = ctypes.get_errno() or _errno.EINVAL
            raise BpfLoadError(err, f"open object {name}: {os.strerror(err)}", "\n".join(log))
        return cls(ptr, keep=(buf, opts))

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise OSError(_errno.EBADF, "BPF object is closed")
        return self._ptr

    def load(self) -> None:
        """Create maps, load programs through the verifier. On failure raise BpfLoadError
        carrying libbpf's log (the verifier's complaint is at its end)."""
        with _Captured() as log:
            ret = lib().bpf_object__load(self.ptr)
        if ret < 0:
            err = -ret
            raise BpfLoadError(err, f"loading BPF object failed: {os.strerror(err)}", "\n".join(log))
        self.loaded = True

    def maps(self) -> Iterator[Map]:
        m = lib().bpf_object__next_map(self.ptr, None)
        while m:
            yield Map(self, m)
            m = lib().bpf_object__next_map(self.ptr, m)

    def programs(self) -> Iterator[Program]:
        p = lib().bpf_object__next_program(self.ptr, None)
        while p:
            yield Program(self, p)
            p = lib().bpf_object__next_program(self.ptr, p)

    def map(self, name: str) -> Map:
        for m in self.maps():
            if m.name == name:
                return m
        raise KeyError(f"object has no map {name!r} (maps: {[m.name for m in self.maps()]})")

    def program(self, name: str) -> Program:
        for p in self.programs():
            if p.name == name:
                return p
        raise KeyError(f"object has no program {name!r} (programs: {[p.name for p in self.programs()]})")

    def close(self) -> None:
        """Release fds (pinned objects and pinned/disconnected links stay in the kernel)."""
        if self._ptr:
            lib().bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.close()
        except Exception:
            pass


class _OpenOpts(ctypes.Structure):
    # struct bpf_object_open_opts, libbpf 1.1 prefix (sz-versioned; later fields zero)
    _fields_ = [("sz", c_size_t), ("object_name", c_char_p), ("relaxed_maps", ctypes.c_bool),
                ("pin_root_path", c_char_p), ("attach_prog_fd", ctypes.c_uint32),
                ("kconfig", c_char_p), ("btf_custom_path", c_char_p),
                ("kernel_log_buf", c_char_p), ("kernel_log_size", c_size_t),
                ("kernel_log_level", ctypes.c_uint32)]


def _open_opts(name: str) -> _OpenOpts:
    o = _OpenOpts()
    o.sz = ctypes.sizeof(_OpenOpts)
    o.object_name = name.encode()[:60]
    return o
