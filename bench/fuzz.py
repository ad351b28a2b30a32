"""Mutation fuzzing of load -> validate -> compile (issue #11).

Seeds: policies/, docs/examples/ and, when present, the conformance corpus beside the repo
(../shared/corpus). Each case mutates one seed, either at the YAML-tree level (a scalar
becomes a huge/negative integer, an empty or non-ASCII string, a list or a mapping; a key
is dropped or renamed; a list item duplicated) or at the byte level (YAML punctuation,
anchors, tags and merge keys spliced in, bytes dropped or flipped, lines repeated).

The property, per case: `bpfpolicy validate` exits 0 or 1 with no traceback, within the
per-case timeout; and when it exits 0, `bpfpolicy compile` (clang) exits 0 too. Compiling
every validated case is slow, so a deterministic sample (--compile-fraction) is compiled.

    python bench/fuzz.py --cases 100000 --seconds 1800 --jobs 2

Last line: one JSON object (cases, cases/s, tracebacks, hangs, clang failures on validated
input, and the first reproducers of each, written to --repro-dir).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
SUFFIXES = (".yaml", ".yml", ".json")


# ------------------------------------------------------------------ seeds


def seed_files(corpus: Path | None = CORPUS) -> list[tuple[str, str]]:
    """(file name, text) of every seed policy, in a stable order."""
    roots = [ROOT / "policies", ROOT / "docs" / "examples"]
    if corpus is not None and corpus.is_dir():
        roots.append(corpus)
    out = []
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in SUFFIXES:
                try:
                    out.append((p.name, p.read_text()))
                except (OSError, UnicodeDecodeError):
                    continue
    return out


# ------------------------------------------------------------------ mutations

HUGE = ["9" * 5000, "18446744073709551616", "-9223372036854775809", "4294967296", "0x" + "f" * 40]
STRINGS = ["", " ", "ä\u202e\u200bé", "\U0001F600" * 3, "-1", "0", "5:1", "x" * 300, "a\nb",
           "list:nope", "/etc/shadow", "10.0.0.0/33", "::/0", "${HOME}", "*/", "\"; }", "\\x00"]
SPLICE = ["[", "]", "{", "}", ": ", "- ", "&a ", "*a", "!!int ", "!!timestamp ", "!!python/object:os.system ",
          "<<: *a\n", "<<: 5\n", "? ", "|\n", ">-\n", "\t", "#", "'", '"', ",", "---\n", "%YAML 1.1\n",
          "!!binary ", "~", "1e5", "0b2", "0o9", "1:30", "\ufeff"]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        node = node[p]
    return node


# Edges of every integer width an argument, port, PID or inode can have.
BOUNDARIES = [0, -1, 1, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32 - 1,
              2**32, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64 - 1, 2**64]


def _boundary(rng: random.Random, old: Any) -> Any:
    """An integer edge in place of an integer (or a range "a:b" of edges in place of one)."""
    n = rng.choice(BOUNDARIES)
    if isinstance(old, str) and ":" in old:
        return f"{n}:{rng.choice(BOUNDARIES)}"
    if isinstance(old, str) or rng.random() < 0.3:
        return rng.choice([str(n), hex(n) if n >= 0 else str(n)])
    return n


def _is_intlike(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, str) and bool(v) and all(c in "0123456789-:x" for c in v)


def _scalar(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.3:
        v = rng.choice(HUGE)
        return int(v) if v.lstrip("-").isdigit() and len(v) < 40 and rng.random() < 0.5 else v
    if r < 0.45:
        return -rng.choice([1, 2**31, 2**63, 2**64, 7])
    if r < 0.75:
        return rng.choice(STRINGS)
    if r < 0.85:
        return [rng.choice(STRINGS), 1]
    if r < 0.95:
        return {rng.choice(["x", "values", "operator", "index"]): rng.choice(STRINGS)}
    return rng.choice([None, True, 0.5, [], {}])


def mutate_tree(rng: random.Random, data: Any) -> Any:
    for _ in range(rng.randint(1, 3)):
        paths = _paths(data)
        path = rng.choice(paths)
        if not path:
            continue
        parent, key = _get(data, path[:-1]), path[-1]
        op = rng.random()
        if _is_intlike(parent[key]) and rng.random() < 0.6:  # mild: stays valid more often
            parent[key] = _boundary(rng, parent[key])
        elif op < 0.45:
            parent[key] = _scalar(rng)
        elif op < 0.6 and isinstance(parent, dict):
            del parent[key]
        elif op < 0.75 and isinstance(parent, dict):
            new = rng.choice([str(key)[:-1], str(key) + "s", str(key).upper(), "unknownField"])
            if new and new not in parent:
                parent[new] = parent.pop(key)
        elif op < 0.9 and isinstance(parent, list):
            parent.insert(int(key), _copy(parent[int(key)]))
        elif isinstance(parent, list):
            parent[int(key)] = []
        else:
            parent[key] = _scalar(rng)
    return data


def _copy(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def mutate_bytes(rng: random.Random, text: str) -> str:
    b = text
    for _ in range(rng.randint(1, 4)):
        if not b:
            b = rng.choice(SPLICE)
            continue
        i = rng.randrange(len(b))
        op = rng.random()
        if op < 0.45:
            b = b[:i] + rng.choice(SPLICE) + b[i:]
        elif op < 0.65:
            b = b[:i] + b[i + rng.randint(1, 8):]
        elif op < 0.8:
            lines = b.splitlines(keepends=True)
            k = rng.randrange(len(lines))
            lines.insert(k, lines[k])
            b = "".join(lines)
        else:
            b = b[:i] + chr(rng.choice([0x20, 0x3A, 0x2D, 0x7B, 0x5B, 0x26, 0x2A, 0xE9, 0x41])) + b[i + 1:]
    return b


def make_case(seed: int, seeds: list[tuple[str, str]]) -> tuple[str, bytes]:
    """The case for `seed`: (file name, content). Deterministic."""
    rng = random.Random(seed)
    name, text = seeds[rng.randrange(len(seeds))]
    if rng.random() < 0.7:
        try:
            if name.endswith(".json"):
                docs = [json.loads(text)]
            else:
                docs = list(yaml.safe_load_all(text))
            docs = [d for d in docs if d is not None]
            if docs:
                k = rng.randrange(len(docs))
                docs[k] = mutate_tree(rng, docs[k])
                if name.endswith(".json"):
                    return name, json.dumps(docs[0], indent=1, default=str).encode()
                return name, yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True).encode()
        except Exception:  # a seed PyYAML cannot round-trip: mutate its bytes instead
            pass
    return name, mutate_bytes(rng, text).encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------ running


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def run_cli(*args: str) -> tuple[int, str, str | None]:
    """The real CLI in-process: (exit code, output, traceback or None)."""
    from click.testing import CliRunner

    from bpfpolicy.cli import cli

    try:
        r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    except Hang:
        raise
    except BaseException:  # noqa: BLE001 - a traceback is exactly what we are looking for
        return -1, "", traceback.format_exc()
    tb = "".join(traceback.format_exception(*r.exc_info)) if r.exc_info and r.exit_code not in (0, 1, 2) else None
    return r.exit_code, r.output, tb


# Every kernel feature on: what the lowering and clang do must not depend on this host's
# kprobes/LSM support (a host-feature refusal is a located error, not a clang failure).
ALL_FEATURES = {"kernel": "fuzz", "btf": True, "kprobes": True, "kprobe_override": True,
                "error_injection": True, "trampoline": True, "bpf_lsm": True,
                "syscall_tracepoints": True, "send_signal": True, "reasons": {}}


def compile_validated(path: Path) -> tuple[str | None, str | None]:
    """Compile every policy of a validated file (clang included). (problem, detail):
    `traceback`, `clang-failed-after-validate` (generated C rejected by clang),
    `compile-refused-after-validate` (another located compile error), or (None, None)."""
    from bpfpolicy.kinds.base import CompileContext
    from bpfpolicy.policy.compile import compile_policy
    from bpfpolicy.policy.validate import validate_paths

    try:
        result = validate_paths([path])
        ctx = CompileContext(options={"features": ALL_FEATURES,
                                      "inventory": str(ROOT / "examples" / "host-config.yaml")})
        for policy in result.policies:
            _, diags = compile_policy(policy, ctx)
            errs = [d for d in diags if d.severity == "error"]
            if any("failed to compile" in d.message for d in errs):
                return "clang-failed-after-validate", "\n".join(map(str, errs))[-2000:]
            if errs:
                return "compile-refused-after-validate", "\n".join(map(str, errs))[-2000:]
    except Hang:
        raise
    except Exception:  # noqa: BLE001
        return "traceback", traceback.format_exc()
    return None, None


def check_case(seed: int, seeds: list[tuple[str, str]], workdir: Path, compile_it: bool,
               timeout: float = 10.0) -> dict[str, Any]:
    """One case: {'seed', 'validate', 'compile', 'problem', 'detail'}."""
    name, content = make_case(seed, seeds)
    d = workdir / f"c{seed}"
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    path.write_bytes(content)
    out: dict[str, Any] = {"seed": seed, "file": name, "validate": None, "compile": None,
                           "problem": None, "detail": None}
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        code, text, tb = run_cli("validate", str(path))
        out["validate"] = code
        if tb or code not in (0, 1):
            out["problem"], out["detail"] = "traceback", tb or text[-2000:]
        elif "internal error while checking" in text:  # a checker crash, caught by validate
            out["problem"] = "internal-error"
            out["detail"] = next(ln for ln in text.splitlines() if "internal error while checking" in ln)
        elif code == 0 and compile_it:
            problem, detail = compile_validated(path)
            out["compile"] = 0 if problem is None else 1
            out["problem"], out["detail"] = problem, detail
    except Hang:
        out["problem"], out["detail"] = "hang", f"no answer within {timeout} s"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _rmtree(d)
    return out


def _rmtree(d: Path) -> None:
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def sampled(seed: int, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:4], "big")
    return h < fraction * 2**32


def _worker(job: tuple[int, int, int, float, float, float, str]) -> list[dict[str, Any]]:
    start, stop, step, fraction, deadline, timeout, workdir = job
    seeds = seed_files()
    results = []
    for seed in range(start, stop, step):
        if time.time() > deadline:
            break
        r = check_case(seed, seeds, Path(workdir), sampled(seed, fraction), timeout)
        results.append({k: r[k] for k in ("seed", "validate", "compile", "problem")}
                       | ({"detail": r["detail"], "file": r["file"]} if r["problem"] else {}))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="per-case timeout (s)")
    ap.add_argument("--compile-fraction", type=float, default=0.02,
                    help="fraction of validated cases also compiled with clang")
    ap.add_argument("--repro-dir", type=Path, default=Path("fuzz-repro"))
    ap.add_argument("--show", type=int, default=5, help="reproducers printed per problem")
    args = ap.parse_args()

    import multiprocessing as mp

    seeds = seed_files()
    t0 = time.time()
    deadline = t0 + args.seconds
    chunk = 500
    jobs = []
    with tempfile.TemporaryDirectory(prefix="bpfpolicy-fuzz-") as tmp:
        for s in range(args.first_seed, args.first_seed + args.cases, chunk):
            e = min(s + chunk, args.first_seed + args.cases)
            jobs.append((s, e, 1, args.compile_fraction, deadline, args.timeout, tmp))
        results: list[dict[str, Any]] = []
        with mp.get_context("fork").Pool(args.jobs) as pool:
            for part in pool.imap_unordered(_worker, jobs):
                results += part
    elapsed = time.time() - t0
    problems: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(results, key=lambda r: r["seed"]):
        if r["problem"]:
            problems.setdefault(r["problem"], []).append(r)
    args.repro_dir.mkdir(parents=True, exist_ok=True)
    shown: dict[str, list[dict[str, Any]]] = {}
    for kind, rs in problems.items():
        shown[kind] = []
        seen_sigs: set[str] = set()
        for r in rs:
            sig = (r.get("detail") or "").strip().splitlines()[-1:] or [""]
            if sig[0] in seen_sigs and len(shown[kind]) >= 1:
                continue
            seen_sigs.add(sig[0])
            name, content = make_case(r["seed"], seeds)
            repro = args.repro_dir / f"{kind}-{r['seed']}-{name}"
            repro.write_bytes(content)
            shown[kind].append({"seed": r["seed"], "file": str(repro), "last_line": sig[0][:300]})
            if len(shown[kind]) >= args.show:
                break
    refusals: dict[str, int] = {}
    for r in problems.get("compile-refused-after-validate", []):
        line = (r.get("detail") or "").strip().splitlines()[-1:] or [""]
        shape = re.sub(r'"[^"]*"|\d+', "_", line[0].split(": ", 2)[-1])[:120]
        refusals[shape] = refusals.get(shape, 0) + 1
    validated = sum(1 for r in results if r["validate"] == 0)
    compiled = sum(1 for r in results if r["compile"] is not None)
    print(f"{len(results)} cases in {elapsed:.0f} s; {validated} validated, {compiled} compiled",
          file=sys.stderr)
    summary = {
        "cases": len(results),
        "seconds": round(elapsed, 1),
        "cases_per_s": round(len(results) / elapsed, 1) if elapsed else None,
        "seeds": len(seeds),
        "validated": validated,
        "compiled": compiled,
        "compile_fraction": args.compile_fraction,
        "tracebacks": len(problems.get("traceback", [])),
        "hangs": len(problems.get("hang", [])),
        "internal_errors": len(problems.get("internal-error", [])),
        "clang_failures_on_validated": len(problems.get("clang-failed-after-validate", [])),
        "compile_refusals_on_validated": len(problems.get("compile-refused-after-validate", [])),
        "compile_refusal_shapes": dict(sorted(refusals.items(), key=lambda kv: -kv[1])[:10]),
        "unique_tracebacks": len({(r.get("detail") or "").strip().splitlines()[-1:][0] if r.get("detail") else ""
                                  for r in problems.get("traceback", [])}),
        "reproducers": shown,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(summary))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
