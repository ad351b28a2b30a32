"""The host inventory: which endpoints exist on this host and how to enforce on them.

An inventory is a list of entries (the controller's host config `endpoints:` key, or a
YAML/JSON file given to `compile --inventory FILE`: a list, or a config with `endpoints:`):

    - name: web                      # DNS-1123 label; names the endpoint's artifact
      labels: {app: web}             # what endpointSelector/fromEndpoints match
      cgroup: /sys/fs/cgroup/unified/web     # → cgroup_skb ingress/egress programs
      addresses: [10.0.0.5, fd00::5]        # what fromEndpoints/toEndpoints resolve to
      ports: [{name: http, port: 8080, protocol: TCP}]   # named ports
    - name: db
      labels: {app: db}
      interfaces: [{name: eth0, netns: db}]  # → tc programs on the endpoint's own interfaces
      addresses: [10.0.0.6]
    - name: node
      host: true                     # the host itself: selected by nodeSelector only
      labels: {type: worker}
      interfaces: [{name: eth0}]     # host firewall (tc) on these
      addresses: [192.168.1.10]

    - name: web
      namespace: team-b              # DNS-1123 label, default `default` (as in Kubernetes)
      labels: {app: web}
      interfaces: [{name: eth0, netns: team-b-web}]

Every non-host endpoint carries the label `io.kubernetes.pod.namespace: <namespace>`, as
a Cilium endpoint does: a namespaced policy's selectors match within its namespace
through it, and a selector may name it to reach across. Endpoint names are unique per
namespace; outside `default` the endpoint's artifact is named `<namespace>.<name>` (both
DNS-1123 labels, so the dot keeps the two apart and it stays one safe path component).

An endpoint with a cgroup is enforced there (its interfaces, if any, are ignored); one
without a cgroup is enforced with tc on its interfaces. Interface directions are the
endpoint's own: tc ingress on its interface = traffic *to* the endpoint.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ...policy.diagnostics import Diagnostic
from ...policy.load import Document, load_file
from .rules import DEFAULT_NAMESPACE, NAMESPACE_LABEL

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PortMap = dict[tuple[str, int], int]  # (name, proto) -> port


@dataclass(frozen=True)
class Interface:
    name: str
    netns: str | None = None


@dataclass
class Endpoint:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    cgroup: str | None = None
    interfaces: tuple[Interface, ...] = ()
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    ports: PortMap = field(default_factory=dict)
    host: bool = False
    namespace: str = DEFAULT_NAMESPACE
    allow_localhost: str | None = None  # "policy" | "always"; None: the compile option decides
    allow_frag_needed: bool | None = None  # allowICMPFragNeeded; None: the compile option decides

    @property
    def short_name(self) -> str:
        """The name as written (`name` is qualified by a non-default namespace)."""
        return self.name.split(".", 1)[-1]

    @property
    def attach_kind(self) -> str:
        return "cgroup_skb" if self.cgroup and not self.interfaces else "tc"  # a cgroup next to
        # interfaces only carries the raw-socket guard (cgroup/setsockopt); tc enforces


class InventoryError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132}
FIELDS = {"name", "namespace", "labels", "cgroup", "interfaces", "addresses", "ports", "host",
          "allowLocalhost", "allowICMPFragNeeded"}
ALLOW_LOCALHOST = ("policy", "always")  # Cilium's --allow-localhost values we carry over


def parse_inventory(entries: Any, where: str = "inventory") -> list[Endpoint]:
    """Validate and parse inventory entries; raises InventoryError listing every problem."""
    problems: list[str] = []
    out: list[Endpoint] = []
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InventoryError([f"{where}: expected a list of endpoints"])
    names: set[str] = set()
    hosts = 0
    for i, e in enumerate(entries):
        p = f"{where}[{i}]"
        if not isinstance(e, dict):
            problems.append(f"{p}: expected a mapping")
            continue
        unknown = set(e) - FIELDS
        if unknown:
            problems.append(f"{p}: unknown field(s) {', '.join(sorted(unknown))}")
        name = e.get("name")
        if not isinstance(name, str) or not DNS1123.match(name) or len(name) > 63:
            problems.append(f"{p}.name: {name!r} is not a DNS-1123 label (it names the endpoint's artifact)")
            continue
        ns = e.get("namespace", DEFAULT_NAMESPACE)
        if not isinstance(ns, str) or not DNS1123.match(ns) or len(ns) > 63:
            problems.append(f"{p}.namespace: {ns!r} is not a DNS-1123 label (it is part of the "
                            "endpoint's artifact name)")
            continue
        qualified = name if ns == DEFAULT_NAMESPACE else f"{ns}.{name}"
        if qualified in names:
            problems.append(f"{p}.name: duplicate endpoint {name!r} in namespace {ns!r}")
        names.add(qualified)
        ep = Endpoint(name=qualified, host=bool(e.get("host")), namespace=ns)
        hosts += ep.host
        ep.labels = {str(k): str(v) for k, v in (e.get("labels") or {}).items()}
        for k in [k for k in ep.labels if k.split(":", 1)[-1] == NAMESPACE_LABEL]:
            if ep.labels.pop(k) != ns:
                problems.append(f"{p}.labels.{k}: the namespace label is set from `namespace` "
                                f"({ns!r}); write namespace: instead")
        if not ep.host:  # the host is selected by nodeSelector, which is cluster-wide
            ep.labels[NAMESPACE_LABEL] = ns
        al = e.get("allowLocalhost")
        if al is not None and al not in ALLOW_LOCALHOST:
            problems.append(f"{p}.allowLocalhost: {al!r} is not one of {', '.join(ALLOW_LOCALHOST)}")
        ep.allow_localhost = al if al in ALLOW_LOCALHOST else None
        fn = e.get("allowICMPFragNeeded")
        if fn is not None and not isinstance(fn, bool):
            problems.append(f"{p}.allowICMPFragNeeded: {fn!r} is not true or false")
        ep.allow_frag_needed = fn if isinstance(fn, bool) else None
        cg = e.get("cgroup")
        if cg is not None and (not isinstance(cg, str) or not cg.startswith("/")):
            problems.append(f"{p}.cgroup: must be an absolute cgroup v2 path")
        ep.cgroup = cg if isinstance(cg, str) else None
        ifs = []
        for j, itf in enumerate(e.get("interfaces") or []):
            if isinstance(itf, str):
                itf = {"name": itf}
            if not isinstance(itf, dict) or not isinstance(itf.get("name"), str):
                problems.append(f"{p}.interfaces[{j}]: expected {{name, netns}}")
                continue
            ifs.append(Interface(itf["name"], itf.get("netns")))
        ep.interfaces = tuple(ifs)
        addrs = []
        for j, a in enumerate(e.get("addresses") or []):
            try:
                addrs.append(ipaddress.ip_address(str(a).split("/")[0]))
            except ValueError:
                problems.append(f"{p}.addresses[{j}]: {a!r} is not an IP address")
        ep.addresses = tuple(addrs)
        for j, port in enumerate(e.get("ports") or []):
            try:
                proto = PROTO[str(port.get("protocol", "TCP")).upper()]
                ep.ports[(str(port["name"]).lower(), proto)] = int(port["port"])
            except (KeyError, ValueError, TypeError, AttributeError):
                problems.append(f"{p}.ports[{j}]: expected {{name, port, protocol}}")
        if ep.host and ep.cgroup:
            problems.append(f"{p}: the host entry is enforced on its interfaces; remove cgroup")
        out.append(ep)
    if hosts > 1:
        problems.append(f"{where}: at most one entry may have host: true")
    if problems:
        raise InventoryError(problems)
    return out


def load_inventory(path: str) -> list[Endpoint]:
    """An inventory file: a list of endpoints, or the controller's host config (its
    `endpoints:` list; `inventory:` is accepted as a synonym)."""
    docs = load_file(path)
    data = docs[0].data
    if isinstance(data, dict):
        data = data.get("endpoints", data.get("inventory"))
    return parse_inventory(data, where=path)


def inventory_diagnostics(doc: Document, entries: Any) -> list[Diagnostic]:
    """Inventory problems as diagnostics on the config document holding them."""
    try:
        parse_inventory(entries)
    except InventoryError as e:
        return [doc.diag(("inventory",), msg) for msg in e.problems]
    return []


def from_options(options: dict[str, Any]) -> list[Endpoint]:
    """`ctx.options["inventory"]`: parsed endpoints, raw entries, or a file path."""
    inv = options.get("inventory")
    if inv is None:
        return []
    if isinstance(inv, str):
        return load_inventory(inv)
    if isinstance(inv, list) and inv and isinstance(inv[0], Endpoint):
        return list(inv)
    return parse_inventory(inv)
