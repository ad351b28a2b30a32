"""User-space process cache: exec_id, ancestry, arguments, cwd, namespaces, cgroup.

Fed by the process sensor's exec/exit/fork records (process/sensor.bpf.c) and seeded
from /proc for processes that started before it (Tetragon's `procFS` flag). Every
TracingPolicy event is decoded through it (`blocks()`), so events carry Tetragon's
`process` and `parent` blocks, and exec/exit records become `process_exec` /
`process_exit` events.

exec_id is Tetragon's: base64 of `node:ktime:pid` (ktime = bpf_ktime_get_ns() at the
exec, or the process's start time for /proc-seeded entries), unique over time on a node
(docs/tracing.md "Events").
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

MAX_ENTRIES = 32768  # above this, exited entries are dropped oldest first (pid_max default)
MAX_ANCESTORS = 64  # a parent chain longer than this is cut (a loop would never end)
CLK_TCK = os.sysconf("SC_CLK_TCK")
_CONTAINER = re.compile(r"([0-9a-f]{64})")


def exec_id(node: str, ktime: int, pid: int) -> str:
    """Tetragon's exec_id: base64("node:ktime:pid")."""
    return base64.b64encode(f"{node}:{ktime}:{pid}".encode()).decode()


def _iso_ns(ns: int) -> str:
    secs, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rem:09d}Z"


@dataclass
class Process:
    """One execution of one binary (a fork without exec gets its own entry: flag `clone`)."""

    pid: int
    ktime: int
    node: str
    binary: str = ""
    argv: list[str] = field(default_factory=list)
    cwd: str = ""
    uid: int = 0
    auid: int = 0xFFFFFFFF
    tid: int = 0
    ppid: int = 0
    parent_exec_id: str = ""
    ns: dict[str, int] = field(default_factory=dict)
    cgroup_id: int = 0
    docker: str = ""
    flags: list[str] = field(default_factory=list)
    exited: bool = False

    @property
    def exec_id(self) -> str:
        return exec_id(self.node, self.ktime, self.pid)

    def block(self, boot_offset_ns: int) -> dict[str, Any]:
        """Tetragon's `Process` message as JSON (field names of tetragon.proto)."""
        out: dict[str, Any] = {
            "exec_id": self.exec_id, "pid": self.pid, "uid": self.uid, "cwd": self.cwd,
            "binary": self.binary, "arguments": shlex.join(self.argv[1:]),
            "flags": " ".join(self.flags), "start_time": _iso_ns(self.ktime + boot_offset_ns),
            "auid": self.auid, "parent_exec_id": self.parent_exec_id, "tid": self.tid or self.pid,
        }
        if self.docker:
            out["docker"] = self.docker
        if self.ns:
            out["ns"] = {k: {"inum": v} for k, v in self.ns.items()}
        return out


