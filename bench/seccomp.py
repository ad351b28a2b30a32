#!/usr/bin/env python3
"""Seccomp benchmark: Docker's default profile on x86_64, bpfpolicy vs libseccomp 2.5.4.

Both filters are built from the same resolved profile (Docker's resolution: x86_64 +
X86 + X32, Docker's default capabilities, kernel 6.18); libseccomp via python3-seccomp
at optimize level 2 (Attr.CTL_OPTIMIZE, the binary tree runc uses above 32 rules).

Static metrics run both filters in bpfpolicy's emulator (checked against the kernel in
tests/kinds/seccomp/test_seccomp_kernel.py): total instructions, executed instructions per allowed
x86_64 syscall (mean / worst, zero arguments), the worst over every number and
argument vector of every ABI, and the syscalls the kernel's action cache would prove
constant. Timing comes from a small C helper (bench/seccomp_helper.c, built here with
gcc): attach time (median over forks) and ns per syscall in a tight C loop, alone and
with a non-cacheable filter stacked first (so the filter's own cost shows).

    .venv/bin/python bench/seccomp.py [--iters N] [--reps R]

Last line: one JSON object {"bench", "kernel", "rows", "ratios"} (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this file is named seccomp.py: keep bench/ off the path so `import seccomp` finds
# libseccomp's binding, not this script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from bpfpolicy.kinds.seccomp import bpf, emulator, libseccomp_ref, render  # noqa: E402
from bpfpolicy.kinds.seccomp.api import compile_profile  # noqa: E402
from bpfpolicy.kinds.seccomp.resolve import Target  # noqa: E402
from bpfpolicy.syscalls.tables import TABLES  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "seccomp" / "moby-profiles-default.json"
AUDIT = {"x86_64": 0xC000003E, "i386": 0x40000003, "x32": 0xC000003E}
X64 = TABLES["x86_64"]
CASE = "docker-default-x86_64"


def static_metrics(insns: list[bpf.Insn], profile: dict) -> dict:
    st = render.stats(insns, AUDIT["x86_64"], range(max(X64.values()) + 1))
    worst = 0
    for abi, audit in AUDIT.items():
        for name, nr in TABLES[abi].items():
            rules = [r for r in profile["syscalls"] if name in r["names"] and r.get("args")]
            vecs = {(0,) * 6}
            for r in rules:
                for a in r["args"]:
                    v = int(a["value"]) & (2**64 - 1)
                    for x in (v, v + 1, v - 1, 0xFFFFFFFF, 2**64 - 1):
                        vec = [0] * 6
                        vec[int(a["index"])] = x & (2**64 - 1)
                        vecs.add(tuple(vec))
            for vec in vecs:
                worst = max(worst, emulator.run(insns, emulator.SeccompData(nr, audit, vec)).executed)
    pers = emulator.run(insns, emulator.SeccompData(X64["personality"], AUDIT["x86_64"], (0xFFFFFFFF, 0, 0, 0, 0, 0)))
    ppid = emulator.run(insns, emulator.SeccompData(X64["getppid"], AUDIT["x86_64"]))
    return {"insns": st["insns"], "mean_executed": st["mean_executed_allowed"],
            "worst_executed_allowed": st["worst_executed_allowed"], "worst_executed_any_abi": worst,
            "cache_eligible": st["cache_eligible"], "getppid_executed": ppid.executed,
            "personality_executed": pers.executed}


def build_helper(tmp: Path) -> Path | None:
    if not shutil.which("gcc"):
        return None
    exe = tmp / "seccomp_helper"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(ROOT / "bench" / "seccomp_helper.c")], check=True)
    return exe


def helper(exe: Path, *args: object) -> float:
    out = subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=1_000_000, help="syscalls per timing loop")
    ap.add_argument("--reps", type=int, default=9, help="timing repetitions (median)")
    ap.add_argument("--attach-n", type=int, default=101)
    args = ap.parse_args()
    if not CORPUS.is_file():
        print(f"seccomp bench: {CORPUS} not found (the corpus sits beside the repo)", file=sys.stderr)
        return 1
    profile = json.loads(CORPUS.read_text())
    target = Target.make("x86_64", None, (6, 18))
    t0 = time.perf_counter()
    ours = compile_profile(profile, target)
    ours_ms = (time.perf_counter() - t0) * 1000
    filters: dict[str, tuple[bytes, float]] = {"bpfpolicy": (ours.filter_bytes, ours_ms)}
    anchor = "libseccomp-2.5.4-L2"
    if libseccomp_ref.available():
        ref = libseccomp_ref.build(ours.profile, optimize=2)
        filters[anchor] = (ref.filter_bytes, ref.build_ms)
    else:
        print("seccomp bench: python3-seccomp missing; libseccomp column skipped", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bpfpolicy-bench-") as tmpd:
        tmp = Path(tmpd)
        exe = build_helper(tmp)
        paths = {}
        for impl, (raw, _) in filters.items():
            p = tmp / f"{impl}.bin"
            p.write_bytes(raw)
            paths[impl] = p
        timing: dict[str, dict[str, float]] = {}
        if exe is not None and sys.platform == "linux" and os.uname().machine == "x86_64":
            cases = [("getppid", X64["getppid"], 0), ("personality", X64["personality"], 0xFFFFFFFF)]
            impls = ["none", *filters]
            samples: dict[tuple[str, str], list[float]] = {}
            # round-robin over implementations so drift (frequency, noise) hits all alike
            for _ in range(args.reps):
                for impl in impls:
                    path = paths.get(impl, "none")
                    for shim in (0, 1):
                        for cname, nr, a0 in cases:
                            key = (impl, f"{cname}_ns{'_shim' if shim else ''}")
                            samples.setdefault(key, []).append(helper(exe, "loop", shim, path, nr, a0, args.iters))
            for (impl, metric), vals in samples.items():
                timing.setdefault(impl, {})[metric] = round(statistics.median(vals), 1)
            for impl in filters:
                timing[impl]["attach_us"] = round(helper(exe, "attach", paths[impl], args.attach_n) / 1000, 1)
        for impl, (raw, build_ms) in filters.items():
            row = {"impl": impl, "case": CASE, **static_metrics(bpf.unpack(raw), ours.profile),
                   "build_ms": round(build_ms, 2), **timing.get(impl, {})}
            rows.append(row)
        if "none" in timing:
            rows.append({"impl": "none", "case": CASE, **timing["none"]})
    ratios = {}
    if len(filters) > 1:
        a, b = rows[0], rows[1]
        for metric in ("insns", "mean_executed", "worst_executed_any_abi", "cache_eligible", "attach_us",
                       "getppid_ns", "personality_ns", "getppid_ns_shim", "personality_ns_shim"):
            if metric in a and metric in b and b[metric]:
                ratios[f"{metric}@{CASE}"] = round(a[metric] / b[metric], 3)
        if "none" in timing:  # the filter's own cost over no filter, under the shim
            for c in ("getppid", "personality"):
                base = timing["none"][f"{c}_ns_shim"]
                over_a = a[f"{c}_ns_shim"] - base
                over_b = b[f"{c}_ns_shim"] - base
                if over_a > 0 and over_b > 0:  # below the noise floor otherwise
                    ratios[f"{c}_filter_overhead_ns@{CASE}"] = round(over_a / over_b, 3)
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print(json.dumps({"bench": "seccomp", "kernel": os.uname().release, "rows": rows, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
