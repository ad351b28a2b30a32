"""BPF ring buffers (BPF_MAP_TYPE_RINGBUF) read through libbpf's `ring_buffer__*` API.

libbpf does the mmap and epoll work; we only hand it one Python callback per map. Several
maps share one `struct ring_buffer`, so a single `poll()` waits on all of them — that is
how `bpfpolicy events --follow` reads every applied policy's events in one loop:

    with RingBuffer() as rb:
        rb.add_pinned("/sys/fs/bpf/bpfpolicy/TracingPolicy/x/map_events", on_record)
        rb.add(map_fd, on_other)                 # an fd we do not own (caller closes it)
        while running:
            rb.poll(200)                         # callbacks run inside poll()

A callback gets one record as `bytes` (copied out of the ring before libbpf releases it).
An exception raised by a callback is re-raised by the `poll()`/`consume()` that ran it,
after the remaining records of that call were skipped (libbpf stops on a non-zero return).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from collections.abc import Callable
from functools import cache

from . import bpf
from . import libbpf as _libbpf

SampleFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
Callback = Callable[[bytes], None]


@cache
def _lib() -> ctypes.CDLL:
    """libbpf with the ring-buffer prototypes declared (libbpf >= 0.1 has all four)."""
    so = _libbpf.lib()
    vp, i = ctypes.c_void_p, ctypes.c_int
    for name, res, args in (
        ("ring_buffer__new", vp, [i, SampleFn, vp, vp]),
        ("ring_buffer__add", i, [vp, i, SampleFn, vp]),
        ("ring_buffer__poll", i, [vp, i]),
        ("ring_buffer__consume", i, [vp]),
        ("ring_buffer__free", None, [vp]),
    ):
        fn = getattr(so, name)
        fn.restype, fn.argtypes = res, args
    return so


class RingBuffer:
    """One libbpf `struct ring_buffer` over any number of ring-buffer maps."""

    def __init__(self) -> None:
        self._rb: int | None = None
        self._fns: list[object] = []   # CFUNCTYPE objects must outlive the ring buffer
        self._owned: list[int] = []    # fds opened by add_pinned, closed by close()
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._fns)

    def add(self, map_fd: int, callback: Callback) -> None:
        """Read records of the ring-buffer map behind `map_fd` (the caller keeps the fd
        open until `close()`: libbpf's epoll registration is on it)."""
        fn = SampleFn(self._wrap(callback))
        so = _lib()
        if self._rb is None:
            ctypes.set_errno(0)
            rb = so.ring_buffer__new(map_fd, fn, None, None)
            if not rb:
                err = ctypes.get_errno() or _errno.EINVAL
                raise OSError(err, f"ring_buffer__new(fd {map_fd}): {os.strerror(err)}")
            self._rb = rb
        else:
            rc = so.ring_buffer__add(self._rb, map_fd, fn, None)
            if rc < 0:
                raise OSError(-rc, f"ring_buffer__add(fd {map_fd}): {os.strerror(-rc)}")
        self._fns.append(fn)

    def add_pinned(self, path: str, callback: Callback) -> int:
        """Open a pinned ring-buffer map by its bpffs path and read it; returns the fd
        (owned by this object)."""
        fd = bpf.obj_get(path)
        try:
            self.add(fd, callback)
        except BaseException:
            os.close(fd)
            raise
        self._owned.append(fd)
        return fd

    def poll(self, timeout_ms: int = 200) -> int:
        """Wait up to `timeout_ms` for records on any map and run their callbacks; returns
        how many were consumed (0 on timeout or when a signal interrupted the wait)."""
        if self._rb is None:
            return 0
        return self._check(_lib().ring_buffer__poll(self._rb, timeout_ms), "ring_buffer__poll")

    def consume(self) -> int:
        """Run callbacks for every record already in the rings, without waiting."""
        if self._rb is None:
            return 0
        return self._check(_lib().ring_buffer__consume(self._rb), "ring_buffer__consume")

    def close(self) -> None:
        if self._rb is not None:
            _lib().ring_buffer__free(self._rb)
            self._rb = None
        for fd in self._owned:
            os.close(fd)
        self._owned.clear()
        self._fns.clear()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------
    def _wrap(self, callback: Callback) -> Callable[[int, int, int], int]:
        def on_sample(_ctx: int, data: int, size: int) -> int:
            try:
                callback(ctypes.string_at(data, size))
            except BaseException as e:  # noqa: BLE001 - re-raised by poll()/consume()
                self._error = e
                return -1  # libbpf stops this round
            return 0
        return on_sample

    def _check(self, rc: int, what: str) -> int:
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        if rc == -_errno.EINTR:
            return 0
        if rc < 0:
            raise OSError(-rc, f"{what}: {os.strerror(-rc)}")
        return rc


def drain(map_fd: int) -> list[bytes]:
    """Every record currently in one ring-buffer map (tests, one-shot readers)."""
    out: list[bytes] = []
    with RingBuffer() as rb:
        rb.add(map_fd, out.append)
        rb.consume()
    return out
