"""NetworkPolicy: Cilium-style L3/L4 policy for the endpoints of one host.

Accepts the native form (`bpfpolicy.io/v1 NetworkPolicy`, a Cilium rule under `spec` or
`specs`, plus `enforcementMode: enforce|audit`) and Cilium's own `cilium.io/v2`
CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy.

Artifacts are per *endpoint*, not per policy: Cilium merges every policy selecting an
endpoint (union of allows, union of denies, deny wins), and so must the datapath — two
programs on one cgroup would AND their verdicts instead. `compile_set()` therefore
compiles all NetworkPolicy documents together into one artifact per selected inventory
endpoint, named after the endpoint (`NetworkPolicy/<endpoint>`); its counters name the
policy and rule behind every slot. See docs/networkpolicy.md.

Each document is parsed once, during validation (`parse` → `NetpolModel`, the rules of its
specs); `compile_all` merges the models of a tree per endpoint.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ...artifact import CounterRule, Manifest, MapSpec, stamp_program_hash
from ...policy.diagnostics import BuildError, Diagnostic, PolicyError
from ...policy.load import Document
from ..base import (
    Artifact,
    CompileContext,
    Compiled,
    ForeignFormat,
    Kind,
    Model,
    Reporter,
    compile_failure,
)
from ..vectors import KernelTestScript
from .changes import describe_change as _describe_change
from .events import decode as decode_event
from .fidelity import allow_frag_needed, host_always_rule, selection_notes
from .inventory import InventoryError, from_options
from .lower import (
    ACTION_NAMES,
    DROPS,
    RESERVED_NAMES,
    RESERVED_SLOTS,
    SLOT_DEFAULT,
    SLOT_REPLY,
    EndpointPlan,
    encode_maps,
    plan_endpoint,
)
from .packets import frame
from .rules import ICMP, ICMPV6, SpecRule, _Sink, parse_policy, policy_id, policy_namespace

CILIUM_API = "cilium.io/v2"
TEMPLATE = "network_policy.bpf.c.j2"
SOCKOPT_TEMPLATE = "netpol_sockopt.bpf.c.j2"  # cgroup/setsockopt: refuses PACKET_QDISC_BYPASS
RAW_SOCKET_GAP = ("AF_PACKET (raw packet socket) egress is not enforced: cgroup_skb does not "
                  "see packet sockets and no cgroup hook on this kernel sees their creation; "
                  "list the endpoint's interfaces in the inventory so tc enforces egress, or run "
                  "its workloads without CAP_NET_RAW")
MAP_SPECS = {  # name -> (type, key_size, value_size)
    "np_trie4": ("array", 4, 1024),
    "np_peers6": ("lpm_trie", 20, 4),
    "np_psets": ("array", 4, 12),
    "np_ports": ("hash", 8, 8),
    "np_verdicts": ("lpm_trie", 12, 8),
    "np_defaults": ("array", 4, 8),
    "np_config": ("array", 4, 4),
    "np_self": ("hash", 20, 1),
}


def _cilium(kind: str) -> ForeignFormat:
    return ForeignFormat(kind, "cilium-networkpolicy.json",
                         lambda d: d.get("apiVersion") == CILIUM_API and d.get("kind") == kind)


@dataclass
class NetpolModel(Model):
    """A checked NetworkPolicy/Cilium document: the rules of its spec(s)."""

    rules: list[SpecRule]

    @property
    def identity(self) -> tuple[str, str]:
        """(kind as written, [namespace/]name): what duplicates are judged by, so two
        CiliumNetworkPolicies of one name in two namespaces are two policies."""
        data = self.doc.data if isinstance(self.doc.data, dict) else {}
        kind = str(data.get("kind", "NetworkPolicy"))
        return kind, policy_id(kind, policy_namespace(self.doc, _Sink()),
                               str((data.get("metadata") or {}).get("name")))[len(kind) + 1:]


class NetworkPolicyKind(Kind):
    kind = "NetworkPolicy"
    self_contained = True  # a document's model depends on it alone (policy.validate.ValidationMemo)
    describe_change = staticmethod(_describe_change)  # plan's rule-level lines (changes.py)
    schema_file = "networkpolicy.json"
    event_layouts = {"netpol_event_v1": decode_event}
    formats: ClassVar[tuple[ForeignFormat, ...]] = (
        _cilium("CiliumNetworkPolicy"), _cilium("CiliumClusterwideNetworkPolicy"))

    def check(self, doc: Document, report: Reporter) -> None:
        self.parse(doc, report)

    def parse(self, doc: Document, report: Reporter) -> NetpolModel:
        return NetpolModel(doc, parse_policy(doc, report, foreign=doc.get(("apiVersion",)) == CILIUM_API))

    # -- compilation ------------------------------------------------------------
    def compile(self, doc: Document, ctx: CompileContext) -> Artifact:
        """One document: its artifact when it selects exactly one endpoint.

        Policies merge per endpoint, so whole trees go through `compile_set`; the other
        NetworkPolicy documents of the tree may be passed as ctx.options["network_policies"]."""
        if not ctx.options.get("inventory"):
            raise BuildError(
                "NetworkPolicy needs the host inventory to know its endpoints: "
                "the controller config's `endpoints:` or `compile --inventory FILE`")
        others = [d for d in ctx.options.get("network_policies", []) if d is not doc]
        mine = {a.name for a in self.compile_set([doc], ctx)}
        arts = [a for a in self.compile_set([doc, *others], ctx) if a.name in mine]
        if len(arts) != 1:
            raise BuildError(
                f"NetworkPolicy artifacts are per endpoint and this policy selects "
                f"{len(arts)} ({', '.join(sorted(mine)) or 'none'}); compile the tree with compile_set()")
        return arts[0]

    def compile_model(self, model: Model, ctx: CompileContext) -> Artifact:
        """One model on its own: `compile()`'s contract (exactly one selected endpoint)."""
        return self.compile(model.doc, ctx)

    def compile_all(self, models: Sequence[Model], ctx: CompileContext) -> Compiled:
        """The compile step's entry point (bpfpolicy/policy/compile.py): the whole tree at
        once, one artifact per endpoint, paired with the first policy merged into it.
        Without an inventory there are no endpoints to build for; that is said, not
        silently skipped, and validation has already checked every policy."""
        first = models[0].doc
        if not ctx.options.get("inventory"):
            where = first.diag((), "")
            note = Diagnostic(where.file, where.line, where.col, "$",
                              f"{len(models)} NetworkPolicy document(s) validated but not built: "
                              "programs are per endpoint and no inventory was given "
                              "(--inventory FILE, or the controller config's endpoints:)", "warning")
            return Compiled([], [note])
        try:
            try:
                inventory = from_options(ctx.options)
            except InventoryError as e:
                raise BuildError("inventory: " + "; ".join(e.problems)) from None
            notes = selection_notes(models, inventory, ctx.options)
            notes += raw_socket_notes(models, inventory)
            return Compiled(_pair_with_owner(models, self.compile_models(models, ctx)), notes)
        except (PolicyError, BuildError) as e:
            return Compiled([], compile_failure(e, first))

    def compile_set(self, docs: Iterable[Document], ctx: CompileContext) -> list[Artifact]:
        """Every NetworkPolicy document of a tree (already valid) → one artifact per
        selected endpoint. Tools and tests; the compile step passes models instead."""
        return self.compile_models([NetpolModel(doc, parse_policy(doc)) for doc in docs], ctx)

    def compile_models(self, models: Sequence[Model], ctx: CompileContext) -> list[Artifact]:
        """The parsed models of a tree → one artifact per selected inventory endpoint."""
        try:
            inventory = from_options(ctx.options)
        except InventoryError as e:
            raise BuildError("inventory: " + "; ".join(e.problems)) from None
        specs = [rule for m in models if isinstance(m, NetpolModel) for rule in m.rules]
        out = []
        for ep in inventory:
            plan = plan_endpoint(ep, specs, inventory)
            if plan is None:
                continue
            extra = host_always_rule(ep, ctx.options)  # allow-localhost: always
            if extra is not None:
                plan = plan_endpoint(ep, [*specs, extra], inventory) or plan
            plan.allow_frag_needed = allow_frag_needed(ep, ctx.options)
            if not ep.cgroup and not ep.interfaces:
                raise BuildError(f"inventory endpoint {ep.name!r} is selected by "
                                 f"{', '.join(sorted({s.policy for s in plan.specs}))} but has "
                                 "neither a cgroup nor interfaces to enforce on")
            out.append(build_artifact(plan, ctx))
        return out


