#!/usr/bin/env python3
"""TracingPolicy benchmark: added cost per hooked syscall, bpfpolicy vs bpftrace vs strace.

One run, interleaved rounds, medians (added ns: median of per-round differences to "no
program" in the same round, so the host's drift cancels). A small C helper (built here
with cc) calls openat(AT_FDCWD, path, O_RDONLY) N times on a path that does not exist, or
getppid N times, and prints ns per call. Each round measures, in turn: no program;
bpfpolicy's TracingPolicy on sys_openat (this host: tp/syscalls/sys_enter_openat) with
`Prefix /etc/shadow` + Post; the same with several matchArgs in one selector (flags Mask
and NotEqual next to the Prefix); three selectors on the path (Prefix, Equal, Prefix:
one user read per run, shared); a matchPIDs-only policy that never matches (the floor:
what the syscall tracepoint costs a program that reads nothing); bpftrace (Debian's) with
the same filters on the same tracepoint; strace -f -e openat (fewer iterations: it is
~100x slower). Paths: a non-matching one and a matching one
(`/etc/shadow-bench-nonexistent`, so nothing is read).

Added ns are measured with `kernel.bpf_stats_enabled=0` (the statistics themselves cost
every program run two clock reads, ~45 ns on this host, which would inflate every BPF
tool alike); ns per program run comes from a second, shorter pass with the statistics on.
`tax` is the added ns on an unrelated syscall (getppid) while the tool is attached.

    .venv/bin/python bench/tracing.py [--iters N] [--rounds R]

Last line: one JSON object {"bench", "kernel", "rows", "ratios"}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

HELPER = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
	long n = atol(argv[2]); struct timespec a, b, ca, cb;
	int ppid = argv[1][0] == '-';  /* "-": an unrelated syscall, the host-wide tax */
	clock_gettime(CLOCK_MONOTONIC, &a);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ca);
	if (ppid)
		for (long i = 0; i < n; i++) syscall(SYS_getppid);
	else
		for (long i = 0; i < n; i++) { int fd = openat(AT_FDCWD, argv[1], O_RDONLY); if (fd >= 0) close(fd); }
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cb);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f %.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n,
		((cb.tv_sec - ca.tv_sec) * 1e9 + (cb.tv_nsec - ca.tv_nsec)) / n);
	return 0;
}
"""
MISS = "/tmp/bench-tracing-nonexistent"
HIT = "/etc/shadow-bench-nonexistent"

POLICY = """\
apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata:
  name: bench-{name}
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {{index: 1, type: string, label: pathname}}
    - {{index: 2, type: int, label: flags}}
    selectors:
{selectors}"""
ONE = "    - matchArgs:\n      - {index: 1, operator: Prefix, values: ['/etc/shadow']}\n"
MULTI = ONE + ("      - {index: 2, operator: Mask, values: ['0x80000']}\n"
               "      - {index: 2, operator: NotEqual, values: ['1']}\n")
SELECTORS = ONE + ("    - matchArgs:\n      - {index: 1, operator: Equal, values: ['/etc/sudoers']}\n"
                   "    - matchArgs:\n      - {index: 1, operator: Prefix, values: ['/root/.ssh/']}\n")
FLOOR = "    - matchPIDs:\n      - {operator: In, values: [1]}\n"  # never the bench's pid: no read
PRINT = '{ printf("%d %s %s\\n", pid, comm, str(args->filename)); }'
BPFTRACE = ('tracepoint:syscalls:sys_enter_openat /strncmp(str(args->filename), "/etc/shadow", 11) == 0/ ' + PRINT)
BPFTRACE_SELECTORS = ('tracepoint:syscalls:sys_enter_openat /strncmp(str(args->filename), "/etc/shadow", 11) == 0'
                      ' || str(args->filename) == "/etc/sudoers"'
                      ' || strncmp(str(args->filename), "/root/.ssh/", 11) == 0/ ' + PRINT)


