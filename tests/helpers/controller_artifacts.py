"""Hand-written XDP artifacts for controller tests (independent of any kind's compiler):
a source-address blocklist with a `deny_v4` hash map (contents) and a `rule_stats`
per-CPU counter map (runtime state), laid out exactly as docs/ARTIFACTS.md says.

`variant` changes the program's instructions (a different program_hash) without changing
its verdicts; `broken=True` produces an object the verifier rejects (unchecked packet
read), for the Stalled path."""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from pathlib import Path

from bpfpolicy.codegen.build import build_bpf
from bpfpolicy.kinds.base import Artifact

SOURCE = r"""
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct rule_stat { __u64 packets; __u64 bytes; };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);            /* IPv4 source, network order */
    __type(value, __u32);          /* rule index */
    __uint(max_entries, 4096);
} deny_v4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct rule_stat);
    __uint(max_entries, 16);
} rule_stats SEC(".maps");

const volatile char bpf_metadata_bpfpolicy_policy[] SEC(".rodata") = "XDPBlocklist/%(name)s";
const volatile char bpf_metadata_bpfpolicy_hash[] SEC(".rodata") = "v%(variant)d";
const volatile char bpf_metadata_bpfpolicy_revision[64] SEC(".rodata") = "@@bpfpolicy-revision@@";

SEC("xdp")
int xdp_blocklist(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    %(broken)s
    if (ctx->ingress_ifindex == %(magic)du)   /* variant marker: never true */
        return XDP_PASS;
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return XDP_PASS;
    __u32 *rule = bpf_map_lookup_elem(&deny_v4, &ip->saddr);
    if (!rule)
        return XDP_PASS;
    struct rule_stat *st = bpf_map_lookup_elem(&rule_stats, rule);
    if (st) {
        st->packets++;
        st->bytes += (__u64)(end - data);
    }
    return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
"""

BROKEN = "if (*((volatile __u8 *)data + 4000) == 7) return XDP_DROP;  /* unchecked: verifier says no */"


def contents(denied: list[str]) -> bytes:
    """deny_v4 records: key = address (network order), value = rule index (LE u32)."""
    recs = sorted(ipaddress.IPv4Address(a).packed + struct.pack("<I", i % 16) for i, a in enumerate(denied))
    return b"".join(recs)


def make_artifact(name: str, denied: list[str], *, interface: str | None, netns: str | None,
                  variant: int = 0, broken: bool = False, mode: str = "generic") -> Artifact:
    src = SOURCE % {"name": name, "variant": variant, "magic": 0x7FFF0000 + variant,
                    "broken": BROKEN if broken else ""}
    obj = build_bpf(src, name=name).object
    data = contents(denied)
    files = {"prog.bpf.c": src.encode(), "prog.bpf.o": obj, "maps/deny_v4.bin": data}
    atts = [{"program": "xdp_blocklist", "type": "xdp", "interface": interface, "netns": netns,
             "mode": mode}] if interface else []
    manifest = {
        "object": "prog.bpf.o", "program_hash": hashlib.sha256(obj).hexdigest(),
        "programs": [{"name": "xdp_blocklist", "type": "xdp"}],
        "maps": [{"name": "deny_v4", "type": "hash", "key_size": 4, "value_size": 4,
                  "contents": "maps/deny_v4.bin", "entries": len(denied), "percpu": False},
                 {"name": "rule_stats", "type": "percpu_array", "key_size": 4, "value_size": 16,
                  "percpu": True}],
        "attachments": atts,
        "counters": {"map": "rule_stats", "layout": "percpu_array_u64x2",
                     "rules": [{"index": i, "name": f"deny-{a}", "path": f"spec.deny[{i}]", "action": "drop"}
                               for i, a in enumerate(denied[:16])]},
        "metadata": {"policy": f"XDPBlocklist/{name}"},
    }
    return Artifact("XDPBlocklist", name, files, manifest)


def write(out: Path, name: str, denied: list[str], **kw: object) -> Path:
    return make_artifact(name, denied, **kw).write(out)  # type: ignore[arg-type]


def write_seccomp(out: Path, name: str, filt: bytes = b"\x06\x00\x00\x00\x00\x00\xff\x7f") -> Path:
    """A minimal file-installed (seccomp-shaped) artifact: one RET ALLOW instruction."""
    art = Artifact("SeccompProfile", name, {"filter.bin": filt, "filter.txt": b"ret ALLOW\n"},
                   {"arch": "x86_64"})
    return art.write(out)