def compile_validated(policies: list[Any], ctx: CompileContext) -> list[tuple[Any, Artifact]]:
    """Every validated NetworkPolicy of a tree (objects with `.model`) → (the first policy
    merged into the artifact, artifact) pairs. Raises BuildError like `compile()`."""
    owner = {id(p.model): p for p in policies}
    models = [p.model for p in policies]
    arts = NetworkPolicyKind().compile_models(models, ctx)
    return [(owner[id(m)], a) for m, a in _pair_with_owner(models, arts)]


def _pair_with_owner(models: Sequence[Model], arts: list[Artifact]) -> list[tuple[Model, Artifact]]:
    """Each endpoint artifact with the first of its merged policies found among `models`."""
    by_id: dict[str, Model] = {}
    for m in models:
        data = m.doc.data if isinstance(m.doc.data, dict) else {}
        kind = str(data.get("kind"))
        by_id.setdefault(policy_id(kind, policy_namespace(m.doc, _Sink()),
                                   str((data.get("metadata") or {}).get("name"))), m)
    return [(next((by_id[i] for i in a.manifest["metadata"]["policies"] if i in by_id), models[0]), a)
            for a in arts]


# --------------------------------------------------------------------------- artifact


def _pow2(n: int, floor: int) -> int:
    size = floor
    while size < n:
        size *= 2
    return size


