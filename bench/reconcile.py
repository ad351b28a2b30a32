"""Reconcile latency and no-op cost of the controller (SPEC §6 targets).

1. `map-only`: a real XDPBlocklist policy file is rewritten with one more/less source
   while `bpfpolicy watch` (a separate process) runs; latency = file write → the
   pinned program's verdict for a packet from that source flips (checked with
   BPF_PROG_TEST_RUN on the pinned program, i.e. the kernel really changed).
2. `program-change`: the same, toggling a rule between "all traffic" and "TCP 22 only",
   which changes the generated program (a reload + atomic XDP replace).
3. `no-op@100`: 100 applied policies (small hand-written XDP artifacts, each attached
   to its own veth interface), one reconcile cycle with nothing to do: shallow (what a
   file event triggers) and deep (the interval's drift check: every pin, attachment and
   content map read back from the kernel).
4. `compile only`: the XDPBlocklist kind compiling the bench policy in-process — the
   share of (1) and (2) that is the kind's lowering, not the controller.
5. `one-line@1M` and `cidr-add` (issue #15, incremental compile): one `bpfpolicy watch`
   process holds an XDPBlocklist whose `sourceFiles` list has 1M IPv4 lines and a
   NetworkPolicy (10k CIDRs in `fromCIDR`, a tc endpoint from the config's inventory);
   rounds alternate between them. `one-line@1M` rewrites the list with line 500,000
   replaced (probe address in, then the original back); `cidr-add` appends one /32 to
   `fromCIDR`. Latency = start of the file write → BPF_PROG_TEST_RUN on the pinned program
   gives the new verdict. Each round also checks the program ids behind the pins did not
   change (map-only: no program replace). The watch log's per-cycle timing breakdown
   (`BPFPOLICY_TIMINGS=1`) gives where the milliseconds go; medians are printed.

Prints one JSON line last (docs/HELPERS.md). There is no upstream anchor for these;
the rows with impl "target" carry SPEC §6's targets and the ratios are measured/target.
Run: sudo .venv/bin/python bench/reconcile.py [--reps 9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "controller"))

from bpfpolicy.kernel import bpf  # noqa: E402
from bpfpolicy.kernel.netns import create_netns, delete_netns, ip  # noqa: E402

POLICY = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: bench}}
spec:
  interfaces: [{{name: bench0, netns: {netns}}}]
  mode: generic
  deny:
    - name: listed
      sources: [192.0.2.0/24{extra}]
{rule}"""
PROBE_SRC = "198.51.100.77"


def packet(src: str) -> bytes:
    """Ethernet + IPv4 + UDP (dst port 53) from `src`."""
    import ipaddress

    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address("10.0.0.1").packed)
    return eth + iph + struct.pack("!HHHH", 4444, 53, 8, 0) + b"\0" * 18


def verdict(pin: str, pkt: bytes) -> int | None:
    try:
        fd = bpf.obj_get(pin)
    except OSError:
        return None
    try:
        return bpf.prog_test_run(fd, pkt).retval
    finally:
        os.close(fd)


