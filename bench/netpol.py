"""NetworkPolicy per-packet cost: bpfpolicy's tc program vs an equivalent nftables ruleset.

Two measurements, side by side in one run, for policies of 10 rules (100 CIDRs) and
1,000 rules (10,000 CIDRs), each rule = `fromCIDR: [10 prefixes]` + one TCP port:

1. BPF_PROG_TEST_RUN of the generated tc ingress program (median of 9 runs of 200k
   repeats, the cases and the bare program taking turns): a TCP SYN that misses every rule (`miss`: default deny, a new flow judged
   every time), a UDP datagram that misses every rule (`udp_miss`: it could be a reply,
   so it also pays the conntrack lookup a SYN skips), and an ACK of a flow a SYN opened
   (`established`, also reported as `hit`: it passes on the conntrack hit). `new_allowed`:
   the SYN of a new flow allowed by a rule (verdict + conntrack insert), the median of
   single runs over 2,001 distinct source ports, next to the miss and the bare program
   measured the same way (`*_1run_ns`: one run per call, so colder caches).
2. Live veth delivery (ANCHORS §4.2 method): a small C sender blasts N identical frames
   with sendmmsg(AF_PACKET) into one end of a veth pair; the receive side runs in the
   sender's softirq, so ns/frame on the sender = send + receive. Receivers on the other
   end: a bare tc drop program (baseline), bpfpolicy's program, an nft netdev ingress
   chain with the equivalent rules + drop (one rule per policy rule, as written), the
   hand-optimised nft form (one `saddr . dport` concatenated interval set), and an nft
   chain with just `drop`. The delta
   over the baseline is each receiver's cost. The frame misses every rule: nftables walks
   all of them, bpfpolicy does its fixed lookups. Setups are interleaved within each
   repetition; `live_delta_ns` is the median over repetitions of (setup - bare tc drop)
   of that repetition, so host drift between repetitions cancels; `live_min_delta_ns` is
   min(setup) - min(bare) for comparison with older runs.

`--before-tree DIR` (a checkout of an older revision, e.g. `git archive REV | tar -x -C
DIR`): that tree compiles the same policy for the same endpoint, and its program runs
side by side with the current one in the same run: rows `impl=bpfpolicy-before`, in the
interleaved test runs and as one more interleaved live setup (ratios `*_before`).

Also per case: compile time (validate + lower + build) and load time (object load + map
contents written), and the sizes of the peer/verdict tables.

Prints one JSON line last (docs/HELPERS.md): ratios are bpfpolicy / nftables.
Run: sudo .venv/bin/python bench/netpol.py [--frames 200000] [--reps 7]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bpfpolicy.kernel import bpf, tc  # noqa: E402
from bpfpolicy.kernel import libbpf as lb  # noqa: E402
from bpfpolicy.kernel.maps import write_records  # noqa: E402
from bpfpolicy.kernel.netns import VethPair  # noqa: E402
from bpfpolicy.kinds import CompileContext, vectors  # noqa: E402
from bpfpolicy.kinds.netpol.kind import NetworkPolicyKind  # noqa: E402
from bpfpolicy.kinds.netpol.packets import STYLE, frame  # noqa: E402
from bpfpolicy.policy.load import load_file  # noqa: E402
from bpfpolicy.policy.validate import validate_documents  # noqa: E402

SENDER_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* usage: sender IFNAME HEXFRAME COUNT -> prints ns per frame */
int main(int argc, char **argv)
{
	unsigned char buf[256];
	size_t len = strlen(argv[2]) / 2;
	long count = atol(argv[3]);
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_halen = 6 };
	struct mmsghdr msgs[64];
	struct iovec iov;
	struct timespec a, b;
	int fd, i;

	for (i = 0; i < (int)len; i++)
		sscanf(argv[2] + 2 * i, "%2hhx", &buf[i]);
	fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0) { perror("socket"); return 1; }
	sll.sll_ifindex = if_nametoindex(argv[1]);
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) { perror("bind"); return 1; }
	iov.iov_base = buf;
	iov.iov_len = len;
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < 64; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long sent = 0; sent < count; ) {
		int n = sendmmsg(fd, msgs, 64, 0);
		if (n < 0) { perror("sendmmsg"); return 1; }
		sent += n;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / count);
	return 0;
}
"""

