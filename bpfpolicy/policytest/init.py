"""`bpfpolicy test --init POLICY`: a starter test file. For every rule it probes the
boundaries a reviewer would check by hand — first and last address of each CIDR and the
addresses just outside, an `except`'s first address, port range ends and their
neighbours, each named syscall and argument values at and beside each comparison — and
writes each probe with the reference model's answer (and deciding rule) as its
expectation. The file then pins today's semantics: `bpfpolicy test` checks the compiled
program agrees, and a later policy edit that changes an answer shows up as a failing case.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..policy.diagnostics import Diagnostic
from .model import Case
from .subjects import NetpolSubject, SeccompSubject, Unsupported, XdpSubject

# Bounds keep a generated file reviewable (and a kernel run short) for big policies:
MAX_CIDRS_PER_RULE = 4  # CIDRs of one rule probed (a sourceFiles list may hold millions)
MAX_PORTS_PER_RULE = 4  # port ranges / protocols of one rule probed
MAX_NAMES_PER_RULE = 6  # syscall names of one seccomp rule probed (first ones, then the last)
MAX_CASES = 2000  # one file; above it the rest is cut (a note says so)

WORLD_V4, WORLD_V6 = "203.0.113.77", "2001:db8:77::7"
DENIED_PROBES = ("kexec_load", "reboot", "init_module", "add_key", "acct", "swapon")


@dataclass
class Generated:
    text: str
    cases: int
    notes: list[str]


def _cidr_probes(net: ipaddress.IPv4Network | ipaddress.IPv6Network, label: str) -> Iterator[tuple[str, str]]:
    """(address, why) at and just outside the edges of `net`."""
    top = 2 ** net.max_prefixlen - 1
    first, last = int(net.network_address), int(net.broadcast_address)
    mk = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    yield str(mk(first)), f"first of {label}"
    if last != first:
        yield str(mk(last)), f"last of {label}"
    if first > 0:
        yield str(mk(first - 1)), f"just below {label}"
    if last < top:
        yield str(mk(last + 1)), f"just above {label}"


def _port_probes(lo: int, hi: int, top: int = 65535) -> list[int]:
    return sorted({p for p in (lo, hi, lo - 1, hi + 1) if 0 <= p <= top})


# --------------------------------------------------------------------------- XDP


def _xdp_cases(subject: XdpSubject) -> Iterator[dict[str, Any]]:
    from ..kinds.xdp.sources import v4_text, v6_text

    names = {v: k for k, v in {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}.items()}
    for r in subject.model.rules:
        nets = [ipaddress.ip_network(v4_text(a, p), strict=False)
                for a, p in zip(r.sources.v4_addr[:MAX_CIDRS_PER_RULE].tolist(),
                                r.sources.v4_plen[:MAX_CIDRS_PER_RULE].tolist(), strict=True)]
        nets += [ipaddress.ip_network(v6_text(a, p), strict=False) for a, p in r.sources.v6[:MAX_CIDRS_PER_RULE]]
        protos = sorted(r.protocols)[:MAX_PORTS_PER_RULE] if r.protocols is not None else [6]
        for net in nets:
            for addr, why in _cidr_probes(net, str(net)):
                for proto in protos:
                    if proto not in (6, 17, 132):
                        yield {"name": f"{r.name}: {why} {names.get(proto, proto)}",
                               "packet": {"src": addr, "protocol": names.get(proto, "tcp")}}
                        continue
                    ports = ([p for lo, hi in r.ports[:MAX_PORTS_PER_RULE] for p in _port_probes(lo, hi)]
                             if r.ports is not None else [80])
                    # the address edges with the first port; every port edge at the first address
                    for port in (ports if addr == str(net.network_address) else ports[:1]):
                        yield {"name": f"{r.name}: {why} {names[proto]}/{port}",
                               "packet": {"src": addr, "protocol": names[proto], "port": port}}


# --------------------------------------------------------------------------- NetworkPolicy

PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}


def _netpol_peers(plan: Any, r: Any) -> Iterator[tuple[str, str]]:
    if r.cidrs:
        for c in r.cidrs[:MAX_CIDRS_PER_RULE]:
            yield from _cidr_probes(c.net, str(c.net))
            for e in c.excepts[:MAX_CIDRS_PER_RULE]:
                yield str(e.network_address), f"first of except {e}"
    elif r.endpoints:
        addrs = [(str(a), ep.name) for ep in plan.inventory if not ep.host
                 and any(s.matches(ep.labels) for s in r.endpoints) for a in ep.addresses]
        for a, name in addrs[:MAX_CIDRS_PER_RULE]:
            yield a, f"endpoint {name}"
        yield WORLD_V4, "an address no selector names"
    else:
        for ent in r.entities or ("any",):
            if ent == "cluster":
                yield next((str(m.network_address) for m in plan.managed[:1]), WORLD_V4), "a cluster address"
            yield WORLD_V4, f"world (entity {ent})"
            yield WORLD_V6, f"world IPv6 (entity {ent})"


def _netpol_l4(r: Any) -> list[tuple[int, int | None]]:
    """(protocol, port or ICMP type) probes of one rule's L4 part."""
    if r.l4 is None:
        return [(6, 80), (17, 53), (1, 8)]
    out: list[tuple[int, int | None]] = []
    for x in r.l4[:MAX_PORTS_PER_RULE]:
        top = 255 if x.proto in (1, 58) else 65535
        out += [(x.proto, p) for p in _port_probes(x.lo, x.hi, top)]
        if x.proto in (6, 17):  # the same port, the other protocol
            out.append((23 - x.proto, x.lo))
    return out