def wait_verdict(pin: str, pkt: bytes, want: int, timeout: float = 20.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if verdict(pin, pkt) == want:
            return time.perf_counter()
        time.sleep(0.0005)
    raise TimeoutError(f"verdict never became {want}")


def watch_latency(reps: int, env: dict[str, str], work: Path, netns: str) -> dict[str, list[float]]:
    src = work / "src"
    src.mkdir()
    f = src / "bench.yaml"
    f.write_text(POLICY.format(netns=netns, extra="", rule=""))
    log = open(work / "watch.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "bpfpolicy", "watch", str(src)], env=env, cwd=ROOT,
                            stdout=log, stderr=log)
    pin = str(Path(env["BPFPOLICY_BPFFS_ROOT"]) / "XDPBlocklist/bench/prog_xdp_blocklist")
    pkt = packet(PROBE_SRC)
    out: dict[str, list[float]] = {"map-only": [], "program-change": []}
    try:
        wait_verdict(pin, pkt, 2, timeout=60)  # XDP_PASS: applied
        time.sleep(0.5)
        for _ in range(reps):  # add / remove one source: a 1-entry map delta
            for extra, want in ((f", {PROBE_SRC}", 1), ("", 2)):
                t0 = time.perf_counter()
                f.write_text(POLICY.format(netns=netns, extra=extra, rule=""))
                out["map-only"].append((wait_verdict(pin, pkt, want) - t0) * 1000)
                time.sleep(0.2)
        port_rule = f"    - name: ssh\n      sources: [{PROBE_SRC}]\n      protocols: [tcp]\n      ports: [22]\n"
        all_rule = f"    - name: ssh\n      sources: [{PROBE_SRC}]\n"
        f.write_text(POLICY.format(netns=netns, extra="", rule=all_rule))
        wait_verdict(pin, pkt, 1)
        time.sleep(0.3)
        for _ in range(reps):  # a ports feature on/off changes the generated program
            for rule, want in ((port_rule, 2), (all_rule, 1)):
                t0 = time.perf_counter()
                f.write_text(POLICY.format(netns=netns, extra="", rule=rule))
                out["program-change"].append((wait_verdict(pin, pkt, want) - t0) * 1000)
                time.sleep(0.3)
    except TimeoutError:
        log.flush()
        print((work / "watch.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    return out


NETPOL = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: bench-np}}
spec:
  endpointSelector: {{matchLabels: {{app: bench}}}}
  ingress:
    - fromCIDR: [{cidrs}]
"""
LIST_LINES = 1_000_000
NP_CIDRS = 10_000
EDIT_LINE = 500_000


def _list_lines(n: int) -> list[str]:
    """n distinct IPv4 /32s in 10.0.0.0-109.255.255.255 (none in the probe ranges)."""
    import random

    rng = random.Random(15)
    return [f"{10 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            for i in rng.sample(range(100 << 24), n)]


def prog_id(pin: str) -> int | None:
    try:
        fd = bpf.obj_get(pin)
    except OSError:
        return None
    try:
        return int(bpf.prog_info(fd)["id"])  # type: ignore[call-overload]
    finally:
        os.close(fd)


def cycles_logged(log_path: Path) -> int:
    return sum(1 for line in log_path.read_text().splitlines() if line.startswith("[file]"))


def wait_cycle(log_path: Path, before: int, timeout: float = 60.0) -> None:
    """Until the watch has logged a file-triggered cycle after the `before`-th and then been
    quiet for 0.3 s: the change's cycle (and its bookkeeping after the kernel write) is
    over, so the next round measures one change alone, not a queue."""
    deadline = time.monotonic() + timeout
    while cycles_logged(log_path) <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = log_path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.3:
            return
        time.sleep(0.05)


def incremental_latency(reps: int, env: dict[str, str], work: Path, netns: str,
                        netpol: bool = True, np_cidrs: int = NP_CIDRS) -> tuple[dict[str, list[float]], str]:
    """`one-line@1M` (XDPBlocklist, 1M-line list) and `cidr-add` (NetworkPolicy), interleaved
    rounds through one real `bpfpolicy watch`; returns latencies and the watch log."""
    from bpfpolicy.kinds.netpol.packets import frame

    src = work / "src-inc"
    src.mkdir()
    lines = _list_lines(LIST_LINES)
    original = lines[EDIT_LINE]
    (src / "big.txt").write_text("\n".join(lines) + "\n")
    (src / "xdp.yaml").write_text(POLICY.format(netns=netns, extra="", rule="").replace(
        "name: bench}", "name: big}").replace("sources: [192.0.2.0/24]", "sourceFiles: [big.txt]"))
    cidrs = [f"{10 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24" for i in range(np_cidrs)]
    if netpol:
        (src / "np.yaml").write_text(NETPOL.format(cidrs=", ".join(cidrs)))
    cfg = work / "inc-config.yaml"
    cfg.write_text(f"interval: 3600\nendpoints:\n  - name: benchep\n    labels: {{app: bench}}\n"
                   f"    interfaces: [{{name: bench2, netns: {netns}}}]\n    addresses: [192.0.2.200]\n")
    env = {**env, "BPFPOLICY_CONFIG": str(cfg), "BPFPOLICY_TIMINGS": "1"}
    log_path = work / "watch-inc.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "bpfpolicy", "watch", str(src)], env=env, cwd=ROOT,
                            stdout=log, stderr=log)
    root = Path(env["BPFPOLICY_BPFFS_ROOT"])
    xpin = str(root / "XDPBlocklist/big/prog_xdp_blocklist")
    npin = str(root / "NetworkPolicy/benchep/prog_netpol_tc_ingress")
    xpkt = packet(PROBE_SRC)
    out: dict[str, list[float]] = {"one-line@1M": [], "list write (part of one-line@1M)": []}
    if netpol:
        out["cidr-add"] = []
    try:
        wait_verdict(xpin, xpkt, 2, timeout=300)
        if netpol:
            wait_verdict(npin, frame("198.51.100.1", "192.0.2.200", 17, 4444, 53), 2, timeout=120)  # SHOT
        time.sleep(2.0)  # the startup cycle's bookkeeping
        ids = (prog_id(xpin), prog_id(npin))
        for i in range(reps):
            for new, want in ((PROBE_SRC, 1), (original, 2)):  # one line in, then back
                lines[EDIT_LINE] = new
                data = ("\n".join(lines) + "\n").encode()
                n = cycles_logged(log_path)
                t0 = time.perf_counter()
                with open(src / "big.txt", "wb") as fh:
                    fh.write(data)
                out["list write (part of one-line@1M)"].append((time.perf_counter() - t0) * 1000)
                out["one-line@1M"].append((wait_verdict(xpin, xpkt, want) - t0) * 1000)
                wait_cycle(log_path, n)
            if not netpol:
                continue
            peer = f"198.51.100.{i + 1}"
            npkt = frame(peer, "192.0.2.200", 17, 4444, 53)
            assert verdict(npin, npkt) == 2, "probe peer allowed before its CIDR was added"
            text = NETPOL.format(cidrs=", ".join([*cidrs, f"{peer}/32"]))
            n = cycles_logged(log_path)
            t0 = time.perf_counter()
            (src / "np.yaml").write_text(text)
            out["cidr-add"].append((wait_verdict(npin, npkt, 0) - t0) * 1000)  # TC_ACT_OK
            wait_cycle(log_path, n)
            n = cycles_logged(log_path)
            (src / "np.yaml").write_text(NETPOL.format(cidrs=", ".join(cidrs)))
            wait_cycle(log_path, n)
            now = (prog_id(xpin), prog_id(npin))
            assert now == ids, f"a program was replaced: {ids} -> {now}"
    except (TimeoutError, AssertionError):
        log.flush()
        print(log_path.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    return out, log_path.read_text()


def compile_cost(reps: int, work: Path, netns: str) -> list[float]:
    """The XDPBlocklist kind's compile of the bench policy alone (part of map-only)."""
    from bpfpolicy.policy.compile import compile_paths

    f = work / "compile-only.yaml"
    out = []
    for i in range(reps):
        f.write_text(POLICY.format(netns=netns, extra=f", 198.51.100.{i}", rule=""))
        t0 = time.perf_counter()
        res = compile_paths([f])
        out.append((time.perf_counter() - t0) * 1000)
        assert res.ok
    return out


def noop_cost(reps: int, root: str, state: str, netns: str, n: int = 100) -> dict[str, list[float]]:
    from bpfpolicy.controller.config import load_config
    from bpfpolicy.controller.reconcile import Reconciler

    import helpers.controller_artifacts as artifacts

    for i in range(n):
        ip("link", "add", f"d{i}", "type", "veth", "peer", "name", f"e{i}", netns=netns)
        ip("link", "set", f"d{i}", "up", netns=netns)
    src = Path(tempfile.mkdtemp(prefix="bpfpolicy-bench-art-"))
    try:
        for i in range(n):
            artifacts.write(src, f"p{i}", [f"192.0.2.{i % 250}", f"198.51.100.{i % 250}"],
                            interface=f"d{i}", netns=netns)
        cfg = load_config(env={"BPFPOLICY_BPFFS_ROOT": root, "BPFPOLICY_STATE_DIR": state})
        rec = Reconciler(cfg, [src])
        res = rec.cycle()
        assert res.ok and len(res.applied.outcomes) == n, res.error
        out: dict[str, list[float]] = {"shallow": [], "deep": []}
        for _ in range(reps):
            for mode in ("shallow", "deep"):
                t0 = time.perf_counter()
                res = rec.cycle(deep=mode == "deep")
                out[mode].append((time.perf_counter() - t0) * 1000)
                assert res.ok and not res.applied.outcomes, [o.message for o in res.applied.outcomes]
        return out
    finally:
        shutil.rmtree(src, ignore_errors=True)


def destroy(root: str, state: str) -> None:
    subprocess.run([sys.executable, "-m", "bpfpolicy", "destroy", "--yes"], cwd=ROOT,
                   env={**os.environ, "BPFPOLICY_BPFFS_ROOT": root, "BPFPOLICY_STATE_DIR": state},
                   capture_output=True, check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--np-cidrs", type=int, default=NP_CIDRS, help="CIDRs in the cidr-add NetworkPolicy")
    ap.add_argument("--cases", default="all", help="all; 'incremental' (one-line@1M and cidr-add only); 'one-line' (XDP alone)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/reconcile.py needs root")
    tag = secrets.token_hex(3)
    netns = f"bpbench-{tag}"
    work = Path(tempfile.mkdtemp(prefix="bpfpolicy-bench-"))
    roots = [f"/sys/fs/bpf/bpfpolicy-bench-{tag}-{i}" for i in range(3)]
    states = [str(work / f"state{i}") for i in range(3)]
    create_netns(netns)
    try:
        ip("link", "add", "bench0", "type", "veth", "peer", "name", "bench1", netns=netns)
        ip("link", "set", "bench0", "up", netns=netns)
        ip("link", "add", "bench2", "type", "veth", "peer", "name", "bench3", netns=netns)
        ip("link", "set", "bench2", "up", netns=netns)
        env = {**os.environ, "BPFPOLICY_BPFFS_ROOT": roots[0], "BPFPOLICY_STATE_DIR": states[0],
               "BPFPOLICY_INTERVAL": "3600"}
        lat: dict[str, list[float]] = {}
        noop: dict[str, list[float]] = {}
        if args.cases == "all":
            lat = watch_latency(args.reps, env, work, netns)
            noop = noop_cost(args.reps, roots[1], states[1], netns)
            lat["compile only (XDPBlocklist kind)"] = compile_cost(args.reps, work, netns)
        inc_env = {**env, "BPFPOLICY_BPFFS_ROOT": roots[2], "BPFPOLICY_STATE_DIR": states[2]}
        inc, watch_log = incremental_latency(args.reps, inc_env, work, netns,
                                                netpol=args.cases != "one-line", np_cidrs=args.np_cidrs)
        lat.update(inc)
        lat.update(cycle_phases(watch_log))
        slow = [ln.strip() for ln in watch_log.splitlines() if ln.startswith("  ")]
        print(f"slow-path notes in the watch log: {len(slow)}", *slow[:20], sep="\n  ", file=sys.stderr)
    finally:
        for r, s in zip(roots, states, strict=True):
            destroy(r, s)
        delete_netns(netns)
        shutil.rmtree(work, ignore_errors=True)
    samples = {**lat, **{f"no-op@100 {k}": v for k, v in noop.items()}}
    med = {k: statistics.median(v) for k, v in samples.items() if v}
    targets = {k: v for k, v in {"map-only": 100.0, "no-op@100 shallow": 50.0, "no-op@100 deep": 50.0,
                                 "one-line@1M": 100.0, "cidr-add": 100.0}.items() if k in med}
    rows = [{"impl": "bpfpolicy", "case": case, "ms": round(v, 2)} for case, v in med.items()]
    rows += [{"impl": "target", "case": case, "ms": v} for case, v in targets.items()]
    ratios = {f"ms@{case}": round(med[case] / v, 3) for case, v in targets.items()}
    for case, v in med.items():
        print(f"{case:>34}: median {v:8.2f} ms  (samples: {', '.join(f'{x:.1f}' for x in sorted(samples[case]))})",
              file=sys.stderr)
    print(json.dumps({"bench": "reconcile", "kernel": platform.release(), "np_cidrs": args.np_cidrs,
                      "list_lines": LIST_LINES, "rows": rows, "ratios": ratios}))


def cycle_phases(watch_log: str) -> dict[str, list[float]]:
    """Per-phase milliseconds of the file-triggered cycles, from the watch log's `timings:`
    lines (BPFPOLICY_TIMINGS=1): `phase[xdp|netpol] <name>` samples, by which policy the
    cycle updated (the restoring writes between rounds are cycles too)."""
    out: dict[str, list[float]] = {}
    for line in watch_log.splitlines():
        if "timings:" not in line or "[file]" not in line:
            continue
        which = "xdp" if "XDPBlocklist/" in line else "netpol" if "NetworkPolicy/" in line else "other"
        for part in line.split("timings:", 1)[1].split():
            name, _, ms = part.partition("=")
            try:
                out.setdefault(f"phase[{which}] {name}", []).append(float(ms))
            except ValueError:
                continue
    return out


if __name__ == "__main__":
    main()
