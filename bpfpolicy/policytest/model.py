"""The `*.test.yaml` format (kind PolicyTest): loaded through policy/load.py, checked
against bpfpolicy/schemas/policytest.json and then by hand (addresses, syscall names),
every problem a `file:line:col: path: message` diagnostic."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..policy.diagnostics import Diagnostic
from ..policy.load import Document, LoadError, load_file, read_regular_file
from ..policy.validate import schema_diagnostics

SCHEMA = "policytest.json"
TEST_SUFFIXES = (".test.yaml", ".test.yml")
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}


@dataclass
class Case:
    """One case: what goes in (packet or syscall) and what must come out."""

    file: str
    index: int
    name: str
    where: str  # file:line:col of the case
    packet: dict[str, Any] | None
    syscall: dict[str, Any] | None
    expect: dict[str, Any]
    event: dict[str, Any] | None = None  # TracingPolicy: hook, args, binary, pid

    @property
    def label(self) -> str:
        return f"{self.file}#{self.index} {self.name}"


@dataclass
class TestFile:
    path: Path
    policy: Path
    inventory: Path | None
    cases: list[Case] = field(default_factory=list)


def find_test_files(paths: list[str]) -> list[Path]:
    """Test files under `paths` (a file given by name is taken whatever its name)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += sorted(c for c in p.rglob("*") if c.is_file() and c.name.endswith(TEST_SUFFIXES)
                          and not any(part.startswith(".") for part in c.relative_to(p).parts))
        else:
            out.append(p)
    return out


def load_test_file(path: Path) -> tuple[TestFile | None, list[Diagnostic]]:
    try:
        docs = load_file(path)
    except LoadError as e:
        return None, [e.diagnostic]
    if len(docs) != 1:
        return None, [docs[1].diag((), "a test file holds exactly one PolicyTest document")]
    doc = docs[0]
    diags = schema_diagnostics(doc, SCHEMA)
    if diags:
        return None, diags
    spec = doc.data["spec"]
    policy = path.parent / spec["policy"]
    inventory = path.parent / spec["inventory"] if spec.get("inventory") else None
    for key, target in (("policy", policy), ("inventory", inventory)):
        if target is not None:
            try:
                read_regular_file(target, str(target), 1)
            except LoadError as e:
                if "limited" not in e.diagnostic.message:
                    diags.append(doc.diag(("spec", key), f"{spec[key]}: {e.diagnostic.message}"))
    tf = TestFile(path, policy, inventory)
    for i, raw in enumerate(spec["cases"]):
        diags += _check_case(doc, i, raw)
        line, col = doc.pos(("spec", "cases", i))
        tf.cases.append(Case(str(path), i, raw.get("name") or f"case {i}", f"{path}:{line}:{col}",
                             raw.get("packet"), raw.get("syscall"), raw["expect"], raw.get("event")))
    return (None if diags else tf), diags


def _check_case(doc: Document, i: int, raw: dict[str, Any]) -> list[Diagnostic]:
    base = ("spec", "cases", i)
    out = []
    pkt = raw.get("packet")
    exp = raw["expect"]
    if pkt is not None:
        for key in ("src", "dst"):
            if key in pkt:
                try:
                    ipaddress.ip_address(pkt[key])
                except ValueError:
                    out.append(doc.diag((*base, "packet", key), f'"{pkt[key]}" is not an IPv4 or IPv6 address'))
        if "verdict" not in exp:
            out.append(doc.diag((*base, "expect"), 'a packet case needs expect.verdict (allow or deny)'))
    elif raw.get("event") is not None:
        if "selector" not in exp:
            out.append(doc.diag((*base, "expect"), "an event case needs expect.selector (an index or none)"))
    elif "action" not in exp:
        out.append(doc.diag((*base, "expect"), "a syscall case needs expect.action (allow, errno N, kill, log, trace)"))
    return out


def protocol_number(pkt: dict[str, Any]) -> int:
    return PROTOCOLS[str(pkt["protocol"]).lower()]


def l4_port(pkt: dict[str, Any]) -> int:
    """The 'port' policies judge: the destination port, or the ICMP type."""
    if protocol_number(pkt) in (1, 58):
        return int(pkt.get("icmpType", 8 if protocol_number(pkt) == 1 else 128))
    return int(pkt.get("port", 0))
