#!/usr/bin/env python3
"""TracingPolicy benchmark: added cost per hooked syscall, bpfpolicy vs bpftrace vs strace.

One run, interleaved rounds, medians (added ns: median of per-round differences). A small C helper (built here with cc) calls
openat(AT_FDCWD, path, O_RDONLY) N times on a path that does not exist and prints ns per
call. Each round measures, in turn: no program; bpfpolicy's TracingPolicy on
sys_openat (this host: tp/syscalls/sys_enter_openat) with `Prefix /etc/shadow` + Post;
bpftrace (Debian's) with the same filter on the same tracepoint; strace -f -e openat
(fewer iterations: it is ~100x slower). Paths: a non-matching one and a matching one
(`/etc/shadow-bench-nonexistent`, so nothing is read). A third bpfpolicy policy has a
selector with several matchArgs (Prefix on the path AND a flags mask).
`kernel.bpf_stats_enabled` gives ns per program run for both BPF tools.

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
import textwrap
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
int main(int argc, char **argv) {
	long n = atol(argv[2]); struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) { int fd = openat(AT_FDCWD, argv[1], O_RDONLY); if (fd >= 0) close(fd); }
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
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
    - matchArgs:
      - {{index: 1, operator: Prefix, values: ["/etc/shadow"]}}
{extra}"""
MULTI = "      - {index: 2, operator: Mask, values: ['0x80000']}\n      - {index: 2, operator: NotEqual, values: ['1']}\n"
BPFTRACE = ('tracepoint:syscalls:sys_enter_openat /strncmp(str(args->filename), "/etc/shadow", 11) == 0/ '
            '{ printf("%d %s %s\\n", pid, comm, str(args->filename)); }')


def build_helper(tmp: Path) -> Path:
    src, exe = tmp / "h.c", tmp / "h"
    src.write_text(HELPER)
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def run_helper(exe: Path, path: str, n: int, prefix: list[str] | None = None) -> float:
    out = subprocess.run([*(prefix or []), str(exe), path, str(n)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def prog_stats() -> dict[int, tuple[str, int, int]]:
    out = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout)
    return {p["id"]: (p.get("name", ""), p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in out}


class Bpfpolicy:
    """A compiled TracingPolicy loaded and attached through bpfpolicy's libbpf layer."""

    def __init__(self, tmp: Path, name: str, extra: str) -> None:
        from helpers.tracing import compile_one

        path = tmp / f"{name}.yaml"
        path.write_text(POLICY.format(name=name, extra=extra))
        self.art, diags = compile_one(path)
        assert self.art is not None, diags
        self.obj = None

    def __enter__(self) -> Bpfpolicy:
        from bpfpolicy.kernel import libbpf

        from helpers.tracing import RingReader

        self.obj = libbpf.BpfObject.open_mem(self.art.files["prog.bpf.o"], self.art.name.replace("-", "_"))
        self.obj.load()
        self.links = [self.obj.program(p["name"]).attach() for p in self.art.manifest["programs"]]
        self.reader = RingReader(self.obj.map("events").fd)
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.poll(0)
        self.reader.close()
        for link in self.links:
            link.close()
        self.obj.close()


class Bpftrace:
    def __enter__(self) -> Bpftrace:
        self.p = subprocess.Popen(["bpftrace", "-e", BPFTRACE], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(3.0)  # bpftrace compiles and attaches (LLVM) before it traces
        return self

    def __exit__(self, *exc: object) -> None:
        self.p.terminate()
        self.p.wait()


def measure(exe: Path, iters: int, label: str, res: dict, per_run: dict, pre: set[int] | None) -> None:
    """Both paths; with `pre` (ids loaded before the tool), bpf_stats ns per run of the
    tool's own programs, per path."""
    for kind, path in (("miss", MISS), ("hit", HIT)):
        base = prog_stats() if pre is not None else {}
        res.setdefault((label, kind), []).append(run_helper(exe, path, iters))
        ns = stats_delta(base, prog_stats(), pre) if pre is not None else None
        if ns is not None:
            per_run.setdefault((label, kind), []).append(ns)


def stats_delta(before: dict, after: dict, exclude: set[int]) -> float | None:
    runs = [(after[i][1] - before.get(i, ("", 0, 0))[1], after[i][2] - before.get(i, ("", 0, 0))[2])
            for i in after if i not in exclude and after[i][2] > before.get(i, ("", 0, 0))[2]]
    t, c = sum(r[0] for r in runs), sum(r[1] for r in runs)
    return t / c if c else None


def added(res: dict[tuple[str, str], list[float]], label: str, kind: str) -> float:
    """Median over rounds of (tool - no program) within the same round: the host's
    drift between rounds (2 shared cores) cancels, unlike a difference of medians."""
    return statistics.median(t - n for t, n in zip(res[(label, kind)], res[("none", kind)], strict=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    res: dict[tuple[str, str], list[float]] = {}
    per_run: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build_helper(tmp)
        tools = {"bpfpolicy": lambda: Bpfpolicy(tmp, "one", ""),
                 "bpfpolicy-multi": lambda: Bpfpolicy(tmp, "multi", MULTI),
                 "bpftrace": Bpftrace}
        for _ in range(args.rounds):
            measure(exe, args.iters, "none", res, per_run, None)
            for label, make in tools.items():  # `none` comes first in every round: paired with each tool
                tool = make()
                pre = prog_stats()  # other programs on this shared host are not ours
                with tool:
                    measure(exe, args.iters, label, res, per_run, set(pre))
            for kind, path in (("miss", MISS), ("hit", HIT)):
                n = max(args.iters // 100, 1000)
                res.setdefault(("strace", kind), []).append(
                    run_helper(exe, path, n, ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=openat"]))
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=False)
    med = {k: statistics.median(v) for k, v in res.items()}
    rows = []
    for label in ("none", "bpfpolicy", "bpfpolicy-multi", "bpftrace", "strace"):
        row = {"tool": label}
        for kind in ("miss", "hit"):
            row[f"{kind}_ns"] = round(med[(label, kind)], 1)
            row[f"{kind}_added_ns"] = round(added(res, label, kind), 1)
            if (label, kind) in per_run:
                row[f"{kind}_bpf_ns_per_run"] = round(statistics.median(per_run[(label, kind)]), 1)
        rows.append(row)
    by = {r["tool"]: r for r in rows}
    ratios = {f"bpfpolicy/bpftrace added {k}": round(by["bpfpolicy"][f"{k}_added_ns"]
                                                     / max(by["bpftrace"][f"{k}_added_ns"], 1e-9), 2)
              for k in ("miss", "hit")}
    print(textwrap.dedent(f"""\
        {'tool':16} {'miss ns':>9} {'+miss':>9} {'run ns':>8} {'hit ns':>9} {'+hit':>9} {'run ns':>8}"""))
    for r in rows:
        print(f"{r['tool']:16} {r['miss_ns']:9} {r['miss_added_ns']:9} {r.get('miss_bpf_ns_per_run', ''):>8} "
              f"{r['hit_ns']:9} {r['hit_added_ns']:9} {r.get('hit_bpf_ns_per_run', ''):>8}")
    print(json.dumps({"bench": "tracing", "kernel": platform.release(), "iters": args.iters,
                      "rounds": args.rounds, "rows": rows, "ratios": ratios}))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/tracing.py needs root (loads BPF programs)")
    main()