DROP_C = """#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
SEC("tc") int bare_drop(struct __sk_buff *skb) { return TC_ACT_SHOT; }
"""


def make_rules(n_rules: int, cidrs_per_rule: int, seed: int = 1) -> list[tuple[list[str], int]]:
    """Random, mostly disjoint prefixes (/16-/28 in 11.0.0.0-100.0.0.0), one port per rule."""
    rng = random.Random(seed)
    rules = []
    for i in range(n_rules):
        cidrs = []
        for _ in range(cidrs_per_rule):
            plen = rng.choice([16, 20, 24, 24, 28, 32])
            addr = rng.randrange(11 << 24, 100 << 24)
            cidrs.append(str(ipaddress.ip_network((addr, plen), strict=False)))
        rules.append((cidrs, 1000 + i))
    return rules


def policy_yaml(rules: list[tuple[list[str], int]]) -> str:
    lines = ["apiVersion: bpfpolicy.io/v1", "kind: NetworkPolicy", "metadata: {name: bench}", "spec:",
             "  endpointSelector: {matchLabels: {app: bench}}", "  ingress:"]
    for cidrs, port in rules:
        lines.append(f"  - fromCIDR: [{', '.join(cidrs)}]")
        lines.append(f'    toPorts: [{{ports: [{{port: "{port}", protocol: TCP}}]}}]')
    return "\n".join(lines) + "\n"


def nft_ruleset(ifname: str, rules: list[tuple[list[str], int]] | None) -> str:
    """netdev ingress chain: one rule per policy rule (anonymous interval set + port), then drop."""
    body = []
    for cidrs, port in rules or []:
        body.append(f"    ip saddr {{ {', '.join(cidrs)} }} tcp dport {port} accept")
    body.append("    drop")
    return ("table netdev npbench {\n  chain ingress {\n"
            f'    type filter hook ingress device "{ifname}" priority 0; policy accept;\n'
            + "\n".join(body) + "\n  }\n}\n")


def nft_set_ruleset(ifname: str, rules: list[tuple[list[str], int]]) -> str:
    """The hand-optimised form: one concatenated interval set `saddr . dport` (pipapo), one rule."""
    elems = ",\n      ".join(f"{c} . {port}" for cidrs, port in rules for c in cidrs)
    return ("table netdev npbench {\n"
            "  set allow {\n    type ipv4_addr . inet_service; flags interval;\n"
            f"    elements = {{ {elems} }}\n  }}\n"
            "  chain ingress {\n"
            f'    type filter hook ingress device "{ifname}" priority 0; policy accept;\n'
            "    ip saddr . tcp dport @allow accept\n    drop\n  }\n}\n")


def compile_policy(rules: list[tuple[list[str], int]], pair: VethPair, tmp: Path) -> tuple[Any, float]:
    f = tmp / "bench-policy.yaml"
    f.write_text(policy_yaml(rules))
    t0 = time.perf_counter()
    res = validate_documents(load_file(f))
    assert res.ok, [str(d) for d in res.diagnostics][:5]
    inv = [{"name": "bench", "labels": {"app": "bench"},
            "interfaces": [{"name": pair.if_a, "netns": pair.ns_a}], "addresses": [pair.ip4_a]}]
    (art,) = NetworkPolicyKind().compile_set([v.doc for v in res.policies],
                                             CompileContext(options={"inventory": inv}))
    return art, time.perf_counter() - t0


