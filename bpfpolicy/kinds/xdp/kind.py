"""XDPBlocklist: drop traffic by source address at the XDP hook (docs/xdp.md).

parse()         — semantic checks beyond the schema (CIDRs, list files, ports, names, netns)
                  that build the typed `XdpModel` (rules with their loaded sources) once.
compile_model() — rules -> lowering (xdp/lower.py) -> codegen/templates/xdp_blocklist.bpf.c.j2 ->
                  clang -> an Artifact: prog.bpf.c, prog.bpf.o, maps/<map>.bin, kernel-test.txt,
                  manifest.

`program_hash` is the artifact contract's one definition (bpfpolicy/artifact.py): the
generated C without comments, so changing addresses or ports (map contents only) keeps it
stable and the controller applies a map delta instead of reloading the program.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...artifact import AttachSpec, CounterRule, Manifest, MapSpec, stamp_program_hash
from ...policy.diagnostics import Diagnostic, PolicyError, format_path
from ...policy.load import Document
from ..base import Artifact, CompileContext, Kind, Model, Reporter
from ..vectors import KernelTestScript
from .changes import describe_change as _describe_change
from .incremental import lower_incremental
from .lower import (
    LIMITS,
    MAX_RULES,
    PORT_PROTOCOLS,
    PROTOCOLS,
    V6_TBL_C,
    Lowered,
    Rule,
    classify,
    find_record,
    v6_path,
)
from .sources import Sources, UnsafeListFile, open_list, parse_cidr

IFNAMSIZ = 16
_IFNAME_BAD = re.compile(r"[\s/:]")
_PROTO_NAMES = {v: k for k, v in PROTOCOLS.items()}


def _base_dir(doc: Document, ctx: CompileContext | None = None) -> Path:
    if ctx is not None and ctx.base_dir is not None:
        return ctx.base_dir
    return Path(doc.file).resolve().parent


def _display(doc: Document, rel: str) -> str:
    """How a list file is named in diagnostics: beside the policy file, as the user sees it."""
    p = Path(rel)
    return str(p if p.is_absolute() else Path(doc.file).parent / p)


def _parse_ports(items: list[Any]) -> tuple[list[tuple[int, int]], list[tuple[int, str]]]:
    """(ranges, [(item index, error)])."""
    ranges: list[tuple[int, int]] = []
    errors: list[tuple[int, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, bool):
            errors.append((i, "port must be a number or a \"low-high\" range"))
            continue
        if isinstance(item, int):
            lo = hi = item
        else:
            text = str(item).strip()
            a, sep, b = text.partition("-")
            if not a.isdigit() or (sep and not b.isdigit()):
                errors.append((i, f'"{text}" is not a port or a "low-high" range'))
                continue
            lo, hi = int(a), int(b) if sep else int(a)
            if sep and lo > hi:
                errors.append((i, f'port range "{text}" is reversed (did you mean "{hi}-{lo}"?)'))
                continue
        bad = [p for p in (lo, hi) if not 0 <= p <= 65535]
        if bad:
            errors.append((i, f"port {bad[0]} is out of range (0-65535)"))
            continue
        ranges.append((lo, hi))
    return ranges, errors


@dataclass
class XdpModel(Model):
    """A checked XDPBlocklist: its rules (deny first; sources loaded), rate limit and hooks."""

    name: str
    rules: list[Rule]
    rate: dict[str, int] | None  # {"synPerSecond", "burst"}
    interfaces: list[tuple[str, str | None]]  # (interface, netns)
    mode: str


class XDPBlocklistKind(Kind):
    kind = "XDPBlocklist"
    describe_change = staticmethod(_describe_change)  # plan's rule-level lines (changes.py)
    schema_file = "xdpblocklist.json"

    def parse(self, doc: Document, report: Reporter) -> Model:
        """Check the document and, when it is valid, build its model from the same reads
        of the source lists (each list file is read once)."""
        self._sources_read: dict[str, Sources] = {}
        try:
            self.check(doc, report)
            return Model(doc) if report.failed else self._model(doc)
        finally:
            del self._sources_read

    def _model(self, doc: Document) -> XdpModel:
        spec = doc.data["spec"]
        rate = spec.get("rateLimit")
        if rate:
            rate = {"synPerSecond": int(rate["synPerSecond"]), "burst": int(rate.get("burst") or rate["synPerSecond"])}
        interfaces = [(item, None) if isinstance(item, str) else (item["name"], item.get("netns"))
                      for item in spec["interfaces"]]
        return XdpModel(doc, str(self.policy_name(doc)), self.rules(doc), rate or None, interfaces,
                        spec.get("mode", "auto"))

    # ------------------------------------------------------------------ checks
    def check(self, doc: Document, report: Reporter) -> None:
        spec = doc.get(("spec",), {}) or {}
        self._check_interfaces(doc, spec, report)
        names: dict[str, tuple[str | int, ...]] = {}
        total = 0
        for section in ("deny", "allow"):
            for i, rule in enumerate(spec.get(section) or []):
                path: tuple[str | int, ...] = ("spec", section, i)
                total += 1
                name = rule.get("name") or f"{section}-{i}"
                if name in names:
                    where = doc.pos(names[name])
                    report.error((*path, "name") if "name" in rule else path,
                                 f'duplicate rule name "{name}" (first used at line {where[0]}); '
                                 "counters are reported by rule name")
                else:
                    names[name] = (*path, "name") if "name" in rule else path
                self._check_rule(doc, rule, path, report)
        if total > MAX_RULES:
            report.error(("spec",), f"{total} rules: at most {MAX_RULES} allow+deny rules per policy "
                         "(merge rules with the same filters; sources can be as long as you like)")
        if not spec.get("deny") and not spec.get("rateLimit"):
            report.error(("spec",), "nothing to enforce: give deny rules or a rateLimit "
                         "(allow rules only make exceptions to those)")

    def _check_interfaces(self, doc: Document, spec: dict[str, Any], report: Reporter) -> None:
        seen: dict[tuple[str, str | None], int] = {}
        for i, item in enumerate(spec.get("interfaces") or []):
            name, netns = (item, None) if isinstance(item, str) else (item.get("name"), item.get("netns"))
            path: tuple[str | int, ...] = ("spec", "interfaces", i) if isinstance(item, str) else ("spec", "interfaces", i, "name")
            if not isinstance(name, str):
                continue
            if len(name.encode()) >= IFNAMSIZ:
                report.error(path, f'interface name "{name}" is {len(name.encode())} bytes; Linux allows '
                             f"at most {IFNAMSIZ - 1} (IFNAMSIZ)")
            elif name in (".", "..") or _IFNAME_BAD.search(name):
                report.error(path, f'"{name}" is not a valid interface name (no whitespace, "/" or ":")')
            if netns is not None and ("/" in netns or netns in (".", "..")):
                report.error(("spec", "interfaces", i, "netns"),
                             f'"{netns}" is not a valid network namespace name (a name under /run/netns)')
            key = (name, netns)
            if key in seen:
                report.error(path, f'interface "{name}"{" in netns " + netns if netns else ""} is listed '
                             f"twice (also spec.interfaces[{seen[key]}])")
            seen.setdefault(key, i)

    def _check_rule(self, doc: Document, rule: dict[str, Any], path: tuple[str | int, ...],
                    report: Reporter) -> None:
        count = 0
        for j, src in enumerate(rule.get("sources") or []):
            try:
                parse_cidr(str(src))
                count += 1
            except ValueError as e:
                report.error((*path, "sources", j), str(e))
        for j, rel in enumerate(rule.get("sourceFiles") or []):
            fpath = (*path, "sourceFiles", j)
            parsed = self._load_file(doc, str(rel), fpath, report)
            if parsed is None:
                continue
            count += parsed.count
            shown = _display(doc, str(rel))
            for line, msg in parsed.errors:
                report.diagnostics.append(Diagnostic(shown, line, 1, format_path(fpath), msg))
            if parsed.error_count > len(parsed.errors):
                report.error(fpath, f"{shown}: {parsed.error_count - len(parsed.errors)} more bad lines not shown")
            if not parsed.errors and parsed.count == 0:
                report.warning(fpath, f"{shown} lists no addresses")
        protos = rule.get("protocols")
        if protos and "any" in protos and len(protos) > 1:
            report.error((*path, "protocols"), '"any" cannot be combined with other protocols')
        if protos and len(set(protos)) != len(protos):
            dup = next(p for p in protos if protos.count(p) > 1)
            report.error((*path, "protocols", protos.index(dup, protos.index(dup) + 1)), f'protocol "{dup}" is listed twice')
        ports = rule.get("ports")
        if ports:
            _, errors = _parse_ports(ports)
            for j, msg in errors:
                report.error((*path, "ports", j), msg)
            if protos and "any" not in protos and not any(PROTOCOLS[p] in PORT_PROTOCOLS for p in protos):
                report.error((*path, "ports"), "ports only apply to tcp, udp and sctp, but the rule's "
                             f"protocols are {', '.join(protos)}")

    def _load_file(self, doc: Document, rel: str, fpath: tuple[str | int, ...],
                   report: Reporter | None) -> Sources | None:
        read = getattr(self, "_sources_read", None)
        if read is not None and rel in read:
            return read[rel]
        root = getattr(doc, "tree_root", None) or Path(doc.file).resolve().parent
        try:
            sources = open_list(root, rel, _base_dir(doc))
            if read is not None:
                read[rel] = sources
            return sources
        except UnsafeListFile as e:
            msg = f"source list {e}"
        except FileNotFoundError:
            msg = f"source list {_display(doc, rel)} does not exist (paths are relative to the policy file)"
        except IsADirectoryError:
            msg = f"source list {_display(doc, rel)} is a directory"
        except OSError as e:
            msg = f"cannot read source list {_display(doc, rel)}: {e.strerror}"
        if report is not None:
            report.error(fpath, msg)
        else:
            raise PolicyError([doc.diag(fpath, msg)])
        return None

    # ------------------------------------------------------------------ model
    def rules(self, doc: Document) -> list[Rule]:
        """The validated document as lowering input: deny rules first, then allow rules
        (rule index = counter index = bit in the rule sets)."""
        spec = doc.get(("spec",), {}) or {}
        out: list[Rule] = []
        for section, action in (("deny", "drop"), ("allow", "pass")):
            for i, raw in enumerate(spec.get(section) or []):
                path = ("spec", section, i)
                src = Sources()
                inline = [parse_cidr(str(s)) for s in raw.get("sources") or []]
                if inline:
                    import numpy as np

                    v4 = [(a, p) for f, a, p in inline if f == 4]
                    src.v4_addr = np.array([a for a, _ in v4], dtype=np.uint32)
                    src.v4_plen = np.array([p for _, p in v4], dtype=np.uint8)
                    src.set_v6([(a, p) for f, a, p in inline if f == 6])
                for j, rel in enumerate(raw.get("sourceFiles") or []):
                    parsed = self._load_file(doc, str(rel), (*path, "sourceFiles", j), None)
                    assert parsed is not None
                    src.extend(parsed)
                protos = raw.get("protocols")
                protocols = None if not protos or "any" in protos else {PROTOCOLS[p] for p in protos}
                ports = _parse_ports(raw["ports"])[0] if raw.get("ports") else None
                if ports is not None and protocols is None:
                    protocols = set(PORT_PROTOCOLS)  # ports imply a protocol that has ports
                line, col = doc.pos(path)
                out.append(Rule(len(out), raw.get("name") or f"{section}-{i}", action, path,
                                f"{doc.source_name}:{line}:{col}", src, protocols, ports))
        return out

    # ------------------------------------------------------------------ compile
    def compile(self, doc: Document, ctx: CompileContext) -> Artifact:
        """One document outside the validate pipeline: parse it, then compile the model."""
        report = Reporter(doc)
        model = self.parse(doc, report)
        if report.failed or not isinstance(model, XdpModel):
            raise PolicyError([d for d in report.diagnostics if d.severity == "error"])
        return self.compile_model(model, ctx)

    def compile_model(self, model: Model, ctx: CompileContext) -> Artifact:
        from ...codegen.build import build_bpf
        from ...codegen.render import render

        assert isinstance(model, XdpModel)
        doc, name, rules = model.doc, model.name, model.rules
        policy_id = f"{self.kind}/{name}"
        # a few changed /32s patch the last lowering of this policy (incremental.py); the
        # controller (option "defer_files") gets the patches before the records are spliced
        defer = bool(ctx.options.get("defer_files"))
        try:
            inc = lower_incremental(f"{doc.file}:{policy_id}", rules, model.rate, defer=defer)
        except ValueError as e:
            raise PolicyError([doc.diag(("spec",), str(e))]) from None
        low = inc.low
        context = self._template_context(doc, low, policy_id)
        source, program_hash = stamp_program_hash(render("xdp_blocklist.bpf.c.j2", **context, source_hash=""))
        built = build_bpf(source, name=f"xdp-{name}")

        files: dict[str, bytes] = {"prog.bpf.c": source.encode(), "prog.bpf.o": built.object}
        maps_manifest: list[MapSpec] = []
        for m in low.maps.values():
            entry = MapSpec(name=m.name, type=m.type, key_size=m.key_size, value_size=m.value_size,
                            max_entries=m.max_entries, percpu=m.percpu, flags=m.flags)
            if m.name in inc.pending:  # spliced by `fill` below
                entry.update(contents=f"maps/{m.name}.bin", entries=inc.pending[m.name])
            elif m.records is not None:
                files[f"maps/{m.name}.bin"] = m.records
                entry.update(contents=f"maps/{m.name}.bin", entries=m.entries)
            maps_manifest.append(entry)
        if not inc.pending:
            files["kernel-test.txt"] = kernel_test(low).encode()
        attachments = [AttachSpec(program="xdp_blocklist", type="xdp", interface=ifname, netns=netns,
                                  mode=model.mode) for ifname, netns in model.interfaces]
        counters = [CounterRule(index=r.index, name=r.name, path=format_path(r.path), action=r.action)
                    for r in rules]
        if model.rate:
            counters.append(CounterRule(index=len(rules), name="rateLimit", path="spec.rateLimit", action="drop"))
        # packets dropped because what a rule depends on could not be parsed (docs/xdp.md "Fail closed")
        counters.append(CounterRule(index=len(rules) + 1, name="failClosed", path="spec", action="drop"))
        manifest = Manifest(
            object="prog.bpf.o",
            program_hash=program_hash,
            programs=[{"name": "xdp_blocklist", "type": "xdp"}],
            maps=maps_manifest,
            attachments=attachments,
            counters={"map": "rule_stats", "layout": "percpu_array_u64x2", "rules": counters},
            features=dict(low.features.items()),
            metadata={"policy": policy_id, "source": doc.source_name, "revision": ctx.revision,
                      "entries": {"v4": int(sum(len(r.sources.v4_addr) for r in rules)),
                                  "v6": int(sum(len(r.sources.v6_plen) for r in rules))}},
        )
        # the records a patched lowering changed: the controller may write just these
        artifact = Artifact(self.kind, name, files, manifest, patches=inc.patches or {})
        if inc.pending:
            def fill(out: dict[str, bytes]) -> None:
                full = inc.complete()
                for map_name in inc.pending:
                    out[f"maps/{map_name}.bin"] = full.maps[map_name].records or b""
                out["kernel-test.txt"] = kernel_test(full).encode()

            artifact.deferred = fill
        return artifact

    def _template_context(self, doc: Document, low: Lowered, policy_id: str) -> dict[str, Any]:
        rate = low.features["rate_limit"]
        proto_masks = [{"number": p, "name": _PROTO_NAMES.get(p, str(p)), "mask": hex(m),
                        "rules": ", ".join(r.name for r in low.rules if m & r.bit)}
                       for p, m in sorted(low.proto_masks.items())]
        return {
            "policy_id": policy_id, "source_file": doc.source_name, "features": low.features,
            "rules": [{"index": r.index, "name": r.name, "action": r.action, "where": r.where,
                       "path": format_path(r.path)} for r in low.rules],
            "maps": low.maps, "masks": {k: hex(v) for k, v in low.masks.items()},
            "proto_masks": proto_masks, "tbl24_group": 32, "limits": LIMITS, "v6_tbl": V6_TBL_C,
            "fail_closed_index": len(low.rules) + 1,
            "syn_cost_ns": (10**9 // rate["synPerSecond"]) if rate else 0,
            "syn_burst_ns": (10**9 // rate["synPerSecond"]) * rate["burst"] if rate else 0,
        }


# --------------------------------------------------------------------------- kernel-test


def kernel_test(low: Lowered) -> str:
    """kernel-tests script: load the object, insert the few map entries the vectors need,
    run a blocked, an allowed, an ARP and a VLAN-tagged packet."""
    from . import packets as pk

    script = KernelTestScript().comment("XDPBlocklist vectors (generated): load, insert a few entries, run packets")
    script.object()
    blocked = _pick_blocked(low)
    needed: list[tuple[str, bytes]] = []
    vectors: list[tuple[int, bytes, str]] = []
    if blocked is not None:
        src, proto, dport = blocked
        needed += _entries_for(low, src)
        if proto in PORT_PROTOCOLS and "port_rules" in low.maps:
            needed.append(("port_rules", dport.to_bytes(4, "little")))
        verdict, _ = classify(low, src, proto, dport)
        ret = 1 if verdict == "drop" else 2
        vectors.append((ret, pk.packet(src, proto, dport), f"{verdict}: listed source {src}"))
        vectors.append((ret, pk.packet(src, proto, dport, vlans=(100,)), "same packet, 802.1Q tag"))
        vectors.append((ret, pk.packet(src, proto, dport, vlans=(100, 200)), "same packet, QinQ"))
    vectors.append((2, pk.packet("198.18.0.1", 6, 80), "pass: unlisted source"))
    vectors.append((2, pk.arp(), "pass: ARP"))
    vectors.append((2, pk.packet("198.18.0.1")[:20], "pass: truncated"))
    for name, key in needed:
        spec = low.maps[name]
        rec = find_record(spec.records or b"", spec.key_size, spec.value_size, key)
        if rec is not None:
            script.map_update(name, rec[:spec.key_size], rec[spec.key_size:])
    for ret, data, why in vectors:
        script.comment(why).prog_run("xdp_blocklist", ret, data).live("xdp_blocklist", ret, data)
    return script.text()


def _pick_blocked(low: Lowered) -> tuple[str, int, int] | None:
    import socket

    for r in low.rules:
        if r.action != "drop":
            continue
        proto = min(r.protocols) if r.protocols else 6
        proto = 6 if r.protocols and 6 in r.protocols else proto
        dport = r.ports[0][0] if r.ports else 80
        if len(r.sources.v4_addr):
            return socket.inet_ntoa(int(r.sources.v4_addr[0]).to_bytes(4, "big")), proto, dport
        if len(r.sources.v6_plen):
            first = int(r.sources.v6_hi[0]) << 64 | int(r.sources.v6_lo[0])
            return socket.inet_ntop(socket.AF_INET6, first.to_bytes(16, "big")), proto, dport
    return None


def _entries_for(low: Lowered, src: str) -> list[tuple[str, bytes]]:
    """Map keys the program reads to classify `src` (plus the ruleset it leads to)."""
    import socket

    out: list[tuple[str, bytes]] = []
    rid: int | None = None
    if ":" in src:
        raw = socket.inet_pton(socket.AF_INET6, src)
        rid, recs = v6_path(low, raw)
        out += recs
    else:
        raw = socket.inet_aton(src)
        top = int.from_bytes(raw, "big") >> 8
        if "v4_tbl24" in low.maps:
            gkey = (top // 32).to_bytes(4, "little")
            rec = find_record(low.maps["v4_tbl24"].records or b"", 4, 64, gkey)
            if rec:
                out.append(("v4_tbl24", gkey))
                slot = int.from_bytes(rec[4 + 2 * (top % 32):6 + 2 * (top % 32)], "little")
                rid = slot & 0x7FFF
        if "v4_exact" in low.maps:
            rec = find_record(low.maps["v4_exact"].records or b"", 4, 4, raw)
            if rec:
                out.append(("v4_exact", raw))
                rid = int.from_bytes(rec[4:], "little")
    if rid:
        out.append(("rulesets", rid.to_bytes(4, "little")))
    return out


def manifest_json(artifact: Artifact) -> str:  # pragma: no cover - debugging aid
    return json.dumps(artifact.manifest, indent=2, default=str)
