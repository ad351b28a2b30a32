"""bpf(2) through ctypes: the commands libbpf 1.1 does not make convenient from Python.

Every function takes and returns plain fds / ints / bytes. Failures raise `OSError`
with the kernel's errno and a message that names the command and the object, e.g.
`OSError(ENOENT, "BPF_OBJ_GET /sys/fs/bpf/x: No such file or directory")`.

Struct layouts follow `include/uapi/linux/bpf.h` (union bpf_attr); each command builds its
attribute struct with `struct.pack_into` on a zeroed 128-byte buffer, which is what the
kernel expects (unused tail bytes must be zero).

API (stable; the controller, the kinds' tests and benches use it):
  map_lookup / map_update / map_delete / map_get_next_key
  map_update_batch / map_delete_batch / map_lookup_batch
  obj_pin / obj_get
  prog_get_fd_by_id / map_get_fd_by_id / link_get_fd_by_id, prog_ids / map_ids / link_ids
  prog_info / map_info / link_info          (dicts with the useful fields)
  prog_test_run(prog_fd, data, repeat) -> TestRun(retval, duration_ns, data_out)
  link_create / link_update(link_fd, new_prog_fd, old_prog_fd=None) / link_detach
  possible_cpus(), value_stride(value_size, percpu)
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform
import struct
from dataclasses import dataclass
from functools import cache

# enum bpf_cmd
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
OBJ_PIN, OBJ_GET = 6, 7
PROG_TEST_RUN = 10
PROG_GET_NEXT_ID, MAP_GET_NEXT_ID = 11, 12
PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 13, 14, 15
MAP_LOOKUP_BATCH, MAP_UPDATE_BATCH, MAP_DELETE_BATCH = 24, 26, 27
LINK_CREATE, LINK_UPDATE, LINK_GET_FD_BY_ID, LINK_GET_NEXT_ID = 28, 29, 30, 31
LINK_DETACH = 34

_CMD_NAMES = {v: k for k, v in globals().items() if k.isupper() and isinstance(v, int)}

# flags
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_F_REPLACE = 1 << 2
BPF_F_RDONLY = 1 << 3
BPF_XDP = 37  # enum bpf_attach_type

# enum bpf_map_type (subset used by name in manifests)
MAP_TYPES = {
    "hash": 1, "array": 2, "prog_array": 3, "perf_event_array": 4, "percpu_hash": 5,
    "percpu_array": 6, "stack_trace": 7, "cgroup_array": 8, "lru_hash": 9,
    "lru_percpu_hash": 10, "lpm_trie": 11, "array_of_maps": 12, "hash_of_maps": 13,
    "ringbuf": 27,
}
PERCPU_MAP_TYPES = {5, 6, 10}
MAP_TYPE_NAMES = {v: k for k, v in MAP_TYPES.items()}

# enum bpf_prog_type (subset, for readable info)
PROG_TYPE_NAMES = {
    1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act", 5: "tracepoint", 6: "xdp",
    7: "perf_event", 8: "cgroup_skb", 9: "cgroup_sock", 17: "raw_tracepoint", 26: "tracing",
    29: "lsm",
}

_SYSCALL_NR = {"x86_64": 321, "aarch64": 280, "i686": 357, "armv7l": 386, "riscv64": 280}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@cache
def _nr() -> int:
    try:
        return _SYSCALL_NR[platform.machine()]
    except KeyError:
        raise OSError(_errno.ENOSYS, f"bpf(2) syscall number unknown for {platform.machine()}") from None


def _addr(buf: object) -> int:
    return ctypes.addressof(buf) if buf is not None else 0  # type: ignore[arg-type]


def sys_bpf(cmd: int, attr: ctypes.Array, what: str = "") -> int:
    """Raw bpf(cmd, attr, sizeof attr); returns the result or raises OSError(errno)."""
    ret = _libc.syscall(_nr(), ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        name = "BPF_" + _CMD_NAMES.get(cmd, str(cmd))
        raise OSError(err, f"{name}{' ' + what if what else ''}: {os.strerror(err)}")
    return int(ret)


def _attr() -> ctypes.Array:
    return ctypes.create_string_buffer(128)


def _buf(data: bytes | bytearray | memoryview | int) -> ctypes.Array:
    if isinstance(data, int):
        return ctypes.create_string_buffer(max(data, 1))
    return ctypes.create_string_buffer(bytes(data), len(data) or 1)


# --------------------------------------------------------------------------- CPUs


@cache
def possible_cpus() -> int:
    """Number of possible CPUs (per-CPU map values have one slot per possible CPU)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