def _netpol_cases(subject: NetpolSubject) -> Iterator[dict[str, Any]]:
    for ep_name, plan in subject.plans.items():
        for r in plan.rules:
            # a rule's own edges, plus one peer of every other rule of its direction: the
            # rule's ports from there show where it meets (or loses to) the others
            others = [next(_netpol_peers(plan, o), None) for o in plan.rules if o is not r and o.direction == r.direction]
            own = {str(a) for a in plan.endpoint.addresses}  # itself: not policed, not a probe
            for peer, why in [*_netpol_peers(plan, r), *(o for o in others if o is not None)]:
                if peer in own:
                    continue
                for proto, port in _netpol_l4(r):
                    if proto == 58 and ":" not in peer or proto == 1 and ":" in peer:
                        continue
                    pkt: dict[str, Any] = {"endpoint": ep_name, "direction": r.direction,
                                           "src" if r.direction == "ingress" else "dst": peer,
                                           "protocol": PROTO_NAMES[proto]}
                    pkt["icmpType" if proto in (1, 58) else "port"] = port
                    yield {"name": f"{r.name}: {why} {PROTO_NAMES[proto]}/{port}", "packet": pkt}


# --------------------------------------------------------------------------- seccomp


def _arg_probes(arg: dict[str, Any]) -> list[int]:
    v, v2 = int(arg.get("value", 0)), int(arg.get("valueTwo", 0))
    if arg.get("op") == "SCMP_CMP_MASKED_EQ":
        low_bit = v & -v if v else 1
        return sorted({v2, v2 ^ low_bit, v2 | v})  # the datum, one mask bit flipped, every mask bit set
    return sorted({x for x in (v - 1, v, v + 1) if 0 <= x < 2 ** 64})


def _seccomp_cases(subject: SeccompSubject) -> Iterator[dict[str, Any]]:
    from ..syscalls.tables import TABLES

    table = TABLES["x86_64"]
    named: set[str] = set()
    for i, rule in enumerate(subject.profile.get("syscalls") or []):
        names = [n for n in rule.get("names") or ([rule["name"]] if rule.get("name") else []) if n in table]
        named.update(names)
        pick = names[:MAX_NAMES_PER_RULE - 1] + names[-1:] if len(names) > MAX_NAMES_PER_RULE else names
        args = rule.get("args") or []
        for name in pick:
            if not args:
                yield {"name": f"syscalls[{i}] {name}", "syscall": {"name": name}}
                continue
            for a in args:
                for val in _arg_probes(a):
                    vec = [0] * (int(a["index"]) + 1)
                    vec[int(a["index"])] = val
                    yield {"name": f"syscalls[{i}] {name} arg{a['index']}={val:#x}", "syscall": {"name": name, "args": vec}}
            if len(pick) > 1:
                break  # argument probes of the first name stand for the rule's other names
    for name in DENIED_PROBES:
        if name not in named:
            yield {"name": f"{name}: named by no rule (defaultAction)", "syscall": {"name": name}}
            break
    yield {"name": "i386 read (architectures)", "syscall": {"name": "read", "arch": "i386"}}


# --------------------------------------------------------------------------- file


def generate(policy: Path, out: Path, inventory: Path | None = None) -> tuple[Generated | None, list[Diagnostic]]:
    """The test file text for `policy`, meant to be written at `out` (paths relative to it)."""
    from .model import TestFile
    from .runner import subject_for

    tf = TestFile(out, policy, inventory)
    subject, diags = subject_for(tf)
    if subject is None:
        return None, diags
    from .tracing import ModelCannot, TracingSubject
    from .tracing_init import tracing_cases, tracing_expect

    gen = {XdpSubject: _xdp_cases, NetpolSubject: _netpol_cases, SeccompSubject: _seccomp_cases,
           TracingSubject: tracing_cases}[type(subject)]
    cases, seen, notes = [], set(), []
    for raw in gen(subject):
        # the same probe may stand under two rules (each rule keeps its allow and deny case)
        key = json.dumps([raw["name"].split(": ")[0], {k: v for k, v in raw.items() if k != "name"}], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        if len(cases) >= MAX_CASES:
            notes.append(f"more than {MAX_CASES} probes: the rest left out")
            break
        case = Case(str(out), len(cases), raw["name"], "", raw.get("packet"), raw.get("syscall"), {}, raw.get("event"))
        try:
            ans = subject.answer(case)
        except (Unsupported, ModelCannot) as e:
            notes.append(f"{raw['name']}: {e}")
            continue
        if "event" in raw:
            raw["expect"] = tracing_expect(ans.value)
        else:
            key_name = "verdict" if "packet" in raw else "action"
            raw["expect"] = {key_name: ans.value, **({"rule": ans.rule} if ans.rule else {})}
        cases.append(raw)
    return Generated(_render(policy, out, inventory, cases), len(cases), notes), []


def _render(policy: Path, out: Path, inventory: Path | None, cases: list[dict[str, Any]]) -> str:
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731
    lines = ["# Generated by `bpfpolicy test --init`: boundary probes of every rule, expectations",
             "# from the reference model. Review them, rename, delete or add cases.",
             "apiVersion: bpfpolicy.io/v1", "kind: PolicyTest",
             f"metadata: {{name: {json.dumps(policy.stem)}}}", "spec:", f"  policy: {json.dumps(rel(policy))}"]
    if inventory is not None:
        lines.append(f"  inventory: {json.dumps(rel(inventory))}")
    lines.append("  cases:")
    lines += [f"    - {json.dumps(c)}" for c in cases]
    return "\n".join(lines) + "\n"


def default_output(policy: Path) -> Path:
    return policy.with_name(policy.name.rsplit(".", 1)[0] + ".test.yaml")