BEFORE_COMPILE = r"""
import json, sys
from pathlib import Path
tree, policy, inv, out = sys.argv[1:5]
sys.path.insert(0, tree)
from bpfpolicy.kinds import CompileContext
from bpfpolicy.kinds.netpol.kind import NetworkPolicyKind
from bpfpolicy.policy.load import load_file
from bpfpolicy.policy.validate import validate_documents
res = validate_documents(load_file(Path(policy)))
(art,) = NetworkPolicyKind().compile_set([v.doc for v in res.policies],
                                         CompileContext(options={"inventory": json.loads(inv)}))
for name, data in art.files.items():
    (Path(out) / name).parent.mkdir(parents=True, exist_ok=True)
    (Path(out) / name).write_bytes(data)
(Path(out) / "manifest.json").write_text(json.dumps(art.manifest))
"""


class _Files:
    """An artifact read back from a directory (what `load` needs of one)."""

    def __init__(self, d: Path) -> None:
        self.manifest = json.loads((d / "manifest.json").read_text())
        self.name = "before"
        self.files = {m["contents"]: (d / m["contents"]).read_bytes()
                      for m in self.manifest["maps"] if m.get("contents")}
        self.files["prog.bpf.o"] = (d / "prog.bpf.o").read_bytes()


def compile_before(tree: str, rules: list[tuple[list[str], int]], pair: VethPair, tmp: Path) -> Any:
    """The same policy and endpoint compiled by an older checkout (its own Python modules,
    templates and build), in a child process."""
    out = tmp / "before-artifact"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir()
    (tmp / "before-policy.yaml").write_text(policy_yaml(rules))
    inv = [{"name": "bench", "labels": {"app": "bench"},
            "interfaces": [{"name": pair.if_a, "netns": pair.ns_a}], "addresses": [pair.ip4_a]}]
    subprocess.run([sys.executable, "-c", BEFORE_COMPILE, tree, str(tmp / "before-policy.yaml"), json.dumps(inv),
                    str(out)], check=True, cwd=tree)
    return _Files(out)


def load(art: Any) -> lb.BpfObject:
    obj = lb.BpfObject.open_mem(art.files["prog.bpf.o"], art.name)
    obj.load()
    for m in art.manifest["maps"]:
        if m.get("contents"):
            write_records(obj.map(m["name"]).fd, art.files[m["contents"]], m["key_size"], m["value_size"], False)
    return obj


def interleaved_test_runs(cases: dict[str, tuple[int, bytes]], runs: int = 9) -> dict[str, float]:
    """Median ns per case, the cases taking turns run by run (host drift hits all alike)."""
    out: dict[str, list[int]] = {k: [] for k in cases}
    for _ in range(runs):
        for k, (fd, data) in cases.items():
            out[k].append(bpf.prog_test_run(fd, data, repeat=200_000).duration_ns)
    return {k: statistics.median(v) for k, v in out.items()}


def single_runs_ns(prog_fd: int, src: str, dst: str, dport: int, mac: bytes, n: int = 2001) -> float:
    """Median ns of one run each over `n` flows differing in the source port: every one is
    a new flow (no conntrack entry yet)."""
    return statistics.median(bpf.prog_test_run(prog_fd, mac + frame(src, dst, 6, 10000 + i, dport)[6:]).duration_ns
                             for i in range(n))