def render_source(plan: EndpointPlan, sizes: dict[str, int], policy_id: str) -> tuple[str, str]:
    """The endpoint's C and its program hash (stamped into bpf_metadata_bpfpolicy_hash)."""
    from ...codegen.render import c_ident, render

    slots = [{"ident": f"SLOT_{n.replace('/', '_').replace('-', '_').upper()}", "index": i,
              "where": None, "path": None} for i, n in enumerate(RESERVED_NAMES)]
    for i, r in enumerate(plan.rules):
        slots.append({"ident": c_ident(r.name, "SLOT").upper(), "index": RESERVED_SLOTS + i,
                      "where": r.where, "path": f"{r.policy} {r.path}"})
    attach = plan.endpoint.attach_kind
    return stamp_program_hash(render(
        TEMPLATE, endpoint=plan.endpoint.name, attach=attach, sizes=sizes, slots=slots,
        stats_map=stats_map_name(plan), slot_default=SLOT_DEFAULT, slot_reply=SLOT_REPLY,
        allow_frag_needed=plan.allow_frag_needed, policy_id=policy_id, source_hash="")
        + (render(SOCKOPT_TEMPLATE) if raw_socket_guard(plan) else ""))


def stats_map_name(plan: EndpointPlan) -> str:
    """The counter map is named by the identities of its slots (rule name, direction,
    action): the controller reuses a pinned runtime map of the same name across program
    replaces, so a changed rule set gets a fresh, zeroed map instead of inheriting the
    old rules' counts slot by slot. 15 characters: the kernel's object-name limit."""
    ident = json.dumps([[r["name"], r.get("direction"), r["action"], r.get("audit")]
                        for r in counter_rules(plan)])
    return "np_stats_" + hashlib.sha256(ident.encode()).hexdigest()[:6]