def value_stride(value_size: int, percpu: bool) -> int:
    """Bytes the kernel copies per value: per-CPU values are 8-aligned, one per CPU."""
    return ((value_size + 7) // 8 * 8) * possible_cpus() if percpu else value_size


def replicate_percpu(values: bytes, value_size: int, count: int) -> bytes:
    """Expand `count` packed values to the per-CPU layout (same value on every CPU)."""
    slot = (value_size + 7) // 8 * 8
    pad = b"\0" * (slot - value_size)
    ncpu = possible_cpus()
    out = bytearray()
    for i in range(count):
        v = values[i * value_size:(i + 1) * value_size] + pad
        out += v * ncpu
    return bytes(out)


# --------------------------------------------------------------------------- elements


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    """Value for `key` (value_size = the per-CPU stride for per-CPU maps), None if absent."""
    k, v, a = _buf(key), _buf(value_size), _attr()
    struct.pack_into("=I4xQQQ", a, 0, map_fd, _addr(k), _addr(v), 0)
    try:
        sys_bpf(MAP_LOOKUP_ELEM, a, f"map fd {map_fd}")
    except OSError as e:
        if e.errno == _errno.ENOENT:
            return None
        raise
    return v.raw[:value_size]


def map_update(map_fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    k, v, a = _buf(key), _buf(value), _attr()
    struct.pack_into("=I4xQQQ", a, 0, map_fd, _addr(k), _addr(v), flags)
    sys_bpf(MAP_UPDATE_ELEM, a, f"map fd {map_fd}")


def map_delete(map_fd: int, key: bytes) -> bool:
    """Delete `key`; False when it was not there."""
    k, a = _buf(key), _attr()
    struct.pack_into("=I4xQ", a, 0, map_fd, _addr(k))
    try:
        sys_bpf(MAP_DELETE_ELEM, a, f"map fd {map_fd}")
    except OSError as e:
        if e.errno == _errno.ENOENT:
            return False
        raise
    return True


def map_get_next_key(map_fd: int, key: bytes | None, key_size: int) -> bytes | None:
    k = _buf(key) if key is not None else None
    nk, a = _buf(key_size), _attr()
    struct.pack_into("=I4xQQ", a, 0, map_fd, _addr(k), _addr(nk))
    try:
        sys_bpf(MAP_GET_NEXT_KEY, a, f"map fd {map_fd}")
    except OSError as e:
        if e.errno == _errno.ENOENT:
            return None
        raise
    return nk.raw[:key_size]


def map_keys(map_fd: int, key_size: int) -> list[bytes]:
    """Every key (iteration by GET_NEXT_KEY; fine for maps up to ~100k keys)."""
    keys: list[bytes] = []
    k = map_get_next_key(map_fd, None, key_size)
    while k is not None:
        keys.append(k)
        k = map_get_next_key(map_fd, k, key_size)
    return keys


# --------------------------------------------------------------------------- batches

BATCH_CHUNK = 1 << 16  # elements per syscall: bounds kernel-side copy buffers


def map_update_batch(map_fd: int, keys: bytes, values: bytes, key_size: int,
                     value_stride_: int, flags: int = BPF_ANY) -> int:
    """BPF_MAP_UPDATE_BATCH over packed `keys` / `values` (values already in the kernel's
    layout: per-CPU values replicated, see `value_stride`). Returns elements written."""
    n = len(keys) // key_size if key_size else 0
    if n * value_stride_ != len(values):
        raise ValueError(f"{n} keys but {len(values)} value bytes (stride {value_stride_})")
    kb, vb = _buf(keys), _buf(values)
    done = 0
    while done < n:
        cnt = min(BATCH_CHUNK, n - done)
        a = _attr()
        struct.pack_into("=QQQQIIQQ", a, 0, 0, 0, _addr(kb) + done * key_size,
                         _addr(vb) + done * value_stride_, cnt, map_fd, flags, 0)
        count = ctypes.c_uint32.from_buffer(a, 32)
        try:
            sys_bpf(MAP_UPDATE_BATCH, a, f"map fd {map_fd} ({cnt} elements)")
        except OSError as e:
            raise OSError(e.errno, f"{e.strerror} after {done + count.value} of {n} elements") from None
        done += cnt
    return done


def map_delete_batch(map_fd: int, keys: bytes, key_size: int) -> int:
    """BPF_MAP_DELETE_BATCH; keys that are already absent are skipped (the batch op stops
    at the first missing key with ENOENT, so we resume after it). Returns keys deleted."""
    n = len(keys) // key_size if key_size else 0
    kb = _buf(keys)
    done = deleted = 0
    while done < n:
        cnt = min(BATCH_CHUNK, n - done)
        a = _attr()
        struct.pack_into("=QQQQIIQQ", a, 0, 0, 0, _addr(kb) + done * key_size, 0, cnt, map_fd, 0, 0)
        count = ctypes.c_uint32.from_buffer(a, 32)
        try:
            sys_bpf(MAP_DELETE_BATCH, a, f"map fd {map_fd}")
            done += cnt
            deleted += cnt
        except OSError as e:
            if e.errno != _errno.ENOENT:
                raise
            deleted += count.value
            done += count.value + 1  # skip the missing key
    return deleted


def map_lookup_batch(map_fd: int, key_size: int, value_stride_: int,
                     chunk: int = 4096) -> tuple[bytes, bytes]:
    """Dump a whole hash/array map with BPF_MAP_LOOKUP_BATCH: (packed keys, packed values)."""
    keys_out, vals_out = bytearray(), bytearray()
    token_in, token_out = _buf(max(key_size, 8)), _buf(max(key_size, 8))
    kb, vb = _buf(chunk * key_size), _buf(chunk * value_stride_)
    first = True
    while True:
        a = _attr()
        struct.pack_into("=QQQQIIQQ", a, 0, 0 if first else _addr(token_in), _addr(token_out),
                         _addr(kb), _addr(vb), chunk, map_fd, 0, 0)
        count = ctypes.c_uint32.from_buffer(a, 32)
        end = False
        try:
            sys_bpf(MAP_LOOKUP_BATCH, a, f"map fd {map_fd}")
        except OSError as e:
            if e.errno != _errno.ENOENT:
                raise
            end = True
        c = count.value
        keys_out += kb.raw[: c * key_size]
        vals_out += vb.raw[: c * value_stride_]
        if end:
            return bytes(keys_out), bytes(vals_out)
        ctypes.memmove(token_in, token_out, len(token_out))
        first = False


# --------------------------------------------------------------------------- pins, ids


def obj_pin(fd: int, path: str) -> None:
    """Pin a prog/map/link fd at a bpffs path (the path must not exist)."""
    p, a = _buf(os.fsencode(path) + b"\0"), _attr()
    struct.pack_into("=QI", a, 0, _addr(p), fd)
    sys_bpf(OBJ_PIN, a, path)


def obj_get(path: str, read_only: bool = False) -> int:
    """Open a pinned object; returns a new fd (caller closes)."""
    p, a = _buf(os.fsencode(path) + b"\0"), _attr()
    struct.pack_into("=QII", a, 0, _addr(p), 0, BPF_F_RDONLY if read_only else 0)
    return sys_bpf(OBJ_GET, a, path)


def _fd_by_id(cmd: int, obj_id: int, what: str) -> int:
    a = _attr()
    struct.pack_into("=II", a, 0, obj_id, 0)
    return sys_bpf(cmd, a, f"{what} id {obj_id}")


def prog_get_fd_by_id(prog_id: int) -> int:
    return _fd_by_id(PROG_GET_FD_BY_ID, prog_id, "prog")


def map_get_fd_by_id(map_id: int) -> int:
    return _fd_by_id(MAP_GET_FD_BY_ID, map_id, "map")


def link_get_fd_by_id(link_id: int) -> int:
    return _fd_by_id(LINK_GET_FD_BY_ID, link_id, "link")


def _ids(cmd: int) -> list[int]:
    out, cur = [], 0
    while True:
        a = _attr()
        struct.pack_into("=I", a, 0, cur)
        try:
            sys_bpf(cmd, a)
        except OSError as e:
            if e.errno == _errno.ENOENT:
                return out
            raise
        cur = struct.unpack_from("=I", a, 4)[0]
        out.append(cur)


def prog_ids() -> list[int]:
    return _ids(PROG_GET_NEXT_ID)


def map_ids() -> list[int]:
    return _ids(MAP_GET_NEXT_ID)


def link_ids() -> list[int]:
    return _ids(LINK_GET_NEXT_ID)


def _info(fd: int, size: int = 256) -> bytes:
    info, a = _buf(size), _attr()
    struct.pack_into("=IIQ", a, 0, fd, size, _addr(info))
    sys_bpf(OBJ_GET_INFO_BY_FD, a, f"fd {fd}")
    return info.raw


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def prog_info(fd: int) -> dict[str, object]:
    """type, id, tag (hex), name, map_ids, run_time_ns, run_cnt, verified_insns."""
    raw = _info(fd)
    ptype, pid = struct.unpack_from("=II", raw, 0)
    nr_map_ids = struct.unpack_from("=I", raw, 52)[0]
    map_ids_: list[int] = []
    if nr_map_ids:  # second call with a buffer for the map ids
        ids = (ctypes.c_uint32 * nr_map_ids)()
        info = _buf(len(raw))  # zeroed: other length fields would ask for more copies
        struct.pack_into("=IQ", info, 52, nr_map_ids, ctypes.addressof(ids))
        a = _attr()
        struct.pack_into("=IIQ", a, 0, fd, len(raw), _addr(info))
        sys_bpf(OBJ_GET_INFO_BY_FD, a, f"fd {fd}")
        map_ids_ = list(ids)
    return {
        "type": PROG_TYPE_NAMES.get(ptype, str(ptype)), "type_id": ptype, "id": pid,
        "tag": raw[8:16].hex(), "name": _cstr(raw[64:80]), "map_ids": map_ids_,
        "run_time_ns": struct.unpack_from("=Q", raw, 192)[0],
        "run_cnt": struct.unpack_from("=Q", raw, 200)[0],
        "verified_insns": struct.unpack_from("=I", raw, 216)[0],
    }


def map_info(fd: int) -> dict[str, object]:
    """type (name), id, key_size, value_size, max_entries, map_flags, name."""
    raw = _info(fd, 96)
    mtype, mid, ks, vs, me, mf = struct.unpack_from("=IIIIII", raw, 0)
    return {"type": MAP_TYPE_NAMES.get(mtype, str(mtype)), "type_id": mtype, "id": mid,
            "key_size": ks, "value_size": vs, "max_entries": me, "map_flags": mf,
            "name": _cstr(raw[24:40])}


LINK_TYPE_NAMES = {1: "raw_tracepoint", 2: "tracing", 3: "cgroup", 4: "iter", 5: "netns",
                   6: "xdp", 7: "perf_event", 8: "kprobe_multi", 9: "struct_ops",
                   10: "netfilter", 11: "tcx", 12: "uprobe_multi", 13: "netkit"}


def link_info(fd: int) -> dict[str, object]:
    """type (name), id, prog_id, and for xdp/tcx links the ifindex."""
    raw = _info(fd, 128)
    ltype, lid, prog_id = struct.unpack_from("=III", raw, 0)
    out: dict[str, object] = {"type": LINK_TYPE_NAMES.get(ltype, str(ltype)), "type_id": ltype,
                              "id": lid, "prog_id": prog_id}
    if ltype in (6, 11, 13):
        out["ifindex"] = struct.unpack_from("=I", raw, 16)[0]
    if ltype == 3:
        out["cgroup_id"], out["attach_type"] = struct.unpack_from("=QI", raw, 16)
    return out


# --------------------------------------------------------------------------- test run


@dataclass(frozen=True)
class TestRun:
    retval: int
    duration_ns: int  # mean per run, as the kernel reports it
    data_out: bytes


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1, data_out_size: int | None = None) -> TestRun:
    """BPF_PROG_TEST_RUN: run `prog_fd` on `data` `repeat` times (XDP: a packet)."""
    out_size = data_out_size if data_out_size is not None else len(data) + 256
    din, dout, a = _buf(data), _buf(out_size), _attr()
    struct.pack_into("=IIIIQQII", a, 0, prog_fd, 0, len(data), out_size,
                     _addr(din), _addr(dout), max(repeat, 1), 0)
    sys_bpf(PROG_TEST_RUN, a, f"prog fd {prog_fd}")
    retval, _, size_out = struct.unpack_from("=III", a, 4)
    duration = struct.unpack_from("=I", a, 36)[0]
    return TestRun(retval, duration, dout.raw[: min(size_out, out_size)])


# --------------------------------------------------------------------------- links


def link_create(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> int:
    """BPF_LINK_CREATE (for XDP: target = ifindex, attach_type BPF_XDP, flags = XDP mode)."""
    a = _attr()
    struct.pack_into("=IIII", a, 0, prog_fd, target_fd, attach_type, flags)
    return sys_bpf(LINK_CREATE, a, f"prog fd {prog_fd} target {target_fd}")


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int | None = None) -> None:
    """Atomically swap the program behind a link. With `old_prog_fd` it is a compare-and-
    swap: the kernel refuses (EPERM) when the link no longer runs that program."""
    a = _attr()
    flags = BPF_F_REPLACE if old_prog_fd is not None else 0
    struct.pack_into("=IIII", a, 0, link_fd, new_prog_fd, flags, old_prog_fd or 0)
    sys_bpf(LINK_UPDATE, a, f"link fd {link_fd}")


def link_detach(link_fd: int) -> None:
    a = _attr()
    struct.pack_into("=I", a, 0, link_fd)
    sys_bpf(LINK_DETACH, a, f"link fd {link_fd}")