class ProcessCache:
    """pid -> the executions seen for it (newest last); exec_id -> execution."""

    def __init__(self, node: str | None = None, proc: Path = Path("/proc")) -> None:
        self.node = node or socket.gethostname()
        self.proc = proc
        self.by_pid: dict[int, list[Process]] = {}
        self.by_id: dict[str, Process] = {}
        self.boot_offset_ns = time.time_ns() - time.monotonic_ns()
        self.seeded = False

    # ------------------------------------------------------------------ /proc
    def seed(self) -> None:
        """Every live process from /proc (flag `procFS`), parents before children."""
        self.seeded = True
        entries = [p for p in (self._from_proc(int(d)) for d in os.listdir(self.proc) if d.isdigit()) if p]
        for p in sorted(entries, key=lambda p: p.ktime):
            self._add(p)
        for p in entries:
            p.parent_exec_id = self._parent_id(p.ppid, p.ktime)

    def _from_proc(self, pid: int) -> Process | None:
        """A /proc/<pid> snapshot, or None when it is gone (or a kernel thread's stat)."""
        base = self.proc / str(pid)
        try:
            stat = (base / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            ppid, start_ticks = int(fields[1]), int(fields[19])
            status = (base / "status").read_text()
            uid = int(re.search(r"^Uid:\s+\d+\s+(\d+)", status, re.M)[1])  # type: ignore[index]
            argv = (base / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except (OSError, ValueError, TypeError):
            return None
        p = Process(pid, start_ticks * 1_000_000_000 // CLK_TCK, self.node, uid=uid, tid=pid, ppid=ppid,
                    argv=[a.decode(errors="replace") for a in argv if a] if argv != [b""] else [],
                    flags=["procFS"])
        p.binary = _readlink(base / "exe") or (p.argv[0] if p.argv else "")
        p.cwd = _readlink(base / "cwd")
        p.auid = _read_int(base / "loginuid", 0xFFFFFFFF)
        p.ns = {n: _ns_inum(base / "ns" / n) for n in ("mnt", "pid", "net", "uts", "ipc", "cgroup", "user")}
        p.docker = _container_id(base / "cgroup")
        return p

    # ------------------------------------------------------------------ records
    def feed(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """One sensor record (process.decode_record). exec/exit -> the bpfpolicy event
        (`event`: process_exec | process_exit); fork -> None (it only links)."""
        if not self.seeded:
            self.seed()
        kind = rec["type"]
        if kind == "fork":
            return self._fork(rec)
        if kind == "exec":
            return self._exec(rec)
        if kind == "exit":
            return self._exit(rec)
        return None

    def _fork(self, rec: dict[str, Any]) -> None:
        parent = self.lookup(rec["ppid"], rec["ktime"])
        child = Process(rec["pid"], rec["ktime"], self.node, tid=rec["pid"], ppid=rec["ppid"],
                        uid=rec["uid"], auid=rec["auid"], ns=rec["ns"], cgroup_id=rec["cgroup_id"],
                        flags=["clone"])
        if parent is not None:
            child = replace(parent, pid=rec["pid"], tid=rec["pid"], ktime=rec["ktime"], ppid=rec["ppid"],
                            parent_exec_id=parent.exec_id, flags=["clone"], exited=False)
        self._add(child)

    def _exec(self, rec: dict[str, Any]) -> dict[str, Any]:
        pid = rec["pid"]
        before = self.lookup(pid, rec["ktime"])  # the forked copy (or the image exec replaces)
        flags = ["execve"] + (["clone"] if before is not None and before.flags == ["clone"] else [])
        flags += ["truncFilename"] if rec["path_truncated"] else []
        argv = rec["argv"]
        if rec["args_truncated"]:
            argv = self._cmdline(pid) or argv
            flags += [] if argv is not rec["argv"] else ["truncArgs"]
        p = Process(pid, rec["ktime"], self.node, binary=rec["path"], argv=argv, uid=rec["uid"], auid=rec["auid"],
                    tid=rec["tid"], ppid=rec["ppid"], ns=rec["ns"], cgroup_id=rec["cgroup_id"], flags=flags,
                    cwd=_readlink(self.proc / str(pid) / "cwd"),
                    docker=_container_id(self.proc / str(pid) / "cgroup"))
        if not p.cwd:  # gone before we read /proc: Tetragon's errorCWD, never a guess
            p.flags.append("errorCWD")
        p.parent_exec_id = self._parent_id(rec["ppid"], rec["ktime"])
        self._add(p)
        return {"event": "process_exec", **self.blocks(pid, rec["ktime"])}

    def _exit(self, rec: dict[str, Any]) -> dict[str, Any]:
        p = self.lookup(rec["pid"], rec["ktime"])
        out = {"event": "process_exit", **self.blocks(rec["pid"], rec["ktime"])}
        code = rec["exit_code"]
        out["status"] = (code >> 8) & 0xFF
        out["signal"] = signal.Signals(code & 0x7F).name if code & 0x7F else ""
        if p is not None:
            p.exited = True
        self._evict()
        return out

    # ------------------------------------------------------------------ lookup
    def lookup(self, pid: int, ktime: int | None = None) -> Process | None:
        """The execution `pid` was running at `ktime` (newest when None); unknown pids are
        read from /proc while they live."""
        for p in reversed(self.by_pid.get(pid, [])):
            if ktime is None or p.ktime <= ktime:
                return p
        live = self._from_proc(pid)
        if live is None:
            return None
        live.parent_exec_id = self._parent_id(live.ppid, live.ktime)
        self._add(live)
        return live if ktime is None or live.ktime <= ktime else None

    def blocks(self, pid: int, ktime: int | None = None) -> dict[str, Any]:
        """`process` (and `parent`, when known) for an event of `pid` at `ktime`."""
        if not self.seeded:
            self.seed()
        p = self.lookup(pid, ktime)
        if p is None:
            return {"process": {"pid": pid, "flags": "unknown"}}
        out: dict[str, Any] = {"process": p.block(self.boot_offset_ns)}
        parent = self.by_id.get(p.parent_exec_id)
        if parent is not None:
            out["parent"] = parent.block(self.boot_offset_ns)
        return out

    def ancestors(self, pid: int) -> list[Process]:
        """Parent, grandparent, … of pid's current execution (at most MAX_ANCESTORS)."""
        p, out = self.lookup(pid), []
        while p is not None and p.parent_exec_id in self.by_id and len(out) < MAX_ANCESTORS:
            p = self.by_id[p.parent_exec_id]
            out.append(p)
        return out

    def _parent_id(self, ppid: int, ktime: int) -> str:
        parent = self.lookup(ppid, ktime) if ppid else None
        return parent.exec_id if parent is not None else ""

    def _add(self, p: Process) -> None:
        self.by_pid.setdefault(p.pid, []).append(p)
        self.by_pid[p.pid].sort(key=lambda q: q.ktime)
        self.by_id[p.exec_id] = p

    def _evict(self) -> None:
        """Past MAX_ENTRIES, forget exited executions, oldest first (their children may
        still name them as parent_exec_id; the id stays valid, the block is gone)."""
        if len(self.by_id) <= MAX_ENTRIES:
            return
        gone = sorted((p for p in self.by_id.values() if p.exited), key=lambda p: p.ktime)
        for p in gone[: len(self.by_id) - MAX_ENTRIES]:
            del self.by_id[p.exec_id]
            self.by_pid[p.pid] = [q for q in self.by_pid[p.pid] if q is not p]

    def _cmdline(self, pid: int) -> list[str]:
        try:
            raw = (self.proc / str(pid) / "cmdline").read_bytes().rstrip(b"\0")
        except OSError:
            return []
        return [a.decode(errors="replace") for a in raw.split(b"\0")] if raw else []


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path).removesuffix(" (deleted)")
    except OSError:
        return ""


def _read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return default


def _ns_inum(path: Path) -> int:
    m = re.search(r"\[(\d+)\]", _readlink(path))
    return int(m[1]) if m else 0


def _container_id(path: Path) -> str:
    """Tetragon's `docker`: the first 15 hex digits of a container id in the cgroup path."""
    try:
        m = _CONTAINER.search(path.read_text())
    except OSError:
        return ""
    return m[1][:15] if m else ""


_CACHE: ProcessCache | None = None


def shared() -> ProcessCache:
    """The cache the stream's decoders share (one per process; seeded on first use)."""
    global _CACHE
    if _CACHE is None:
        _CACHE = ProcessCache()
    return _CACHE
