#!/usr/bin/env python3
"""matchBinaries followChildren: what it adds to a hooked syscall that does not match.

One run, interleaved rounds, medians of per-round differences to "no program" (host
drift cancels). A getppid(2) loop in this process, N calls per measurement; each round:
no program, a `sys_getppid` policy (this host: tp/syscalls/sys_enter_getppid) whose
`matchBinaries In [/nonexistent/x]` misses, and the same with `followChildren: true`
(this process and each ancestor: the executable's file name is read, and its whole path
walked only when the name is a listed one's). `depth` is how many tasks the walk visits
from this process (it stops at init). Plain matchBinaries reads the file name first too;
`matchBinaries_name_hit` lists `/nonexistent/<this executable's name>`, so its name
matches and the full path is walked on every call: what plain matchBinaries cost on
every call before the name check.

    .venv/bin/python bench/tracing_follow_children.py [--iters N] [--rounds R]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POLICY = """apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata: {{name: bench-follow}}
spec:
  kprobes:
  - call: sys_getppid
    syscall: true
    selectors:
    - matchBinaries: [{{operator: In, values: ["{value}"]{extra}}}]
"""
SYS_GETPPID = 110  # x86_64


def build(extra: str, tmp: Path, value: str = "/nonexistent/x"):  # noqa: ANN201
    from bpfpolicy.kinds import CompileContext
    from bpfpolicy.policy.compile import compile_policy
    from bpfpolicy.policy.validate import validate_paths

    path = tmp / f"p{len(extra)}-{len(value)}.yaml"
    path.write_text(POLICY.format(extra=extra, value=value))
    (policy,) = validate_paths([path]).policies
    art, diags = compile_policy(policy, CompileContext())
    assert art is not None, diags
    return art


def depth() -> int:
    n, pid = 0, os.getpid()
    while pid > 0 and n < 64:
        n += 1
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    from bpfpolicy.kernel import libbpf

    libc = ctypes.CDLL(None, use_errno=True)

    def loop() -> float:
        t = time.perf_counter_ns()
        for _ in range(args.iters):
            libc.syscall(SYS_GETPPID)
        return (time.perf_counter_ns() - t) / args.iters

    with tempfile.TemporaryDirectory() as d:
        exe_name = os.path.basename(os.readlink("/proc/self/exe"))
        arts = {"matchBinaries": build("", Path(d)),
                "matchBinaries_name_hit": build("", Path(d), f"/nonexistent/{exe_name}"),
                "followChildren": build(", followChildren: true", Path(d))}
    objs = {}
    for k, art in arts.items():
        obj = libbpf.BpfObject.open_mem(art.files["prog.bpf.o"], "bench_follow")
        obj.load()
        objs[k] = obj
    diffs: dict[str, list[float]] = {k: [] for k in arts}
    for _ in range(args.rounds):
        base = loop()
        for k, art in arts.items():
            links = [objs[k].program(p["name"]).attach() for p in art.manifest["programs"]]
            try:
                diffs[k].append(loop() - base)
            finally:
                for link in links:
                    link.close()
    for obj in objs.values():
        obj.close()
    for k, v in diffs.items():
        print(f"{k:>22}: +{statistics.median(v):8.1f} ns per getppid (rounds {', '.join(f'{x:.0f}' for x in v)})")
    print(json.dumps({"bench": "tracing_follow_children", "kernel": os.uname().release, "iters": args.iters,
                      "rounds": args.rounds, "depth": depth(),
                      "added_ns": {k: round(statistics.median(v), 1) for k, v in diffs.items()}}))


if __name__ == "__main__":
    main()