def build_artifact(plan: EndpointPlan, ctx: CompileContext) -> Artifact:
    from ...codegen.build import build_bpf

    ep = plan.endpoint
    contents = encode_maps(plan)
    n_slots = RESERVED_SLOTS + len(plan.rules)
    sizes = {
        "trie4": _pow2(len(plan.trie4), 256),  # chunk indices, not records (zero chunks are left out)
        "psets": _pow2(len(contents["np_psets"]), 64),
        "ports": _pow2(len(contents["np_ports"]), 64),
        "peers6": _pow2(len(contents["np_peers6"]), 64),
        "verdicts": _pow2(len(contents["np_verdicts"]), 256),
        "stats": _pow2(n_slots, 64),
        "self": _pow2(len(contents["np_self"]), 16),
        "conntrack": int(ctx.options.get("conntrack_entries", 65536)),
    }
    policy_id = f"NetworkPolicy/{ep.name}"
    stats = stats_map_name(plan)
    source, program_hash = render_source(plan, sizes, policy_id)
    obj = build_bpf(source, name=f"netpol-{ep.name}", extra_flags=("-gdwarf-4",),
                    use_cache=ctx.cache_dir is not None or ctx.options.get("use_cache", True))
    files: dict[str, bytes] = {"prog.bpf.c": source.encode(), "prog.bpf.o": obj.object}
    maps: list[MapSpec] = []
    for name, (mtype, ks, vs) in MAP_SPECS.items():
        files[f"maps/{name}.bin"] = b"".join(k + v for k, v in contents[name])
        maps.append({"name": name, "type": mtype, "key_size": ks, "value_size": vs,
                     "contents": f"maps/{name}.bin", "entries": len(contents[name]), "percpu": False})
    maps += [
        {"name": "np_conntrack", "type": "lru_hash", "key_size": 40, "value_size": 16, "percpu": False},
        {"name": "np_frags", "type": "lru_hash", "key_size": 40, "value_size": 8, "percpu": False},
        {"name": stats, "type": "percpu_array", "key_size": 4, "value_size": 16, "percpu": True},
        {"name": "np_events", "type": "ringbuf", "key_size": 0, "value_size": 0, "percpu": False},
    ]
    if ep.attach_kind == "cgroup_skb":
        programs = [{"name": "netpol_cg_ingress", "type": "cgroup_skb"},
                    {"name": "netpol_cg_egress", "type": "cgroup_skb"}]
        attachments = [{"program": f"netpol_cg_{d}", "type": "cgroup_skb", "direction": d,
                        "cgroup": ep.cgroup} for d in ("ingress", "egress")]
    else:
        programs = [{"name": "netpol_tc_ingress", "type": "tc"}, {"name": "netpol_tc_egress", "type": "tc"}]
        attachments = [{"program": f"netpol_tc_{d}", "type": "tc", "direction": d,
                        "interface": i.name, "netns": i.netns}
                       for i in ep.interfaces for d in ("ingress", "egress")]
    # the vectors probe every peer prefix (~0.25 s at 10k CIDRs): under the controller
    # (option "defer_files") they are made after the map contents reached the kernel
    defer = bool(ctx.options.get("defer_files"))
    vector_programs = list(programs)
    if not defer:
        files["kernel-test.txt"] = kernel_test(plan, contents, vector_programs).encode()
    if raw_socket_guard(plan):  # after kernel_test: its vectors run the skb programs only
        programs.append({"name": "netpol_sockopt", "type": "cgroup_sockopt"})
        attachments.append({"program": "netpol_sockopt", "type": "cgroup_sockopt",
                            "direction": "setsockopt", "cgroup": str(ep.cgroup)})
    manifest: Manifest = {
        "object": "prog.bpf.o",
        "program_hash": program_hash,
        "programs": programs,
        "maps": maps,
        "attachments": attachments,
        "counters": {"map": stats, "layout": "percpu_array_u64x2", "rules": counter_rules(plan)},
        "events": {"map": "np_events", "type": "ringbuf", "layout": "netpol_event_v1",
                   "fields": "ts_ns u64, slot u32, action u8, dir u8 (0 ingress), proto u8, family u8, "
                             "lport u16, rport u16, laddr [16]u8, raddr [16]u8, pad u32 (56 bytes)",
                   "actions": ACTION_NAMES},
        "metadata": {
            "policy": policy_id, "endpoint": ep.name,
            "policies": sorted({s.policy for s in plan.specs}),
            "default": {d: ACTION_NAMES[plan.default(d)[0]] for d in ("ingress", "egress")},
            "peer_sets": len(plan.peer_sets),
        },
    }
    artifact = Artifact("NetworkPolicy", ep.name, files, manifest, warnings=list(plan.warnings))
    if defer:
        def fill(out: dict[str, bytes]) -> None:
            out["kernel-test.txt"] = kernel_test(plan, contents, vector_programs).encode()

        artifact.deferred = fill
    return artifact