def build_helper(tmp: Path) -> Path:
    src, exe = tmp / "h.c", tmp / "h"
    src.write_text(HELPER)
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def run_helper(exe: Path, path: str, n: int, prefix: list[str] | None = None) -> float:
    """ns per call: CPU time of the calling process (user + system: a BPF program runs in
    the syscall's context, so it is counted, while time spent waiting for a CPU that other
    users of this shared host hold is not); wall time under strace, whose cost is mostly
    the tracer's and the context switches to it."""
    out = subprocess.run([*(prefix or []), str(exe), path, str(n)], capture_output=True, text=True, check=True)
    wall, cpu = map(float, out.stdout.strip().splitlines()[-1].split())
    return wall if prefix else cpu


def prog_stats() -> dict[int, tuple[str, int, int]]:
    out = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout)
    return {p["id"]: (p.get("name", ""), p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in out}


class Bpfpolicy:
    """A compiled TracingPolicy loaded and attached through bpfpolicy's libbpf layer."""

    def __init__(self, tmp: Path, name: str, selectors: str) -> None:
        from helpers.tracing import compile_one

        path = tmp / f"{name}.yaml"
        path.write_text(POLICY.format(name=name, selectors=selectors))
        self.art, diags = compile_one(path)
        assert self.art is not None, diags
        self.obj = None

    def __enter__(self) -> Bpfpolicy:
        from bpfpolicy.kernel import libbpf

        self.obj = libbpf.BpfObject.open_mem(self.art.files["prog.bpf.o"], self.art.name.replace("-", "_"))
        self.obj.load()
        self.links = [self.obj.program(p["name"]).attach() for p in self.art.manifest["programs"]]
        self.drain = Drain(self.obj.map("events").fd)
        return self

    def __exit__(self, *exc: object) -> None:
        self.drain.close()
        for link in self.links:
            link.close()
        self.obj.close()


class Drain:
    """Reads the events ring while the helper runs (as bpftrace reads its perf buffer),
    so the hit path posts into a ring with room instead of failing on a full one."""

    def __init__(self, fd: int) -> None:
        from bpfpolicy.kernel.ringbuf import RingBuffer

        self.n = 0
        self.rb = RingBuffer()
        self.rb.add(fd, self.count)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def count(self, _record: bytes) -> None:
        self.n += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.rb.poll(50)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.rb.close()


class Bpftrace:
    def __init__(self, script: str = BPFTRACE) -> None:
        self.script = script

    def __enter__(self) -> Bpftrace:
        self.p = subprocess.Popen(["bpftrace", "-e", self.script], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        time.sleep(3.0)  # bpftrace compiles and attaches (LLVM) before it traces
        return self

    def __exit__(self, *exc: object) -> None:
        self.p.terminate()
        self.p.wait()


def set_stats(on: bool) -> None:
    subprocess.run(["sysctl", "-qw", f"kernel.bpf_stats_enabled={int(on)}"], check=True)


def measure(exe: Path, iters: int, label: str, res: dict, per_run: dict, pre: set[int] | None) -> None:
    """Added cost with the statistics off: both paths, then getppid (the tax on a syscall
    the tool does not hook). With `pre` (ids loaded before the tool): a shorter pass with
    the statistics on, bpf_stats ns per run of the tool's own programs, per path."""
    set_stats(False)
    for kind, path in (("miss", MISS), ("hit", HIT)):
        res.setdefault((label, kind), []).append(run_helper(exe, path, iters))
    res.setdefault((label, "tax"), []).append(run_helper(exe, "-", 2 * iters))
    if pre is None:
        return
    set_stats(True)
    for kind, path in (("miss", MISS), ("hit", HIT)):
        base = prog_stats()
        run_helper(exe, path, max(iters // 5, 1000))
        ns = stats_delta(base, prog_stats(), pre)
        if ns is not None:
            per_run.setdefault((label, kind), []).append(ns)
    set_stats(False)


def stats_delta(before: dict, after: dict, exclude: set[int]) -> float | None:
    runs = [(after[i][1] - before.get(i, ("", 0, 0))[1], after[i][2] - before.get(i, ("", 0, 0))[2])
            for i in after if i not in exclude and after[i][2] > before.get(i, ("", 0, 0))[2]]
    t, c = sum(r[0] for r in runs), sum(r[1] for r in runs)
    return t / c if c else None


def added(res: dict[tuple[str, str], list[float]], label: str, kind: str) -> float:
    """Median over rounds of (tool - no program), "no program" measured right before the
    tool was attached: the host's drift (2 shared cores, other users) cancels, unlike a
    difference of medians."""
    if label == "none":
        return 0.0
    return statistics.median(t - n for t, n in zip(res[(label, kind)], res[("none@" + label, kind)], strict=True))


TOOLS = ("none", "bpfpolicy", "bpfpolicy-multi", "bpfpolicy-selectors", "bpfpolicy-floor", "bpftrace",
         "bpftrace-selectors", "strace")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    stats_was = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    res: dict[tuple[str, str], list[float]] = {}
    per_run: dict[tuple[str, str], list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            exe = build_helper(tmp)
            tools = {"bpfpolicy": lambda: Bpfpolicy(tmp, "one", ONE),
                     "bpfpolicy-multi": lambda: Bpfpolicy(tmp, "multi", MULTI),
                     "bpfpolicy-selectors": lambda: Bpfpolicy(tmp, "selectors", SELECTORS),
                     "bpfpolicy-floor": lambda: Bpfpolicy(tmp, "floor", FLOOR),
                     "bpftrace": Bpftrace,
                     "bpftrace-selectors": lambda: Bpftrace(BPFTRACE_SELECTORS)}
            for _ in range(args.rounds):
                for label, make in tools.items():
                    tool = make()
                    measure(exe, args.iters, "none@" + label, res, per_run, None)  # this tool's baseline
                    pre = prog_stats()  # other programs on this shared host are not ours
                    with tool:
                        measure(exe, args.iters, label, res, per_run, set(pre))
                measure(exe, args.iters, "none@strace", res, per_run, None)
                for kind, path in (("miss", MISS), ("hit", HIT)):
                    n = max(args.iters // 100, 1000)
                    res.setdefault(("strace", kind), []).append(
                        run_helper(exe, path, n, ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=openat"]))
    finally:
        subprocess.run(["sysctl", "-qw", f"kernel.bpf_stats_enabled={stats_was}"], check=False)
    for kind in ("miss", "hit", "tax"):  # the "none" row: every baseline of the run
        res[("none", kind)] = [x for (label, k), v in res.items() if label.startswith("none@") and k == kind
                               for x in v]
    med = {k: statistics.median(v) for k, v in res.items()}
    rows = []
    for label in TOOLS:
        row: dict[str, object] = {"tool": label}
        for kind in ("miss", "hit", "tax"):
            if (label, kind) not in res:
                continue
            row[f"{kind}_ns"] = round(med[(label, kind)], 1)
            row[f"{kind}_added_ns"] = round(added(res, label, kind), 1)
            if (label, kind) in per_run:
                row[f"{kind}_bpf_ns_per_run"] = round(statistics.median(per_run[(label, kind)]), 1)
        rows.append(row)
    by = {r["tool"]: r for r in rows}

    def ratio(a: str, b: str, k: str) -> float:
        return round(float(by[a][f"{k}_added_ns"]) / max(float(by[b][f"{k}_added_ns"]), 1e-9), 2)

    ratios = {f"bpfpolicy/bpftrace added {k}": ratio("bpfpolicy", "bpftrace", k) for k in ("miss", "hit")}
    ratios |= {f"bpfpolicy-selectors/bpftrace-selectors added {k}": ratio("bpfpolicy-selectors",
                                                                           "bpftrace-selectors", k)
               for k in ("miss", "hit")}
    ratios["bpfpolicy-floor/bpftrace added miss"] = ratio("bpfpolicy-floor", "bpftrace", "miss")
    print(f"{'tool':20} {'miss ns':>8} {'+miss':>7} {'run ns':>7} {'hit ns':>8} {'+hit':>7} {'run ns':>7} "
          f"{'+getppid':>8}")
    for r in rows:
        print(f"{r['tool']:20} {r['miss_ns']:8} {r['miss_added_ns']:7} {r.get('miss_bpf_ns_per_run', ''):>7} "
              f"{r['hit_ns']:8} {r['hit_added_ns']:7} {r.get('hit_bpf_ns_per_run', ''):>7} "
              f"{r.get('tax_added_ns', ''):>8}")
    print(json.dumps({"bench": "tracing", "kernel": platform.release(), "iters": args.iters,
                      "rounds": args.rounds, "rows": rows, "ratios": ratios}))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/tracing.py needs root (loads BPF programs)")
    main()
