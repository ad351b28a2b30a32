"""Helpers of the NetworkPolicy tests: a standard inventory and a planner that
checks the datapath tables against the rule-level oracle on every probe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bpfpolicy.kinds.netpol.inventory import parse_inventory
from bpfpolicy.kinds.netpol.lower import ACTION_NAMES, EndpointPlan, plan_endpoint
from bpfpolicy.kinds.netpol.rules import parse_policy
from bpfpolicy.policy.load import load_file
from bpfpolicy.policy.validate import validate_documents

INVENTORY: list[dict[str, Any]] = [
    {"name": "node", "host": True, "labels": {"role": "node"}, "interfaces": [{"name": "eth0"}],
     "addresses": ["192.168.1.10", "fd00::10"]},
    {"name": "web", "labels": {"app": "web", "tier": "front"}, "cgroup": "/sys/fs/cgroup/unified/web",
     "addresses": ["10.0.0.5"], "ports": [{"name": "http-alt", "port": 8080, "protocol": "TCP"}]},
    {"name": "client", "labels": {"app": "client"}, "interfaces": [{"name": "eth0", "netns": "client"}],
     "addresses": ["10.0.0.6", "fd00::6"]},
    {"name": "db", "labels": {"app": "db", "tier": "back"}, "interfaces": [{"name": "eth0", "netns": "db"}],
     "addresses": ["10.0.0.7"], "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]},
]


class Planner:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.n = 0

    def plans(self, text: str, inventory: list[dict[str, Any]] | None = None,
              lenient: bool = False) -> dict[str, EndpointPlan]:
        self.n += 1
        f = self.tmp / f"p{self.n}.yaml"
        f.write_text(text)
        result = validate_documents(load_file(f), lenient=lenient)
        assert result.ok, "\n".join(str(d) for d in result.diagnostics)
        inv = parse_inventory(inventory if inventory is not None else INVENTORY)
        specs = [s for v in result.policies for s in parse_policy(v.doc)]
        out = {}
        for ep in inv:
            p = plan_endpoint(ep, specs, inv)
            if p is not None:
                out[ep.name] = p
        return out

    def plan(self, text: str, endpoint: str = "web", **kw: Any) -> EndpointPlan:
        return self.plans(text, **kw)[endpoint]


def verdict(plan: EndpointPlan, d: str, addr: str, proto: int = 6, port: int = 80) -> str:
    """The verdict's action name; asserts tables and oracle agree."""
    table = plan.table_verdict(d, addr, proto, port)
    ref = plan.reference_verdict(d, addr, proto, port)
    assert table == ref, f"tables {table} != oracle {ref} for {d} {addr} {proto}/{port}"
    return ACTION_NAMES[table[0]]


def rule_of(plan: EndpointPlan, d: str, addr: str, proto: int = 6, port: int = 80) -> str:
    return plan.slot_name(plan.table_verdict(d, addr, proto, port)[1])