def _polices_egress(plan: EndpointPlan) -> bool:
    return plan.dd_all["egress"] or any(r.direction == "egress" for r in plan.rules)


def raw_socket_guard(plan: EndpointPlan) -> bool:
    """Whether the endpoint gets the cgroup/setsockopt program refusing PACKET_QDISC_BYPASS:
    a tc endpoint (bypass skips tc egress) with egress rules whose inventory entry also
    names a cgroup to attach it to. A cgroup_skb endpoint gets none: AF_PACKET egress
    passes cgroup_skb with or without bypass (a compile warning says so instead)."""
    ep = plan.endpoint
    return bool(ep.cgroup) and ep.attach_kind == "tc" and _polices_egress(plan)


def raw_socket_notes(models: Sequence[Model], inventory: list[Any]) -> list[Diagnostic]:
    """A warning at the first egress rule of every cgroup_skb endpoint under egress policy:
    AF_PACKET egress passes cgroup_skb, and sock_create is not run for packet sockets
    (checked on 6.18), so only tc (the endpoint's interfaces) sees those frames."""
    specs = [s for m in models if isinstance(m, NetpolModel) for s in m.rules]
    notes = []
    for ep in inventory:
        if ep.attach_kind != "cgroup_skb":
            continue
        plan = plan_endpoint(ep, specs, inventory)
        if plan is None or not _polices_egress(plan):
            continue
        rule = next((r for r in plan.rules if r.direction == "egress"), None)
        if rule is None:  # egress default deny from an empty egress section: the policy
            doc = next(m.doc for m in models if isinstance(m, NetpolModel) and m.rules)
            notes.append(doc.diag(("metadata", "name"), f"inventory endpoint {ep.name!r}: {RAW_SOCKET_GAP}",
                                  "warning"))
            continue
        file, line, col = rule.where.rsplit(":", 2)
        notes.append(Diagnostic(file, int(line), int(col), rule.path,
                                f"inventory endpoint {ep.name!r}: {RAW_SOCKET_GAP}", "warning"))
    return notes


def counter_rules(plan: EndpointPlan) -> list[CounterRule]:
    out: list[CounterRule] = [{"index": i, "name": n, "path": None,
                                  "action": n.split("/")[1]} for i, n in enumerate(RESERVED_NAMES)]
    for i, r in enumerate(plan.rules):
        out.append({"index": RESERVED_SLOTS + i, "name": r.name, "policy": r.policy, "path": r.path,
                    "where": r.where, "direction": r.direction,
                    "action": "deny" if r.deny else "allow", "audit": r.audit})
    return out


# --------------------------------------------------------------------------- kernel-test


