"""Where a host differs from a Cilium cluster, said at compile time instead of silently.

* A policy that selects no inventory endpoint compiles to nothing; `plan`/`apply` would
  say "no changes". It is a warning naming the policy (a nodeSelector policy needs an
  inventory entry with `host: true`).
* A cgroup endpoint under ingress default deny: cgroup_skb programs see packets that
  reach or leave a socket of the cgroup. Packets the kernel answers itself (ICMP echo,
  the RST for a closed port) touch no such socket, so they pass; a scan can tell open
  from closed ports. A warning says so and names the alternative (tc on interfaces).
* `allow-localhost`: Cilium's `policy` (the host is a peer like any other; the default,
  as before) or `always` (Kubernetes: the host may always reach its endpoints, e.g. for
  kubelet probes) — per endpoint (`allowLocalhost:`) or for the whole compile
  (`CompileContext.options["allow_localhost"]`). `always` adds one allow rule from the
  `host` entity; an explicit deny of the host still wins (deny beats allow).
* `allowICMPFragNeeded` (Cilium's `allow-icmp-frag-needed`, on by default): ingress ICMP
  frag-needed / ICMPv6 packet-too-big pass before policy, so path MTU discovery works
  under ingress default deny — per endpoint (inventory) or for the whole compile
  (`CompileContext.options["allow_icmp_frag_needed"]`).
See docs/networkpolicy.md "Fidelity".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...policy.diagnostics import BuildError, Diagnostic
from ..base import Model
from .inventory import ALLOW_LOCALHOST, Endpoint
from .lower import selects
from .rules import PeerRule, Selector, SpecRule

CGROUP_BLIND = ("is enforced with cgroup_skb, which only sees packets of its cgroup's sockets: "
                "packets the kernel answers itself (ICMP echo replies, the TCP RST of a closed "
                "port) pass its ingress default deny, so a scan can tell open from closed ports; "
                "to enforce those too, give the endpoint interfaces and no cgroup (tc)")


def _specs(model: Model) -> list[SpecRule]:
    return list(getattr(model, "rules", []))


def selection_notes(models: Sequence[Model], inventory: list[Endpoint],
                    options: dict[str, Any]) -> list[Diagnostic]:
    """Warnings: policies that select nothing, cgroup endpoints under ingress default deny."""
    notes: list[Diagnostic] = []
    for m in models:
        specs = _specs(m)
        if not specs or any(selects(s, ep) for s in specs for ep in inventory):
            continue
        hint = ("; a nodeSelector selects the inventory entry with host: true and there is none"
                if any(s.node for s in specs) and not any(ep.host for ep in inventory) else "")
        notes.append(m.doc.diag(("metadata", "name"), f"{specs[0].policy}: selects no endpoint in "
                                f"the inventory{hint}", "warning"))
    for ep in inventory:
        if ep.attach_kind != "cgroup_skb":
            continue
        chosen = [(m, s) for m in models for s in _specs(m) if selects(s, ep)]
        if any(s.sections["ingress"] and s.default_deny["ingress"] and not s.audit for _, s in chosen):
            notes.append(chosen[0][0].doc.diag(("metadata", "name"),
                                               f"inventory endpoint {ep.name!r} {CGROUP_BLIND}", "warning"))
    return notes


def allow_localhost_mode(ep: Endpoint, options: dict[str, Any]) -> str:
    mode = ep.allow_localhost or options.get("allow_localhost") or "policy"
    if mode not in ALLOW_LOCALHOST:
        raise BuildError(f"allow_localhost {mode!r} is not one of {', '.join(ALLOW_LOCALHOST)}")
    return mode


def allow_frag_needed(ep: Endpoint, options: dict[str, Any]) -> bool:
    """The endpoint's `allowICMPFragNeeded`, else the compile option, else on (Cilium)."""
    value = ep.allow_frag_needed if ep.allow_frag_needed is not None else options.get("allow_icmp_frag_needed", True)
    if not isinstance(value, bool):
        raise BuildError(f"allow_icmp_frag_needed {value!r} is not true or false")
    return value


def host_always_rule(ep: Endpoint, options: dict[str, Any]) -> SpecRule | None:
    """`allow-localhost: always` as one extra rule selecting only `ep`: an ingress allow
    from the `host` entity that turns on no default deny (its sections are off)."""
    if ep.host or allow_localhost_mode(ep, options) != "always":
        return None
    rule = PeerRule(policy="allow-localhost", path="always", where="inventory:1:1",
                    direction="ingress", deny=False, audit=False, any_peer=False, entities=("host",))
    return SpecRule(policy="allow-localhost", path="always", node=False, selector=Selector(),
                    sections={"ingress": False, "egress": False},
                    default_deny={"ingress": False, "egress": False}, rules=[rule])