def send(sender: str, pair: VethPair, data: bytes, frames: int) -> float:
    """ns per frame, sender pinned to one CPU (the receive softirq runs there too)."""
    cpu = str((os.cpu_count() or 1) - 1)
    out = subprocess.run(["taskset", "-c", cpu, "ip", "netns", "exec", pair.ns_b, sender, pair.if_b,
                          data.hex(), str(frames)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def nft(pair: VethPair, text: str | None) -> None:
    subprocess.run(["ip", "netns", "exec", pair.ns_a, "nft", "flush", "ruleset"], check=True)
    if text:
        subprocess.run(["ip", "netns", "exec", pair.ns_a, "nft", "-f", "-"], input=text, text=True, check=True)


def live(sender: str, pair: VethPair, data: bytes, frames: int, reps: int,
         setups: dict[str, Any]) -> dict[str, list[float]]:
    """ns/frame samples per receiver setup, setups interleaved within each repetition. A
    slow receiver (nft walking 1,000 rules) gets fewer frames: ~1.5 s per sample."""
    samples: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(reps):
        for name, (enter, leave) in setups.items():
            enter()
            try:
                est = send(sender, pair, data, 2000)  # warm-up and estimate
                n = max(2000, min(frames, int(1.5e9 / max(est, 1.0))))
                samples[name].append(send(sender, pair, data, n))
            finally:
                leave()
    return samples


def added(samples: dict[str, list[float]], impl: str) -> float:
    """Median over repetitions of (impl - bare tc drop) within the same repetition."""
    return statistics.median(x - b for x, b in zip(samples[impl], samples["baseline"], strict=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--before-tree", help="checkout of an older revision to run side by side")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/netpol.py needs root (BPF, netns, nft)")
    from bpfpolicy.codegen.build import build_bpf

    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="npbench-") as tmpd, VethPair() as pair:
        tmp = Path(tmpd)
        sender = str(tmp / "sender")
        (tmp / "sender.c").write_text(SENDER_C)
        subprocess.run(["gcc", "-O2", "-o", sender, str(tmp / "sender.c")], check=True)
        drop_obj = lb.BpfObject.open_mem(build_bpf(DROP_C, name="bare-drop").object, "bare-drop")
        drop_obj.load()
        pin = f"/sys/fs/bpf/npbench-{os.getpid()}"
        os.makedirs(pin, exist_ok=True)
        mac_a = bytes.fromhex(pair.mac("a").replace(":", ""))
        miss = frame(pair.ip4_b, pair.ip4_a, 6, 40000, 5555)
        miss = mac_a + miss[6:]
        try:
            for n_rules, per in ((10, 10), (1000, 10)):
                case = f"{n_rules}rules/{n_rules * per}cidrs"
                rules = make_rules(n_rules, per)
                art, compile_s = compile_policy(rules, pair, tmp)
                t0 = time.perf_counter()
                obj = load(art)
                load_s = time.perf_counter() - t0
                prog = obj.program("netpol_tc_ingress").fd
                bare = drop_obj.program("bare_drop").fd
                hit_src = str(ipaddress.ip_network(rules[n_rules // 2][0][0])[0])
                hit = frame(hit_src, pair.ip4_a, 6, 40001, rules[n_rules // 2][1])
                ack = vectors.frame(STYLE, vectors.Flow(hit_src, pair.ip4_a, 6, 40001, rules[n_rules // 2][1]),
                                    tcp_flags=vectors.TCP_ACK)
                udp_miss = frame(pair.ip4_b, pair.ip4_a, 17, 40000, 5555)
                assert bpf.prog_test_run(prog, miss).retval == 2 and bpf.prog_test_run(prog, hit).retval == 0
                assert bpf.prog_test_run(prog, ack).retval == 0 and bpf.prog_test_run(prog, udp_miss).retval == 2
                entries = {m["name"]: m.get("entries") for m in art.manifest["maps"] if "entries" in m}
                cases = {"miss": (prog, miss), "udp_miss": (prog, udp_miss), "established": (prog, ack),
                         "bare": (bare, miss)}
                old = None
                if args.before_tree:
                    old = load(compile_before(args.before_tree, rules, pair, tmp))
                    oprog = old.program("netpol_tc_ingress").fd
                    assert bpf.prog_test_run(oprog, hit).retval == 0 and bpf.prog_test_run(oprog, ack).retval == 0
                    cases |= {"before_miss": (oprog, miss), "before_udp_miss": (oprog, udp_miss),
                              "before_established": (oprog, ack)}
                tr = interleaved_test_runs(cases)
                if old is not None:
                    rows.append({"impl": "bpfpolicy-before", "case": case, "test_run_miss_ns": tr["before_miss"],
                                 "test_run_udp_miss_ns": tr["before_udp_miss"],
                                 "test_run_established_ns": tr["before_established"]})
                rows.append({"impl": "bpfpolicy", "case": case, "test_run_miss_ns": tr["miss"],
                             "test_run_udp_miss_ns": tr["udp_miss"],
                             "test_run_hit_ns": tr["established"], "test_run_established_ns": tr["established"],
                             "test_run_new_allowed_1run_ns": single_runs_ns(prog, hit_src, pair.ip4_a,
                                                                            rules[n_rules // 2][1], mac_a),
                             "test_run_miss_1run_ns": single_runs_ns(prog, pair.ip4_b, pair.ip4_a, 5555, mac_a),
                             "compile_s": round(compile_s, 3), "load_s": round(load_s, 3),
                             "map_entries": entries})
                rows.append({"impl": "bare-tc-drop", "case": case, "test_run_miss_ns": tr["bare"],
                             "test_run_miss_1run_ns": single_runs_ns(bare, pair.ip4_b, pair.ip4_a, 5555, mac_a)})
                holder: dict[str, Any] = {}

                def attach(fd: int, _h: dict[str, Any] = holder) -> None:
                    _h["rec"] = tc.attach(fd, pair.if_a, "ingress", pair.ns_a, link_pin=f"{pin}/link")

                def detach(_h: dict[str, Any] = holder) -> None:
                    tc.detach(_h.pop("rec"), pair.if_a, "ingress", pair.ns_a)

                rule_text = nft_ruleset(pair.if_a, rules)
                setups = {
                    "baseline": (lambda: attach(drop_obj.program("bare_drop").fd), detach),
                    "bpfpolicy": (lambda p=prog: attach(p), detach),
                    "nftables": (lambda t=rule_text: nft(pair, t), lambda: nft(pair, None)),
                    "nft-set": (lambda r=rules: nft(pair, nft_set_ruleset(pair.if_a, r)), lambda: nft(pair, None)),
                    "nft-drop-only": (lambda: nft(pair, nft_ruleset(pair.if_a, None)), lambda: nft(pair, None)),
                }
                if old is not None:
                    setups["bpfpolicy-before"] = (lambda p=oprog: attach(p), detach)
                samples = live(sender, pair, miss, args.frames, args.reps, setups)
                for impl in ("bpfpolicy", "nftables", "nft-set", "nft-drop-only", "bpfpolicy-before"):
                    if impl not in samples:
                        continue
                    rows.append({"impl": impl, "case": case,
                                 "live_ns_per_frame": round(statistics.median(samples[impl]), 1),
                                 "live_delta_ns": round(added(samples, impl), 1),
                                 "live_min_delta_ns": round(min(samples[impl]) - min(samples["baseline"]), 1)})
                rows.append({"impl": "bare-tc-drop", "case": case,
                             "live_ns_per_frame": round(statistics.median(samples["baseline"]), 1), "live_delta_ns": 0.0})
                ours = added(samples, "bpfpolicy")
                if added(samples, "nftables") > 0:
                    ratios[f"live_delta_ns@{case}"] = round(ours / added(samples, "nftables"), 4)
                if added(samples, "nft-set") > 0:
                    ratios[f"live_delta_ns_vs_nft_set@{case}"] = round(ours / added(samples, "nft-set"), 4)
                ratios[f"test_run_miss_vs_bare@{case}"] = round(tr["miss"] / tr["bare"], 3)
                if old is not None:
                    ratios[f"test_run_miss_vs_bare_before@{case}"] = round(tr["before_miss"] / tr["bare"], 3)
                    if added(samples, "nft-set") > 0:
                        ratios[f"live_delta_ns_vs_nft_set_before@{case}"] = round(
                            added(samples, "bpfpolicy-before") / added(samples, "nft-set"), 4)
                    old.close()
                obj.close()
        finally:
            subprocess.run(["rm", "-rf", pin], check=False)
            drop_obj.close()
    for r in rows:
        print(f"{r['impl']:14} {r['case']:22} " + " ".join(f"{k}={v}" for k, v in r.items() if k not in ("impl", "case")))
    print(json.dumps({"bench": "netpol", "kernel": platform.release(), "rows": rows, "ratios": ratios}))


if __name__ == "__main__":
    main()