def probe_address(plan: EndpointPlan, i: int) -> str | None:
    """An address the peer part of rule `i` matches (None if it matches nothing we can name)."""
    r = plan.rules[i]
    managed = {ipaddress.ip_network(n) for n in plan.managed}
    cands: list[Any] = []
    if r.any_peer or "all" in r.entities or "world" in r.entities or "world-ipv4" in r.entities:
        cands.append(ipaddress.ip_address("203.0.113.7"))
    if "world-ipv6" in r.entities:
        cands.append(ipaddress.ip_address("2001:db8::7"))
    if "host" in r.entities:
        cands.append(ipaddress.ip_address("127.0.0.1"))
    if "cluster" in r.entities:
        cands += [a for ep in plan.inventory for a in ep.addresses]
    for c in r.cidrs:
        for off in (1, 0, 2, -2):
            try:
                cands.append(c.net[off])
            except IndexError:
                continue
    for ep in plan.inventory:
        if not ep.host and any(s.matches(ep.labels) for s in r.endpoints):
            cands += list(ep.addresses)
    for a in cands:
        p = ipaddress.ip_network(a)
        if plan._peer_matches(r, p) and (r.cidrs == () or p not in managed):
            return str(a)
    return None


def probes(plan: EndpointPlan) -> list[tuple[str, str, int, int]]:
    """(direction, peer address, proto, port) probes: one per rule plus the defaults."""
    out = []
    for i, r in enumerate(plan.rules):
        addr = probe_address(plan, i)
        if addr is None:
            continue
        l4 = plan.l4[i]
        if l4:
            proto, port = l4[0].proto, l4[0].lo
            if ipaddress.ip_address(addr).version == 6 and proto == ICMP:
                continue
            if ipaddress.ip_address(addr).version == 4 and proto == ICMPV6:
                continue
        else:
            proto, port = 6, 80
        out.append((r.direction, addr, proto, port))
        # the edges: just past the first port range, and inside each except
        if l4 and l4[0].hi < 65535 and proto not in (ICMP, ICMPV6):
            out.append((r.direction, addr, proto, l4[0].hi + 1))
        for c in r.cidrs:
            for e in c.excepts:
                out.append((r.direction, str(e[-1] if e.num_addresses > 1 else e[0]), proto, port))
    for d in ("ingress", "egress"):
        out.append((d, "198.51.100.200", 6, 4))
    return out


def kernel_test(plan: EndpointPlan, contents: dict[str, list[tuple[bytes, bytes]]],
                programs: list[dict[str, Any]], limit: int = 4000) -> str:
    """`object`, `map-update` of every content record, then `prog-run` vectors whose
    expected return values come from the same tables (kernel-tests/README.md)."""
    ep = plan.endpoint
    script = KernelTestScript().comment(f"NetworkPolicy/{ep.name}: merged {', '.join(sorted({s.policy for s in plan.specs}))}")
    script.object()
    records = [(m, k, v) for m, recs in contents.items() for k, v in recs]
    if len(records) > limit:
        return script.comment(f"{len(records)} map records exceed {limit}: behaviour vectors omitted").text()
    for m, k, v in records:
        script.map_update(m, k, v)
    local4 = next((str(a) for a in ep.addresses if a.version == 4), "10.255.0.1")
    local6 = next((str(a) for a in ep.addresses if a.version == 6), "fd00:ffff::1")
    cg = ep.attach_kind == "cgroup_skb"
    for n, (d, addr, proto, port) in enumerate(probes(plan)):
        if cg and plan.within_endpoint(addr, loopback=True):
            continue  # test runs are on "lo": this peer would be the endpoint itself
        action, slot = plan.table_verdict(d, addr, proto, port)
        local = local4 if ipaddress.ip_address(addr).version == 4 else local6
        sport = 40000 + n
        src, dst = (addr, local) if d == "ingress" else (local, addr)
        data = frame(src, dst, proto, sport, port)
        drop = action in DROPS
        expect = (0 if drop else 1) if cg else (2 if drop else 0)
        prog = f"netpol_{'cg' if cg else 'tc'}_{d}"
        script.comment(f"{d} {addr} proto {proto} port {port}: {ACTION_NAMES[action]} ({plan.slot_name(slot)})")
        script.prog_run(prog, expect, data).live(prog, expect, data, d)
    return script.text()
