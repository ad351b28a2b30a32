"""The process sensor: an internal artifact (template `sensor.bpf.c` + `build_sensor()`'s
manifest) that feeds `process_cache` with exec/exit/fork records.

It is an ordinary BPF artifact — programs attached by SEC() (`auto`), one `events` ring
buffer with layout `tracing_process_v1` — so the controller applies, observes and
destroys it like any policy and names no kind. `PROC_EVENT` mirrors
`struct bpfp_proc_event` in the C; a kernel test decodes real records through it, so the two
cannot drift silently.
"""

from __future__ import annotations

import struct
from importlib import resources
from pathlib import Path

from ....artifact import Artifact, stamp_program_hash

SENSOR_NAME = "bpfpolicy-process-sensor"  # one per host, whatever the policies
LAYOUT = "tracing_process_v1"
PATH_MAX_KEPT = 256  # PROC_PATH: exec'd filename bytes kept in the record
ARGS_MAX_KEPT = 512  # PROC_ARGS: argv bytes kept; beyond, /proc/<pid>/cmdline or truncArgs
PROC_EVENT = struct.Struct(f"<QIIIIIIIII7IQ16s{PATH_MAX_KEPT}s{ARGS_MAX_KEPT}s")
TYPES = {1: "exec", 2: "exit", 3: "fork"}
PROGRAMS = (("proc_exec", "tracepoint", "tp/sched/sched_process_exec"),
            ("proc_exit", "tracepoint", "tp/sched/sched_process_exit"),
            ("proc_fork", "raw_tracepoint", "raw_tp/sched_process_fork"))


def sensor_source() -> str:
    """The C text (package data next to this module)."""
    return resources.files(__package__).joinpath("sensor.bpf.c").read_text()


def build_sensor(arch: str = "x86_64", revision: str | None = None, header_btf: Path | None = None) -> Artifact:
    """Build the sensor object with clang and describe it in a manifest. `header_btf`:
    the BTF `vmlinux.h` is generated from when the host's does not fit the target (another
    arch) — the same file the tracing lowering picks for the policies beside it."""
    from ....codegen.build import build_bpf, vmlinux_header
    from ..lower import TARGET_ARCH

    source, shape = stamp_program_hash(sensor_source())
    header = vmlinux_header(header_btf) if header_btf else vmlinux_header()
    extra = (f"-D__TARGET_ARCH_{TARGET_ARCH.get(arch, 'x86')}", "-I", str(header.parent))
    obj = build_bpf(source, name="process_sensor", extra_flags=extra).object
    manifest = {
        "object": "prog.bpf.o",
        "program_hash": shape,
        "programs": [{"name": n, "type": t, "section": s} for n, t, s in PROGRAMS],
        "maps": [{"name": "events", "type": "ringbuf"}],
        "attachments": [{"program": n, "type": t} for n, t, _s in PROGRAMS],
        "events": {"map": "events", "type": "ringbuf", "layout": LAYOUT, "size": PROC_EVENT.size},
        "metadata": {"policy": f"TracingPolicy/{SENSOR_NAME}", "revision": revision, "mode": "enforce"},
    }
    return Artifact("TracingPolicy", SENSOR_NAME, files={"prog.bpf.c": source.encode(), "prog.bpf.o": obj},
                    manifest=manifest)  # type: ignore[arg-type]


def decode_record(raw: bytes) -> dict:
    """One `struct bpfp_proc_event` -> a plain dict (the cache's input)."""
    (ktime, typ, pid, tid, ppid, uid, auid, exit_code, path_len, args_len,
     mnt, pidns, net, uts, ipc, cgroupns, user, cgroup_id, comm, path, args) = PROC_EVENT.unpack_from(raw, 0)
    kept = min(args_len, ARGS_MAX_KEPT)
    return {
        "type": TYPES.get(typ, str(typ)), "ktime": ktime, "pid": pid, "tid": tid, "ppid": ppid,
        "uid": uid, "auid": auid, "exit_code": exit_code,
        "comm": comm.split(b"\0", 1)[0].decode(errors="replace"),
        "path": path[:min(path_len, PATH_MAX_KEPT - 1)].decode(errors="replace"),
        "path_truncated": path_len >= PATH_MAX_KEPT - 1,
        "argv": [a.decode(errors="replace") for a in args[:kept].rstrip(b"\0").split(b"\0")] if kept else [],
        "args_truncated": args_len > ARGS_MAX_KEPT,
        "ns": {"mnt": mnt, "pid": pidns, "net": net, "uts": uts, "ipc": ipc, "cgroup": cgroupns, "user": user},
        "cgroup_id": cgroup_id,
    }
