"""Desired vs observed → a list of actions per policy.

Actions (docs/upstream.md §6): `create`, `replace` (load a new program version and swap it in),
`update-map` (+N/−M entries, program untouched), `reattach` (an attachment drifted),
`record` (only the inventory changes: same program, same map contents), `prune`, and
`noop`. Drift-driven actions carry `drift=True`; with self-heal off they are reported
and not applied.

GitOps semantics: a policy the plan's source does not hold is pruned only when the
caller says the source is the whole truth (`--prune`, the configured source, `watch`);
otherwise it is kept and listed (`keep`, like kubectl apply without --prune). Each
changing policy also gets rule-level lines from its kind (`Kind.describe_change`) over
the policy document applied last (kept in the state dir at apply) and the new one;
hashes stay in the JSON plan, out of the human table.

Map deltas are computed against what the kernel map holds *now* (read through its pin),
not against what we believe we wrote, so an entry edited behind our back is both
detected and repaired by the same delta.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import HostConfig
from .desired import DesiredPolicy, DesiredState
from .observe import Observed, ObservedPolicy, describe_attachment

CHANGE_TYPES = {"create", "replace", "update-map", "reattach", "record", "prune"}


@dataclass
class Action:
    type: str
    detail: str = ""
    drift: bool = False
    maps: dict[str, tuple[int, int]] = field(default_factory=dict)  # map -> (+N, −M)
    attachments: list[int] = field(default_factory=list)  # reattach: indexes
    hashes: dict[str, str] = field(default_factory=dict)  # JSON only: {"old": …, "new": …}

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "detail": self.detail, "drift": self.drift}
        if self.hashes:
            d["hashes"] = self.hashes
        if self.maps:
            d["maps"] = {k: {"add": a, "remove": r} for k, (a, r) in self.maps.items()}
        if self.attachments:
            d["attachments"] = self.attachments
        return d


@dataclass
class PolicyPlan:
    key: str
    desired: DesiredPolicy | None
    observed: ObservedPolicy | None
    actions: list[Action] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # the kind's rule-level change lines
    old_doc: Any = None  # policy document applied last (None: none kept)
    new_doc: Any = None

    @property
    def changes(self) -> bool:
        return any(a.type in CHANGE_TYPES for a in self.actions)

    def doc_key(self) -> str:
        """`Kind/name` of the policy document (an endpoint artifact such as
        NetworkPolicy/ep is named after its endpoint; its lines name the policy)."""
        for doc in (self.new_doc, self.old_doc):
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            if isinstance(meta, dict) and meta.get("name"):
                return f"{self.key.split('/', 1)[0]}/{meta['name']}"
        return self.key

    def diff(self) -> str:
        """Unified diff of the policy object, applied → desired (`plan --diff`)."""
        import difflib

        a, b = doc_text(self.old_doc), doc_text(self.new_doc)
        return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True),
                                            f"applied/{self.doc_key()}", f"desired/{self.doc_key()}"))


@dataclass
class Plan:
    policies: list[PolicyPlan] = field(default_factory=list)
    refused: str | None = None  # e.g. prune-to-empty without --allow-empty
    kept: set[str] = field(default_factory=set)  # applied, not in the source, not pruned

    @property
    def changes(self) -> bool:
        return any(p.changes for p in self.policies)

    def as_dict(self) -> dict[str, Any]:
        return {"changes": self.changes, "refused": self.refused,
                "kept": sorted(self.kept),
                "policies": [{"policy": p.key, "actions": [a.as_dict() for a in p.actions],
                              "document": p.doc_key(), "changes": p.rules} for p in self.policies]}


KEEP = "not in PATH (use --prune to remove)"


def make_plan(cfg: HostConfig, desired: DesiredState, observed: Observed, *,
              allow_empty: bool = False, deep: bool = True, prune: bool = True) -> Plan:
    """`deep` reads every content map back from the kernel (drift detection); shallow
    plans trust the applied copies for unchanged policies (fast file-triggered cycles).
    `prune=False`: applied policies outside the source are kept (`keep`), not removed."""
    plan = Plan()
    for key in sorted(set(desired.policies) | set(observed.policies)):
        d, o = desired.policies.get(key), observed.policies.get(key)
        pp = PolicyPlan(key, d, o)
        if d is None and not prune:
            pp.actions.append(Action("keep", KEEP))
            plan.kept.add(key)
        elif d is None:
            assert o is not None
            pp.actions.append(Action("prune", "not in the desired state"))
        else:
            pp.actions = _policy_actions(d, o, cfg.state_dir, deep)
        if pp.changes:
            _describe(pp, cfg.state_dir)
        plan.policies.append(pp)
    prunes = [p for p in plan.policies if any(a.type == "prune" for a in p.actions)]
    if prunes and not desired.policies and not allow_empty:
        plan.refused = (f"refusing to prune all {len(prunes)} policies: the desired state is empty "
                        "(pass --allow-empty to remove every policy)")
    return plan


def _policy_actions(d: DesiredPolicy, o: ObservedPolicy | None, state_dir: Path, deep: bool) -> list[Action]:
    if o is None or (o.entry is None and o.pin_dir is None):
        return [Action("create", f"new {'program' if d.is_bpf else 'artifact'}", hashes={"new": d.digest})]
    e = o.entry
    if e is None:
        return [Action("replace", "adopt pinned objects with no inventory entry (reload and swap)", drift=True)]
    if not d.is_bpf:
        if e.get("digest") != d.digest:
            return [Action("replace", "install the new artifact",
                           hashes={"old": str(e.get("digest")), "new": d.digest})]
        if o.drift:
            return [Action("replace", "; ".join(o.drift), drift=True)]
        return [Action("noop")]
    why = _reload_reason(d, e, o)
    if why:
        hashes = {"old": str(e.get("program_hash")), "new": str(d.manifest.get("program_hash"))}
        return [Action("replace", why[0], drift=why[1], hashes=hashes if not why[1] else {})]
    actions: list[Action] = []
    deltas = {m: delta for m, delta in map_deltas(d, e, state_dir, deep).items() if delta != (0, 0)}
    if deltas:
        drift = e.get("digest") == d.digest
        detail = ", ".join(f"{m} +{a}/−{r}" for m, (a, r) in deltas.items())
        actions.append(Action("update-map", detail + (" (entries edited outside bpfpolicy)" if drift else ""),
                              drift=drift, maps=deltas))
    broken = [int(a["index"]) for a in e.get("attachments", [])
              if a.get("prog_id") not in o.attached.get(int(a["index"]), [])]
    if broken:
        atts = {int(a["index"]): a for a in e.get("attachments", [])}
        actions.append(Action("reattach", "; ".join(describe_attachment(atts[i]) + " detached or replaced"
                                                    for i in broken), drift=True, attachments=broken))
    if not actions and e.get("digest") != d.digest:
        actions.append(Action("record", "same program and map contents; new digest recorded"))
    return actions or [Action("noop")]


def _reload_reason(d: DesiredPolicy, e: dict[str, Any], o: ObservedPolicy) -> tuple[str, bool] | None:
    """Why the program must be reloaded, and whether the reason is drift."""
    m = d.manifest
    if e.get("program_hash") != m.get("program_hash"):
        return "program changed", False
    if _map_defs(e.get("manifest", {})) != _map_defs(m):
        return "map definitions changed", False
    if _att_keys(e.get("manifest", {})) != _att_keys(m):
        return "attachments changed", False
    missing = [f"program {p}" for p, pid in o.prog_ids.items() if pid is None]
    missing += [f"map {n}" for n, info in e.get("maps", {}).items() if not os.path.exists(info.get("pin", ""))]
    if missing:
        return "pins deleted: " + ", ".join(missing), True
    return None


def applied_document(state_dir: Path, key: str) -> Path:
    """Where apply keeps the policy document it applied (the base of rule-level plans
    and `plan --diff`; removed with the policy at prune)."""
    return state_dir / "applied" / key / "policy.yaml"


def doc_text(doc: Any) -> str:
    """A policy document as the YAML text kept in the state dir (stable key order)."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: ~6x faster, same text
    return "" if doc is None else yaml.dump(doc, Dumper=dumper, sort_keys=False, allow_unicode=True)


def _describe(pp: PolicyPlan, state_dir: Path) -> None:
    """Rule-level lines from the policy's kind (`Kind.describe_change`), old → new."""
    import yaml

    from ..kinds import KINDS

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # a 10k-CIDR policy: 30 ms, not 300
        pp.old_doc = yaml.load(applied_document(state_dir, pp.key).read_text(), Loader=loader)  # noqa: S506
    except (OSError, yaml.YAMLError):
        pp.old_doc = None
    pp.new_doc = pp.desired.document if pp.desired is not None else None
    kind = KINDS.get(pp.key.split("/", 1)[0])
    if kind is None or (pp.old_doc is None and pp.new_doc is None) or pp.old_doc == pp.new_doc:
        return
    if pp.old_doc is None and pp.desired is not None and pp.observed is not None and pp.observed.entry:
        return  # applied before documents were kept: nothing to compare against
    try:
        pp.rules = kind.describe_change(pp.old_doc, pp.new_doc)
    except Exception as e:  # a kind's wording must never break a plan
        pp.rules = [f"(no rule-level diff: {e})"]


def _map_defs(m: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted((x.get("name"), x.get("type"), x.get("key_size"), x.get("value_size"),
                   x.get("max_entries"), bool(x.get("percpu")), bool(x.get("contents")))
                  for x in m.get("maps", []))


def _att_keys(m: dict[str, Any]) -> list[str]:
    import json

    return [json.dumps(a, sort_keys=True) for a in m.get("attachments", [])]


def applied_copy(state_dir: Path, key: str, map_name: str) -> Path:
    """Where apply keeps a copy of the contents it last wrote into a map (the diff base
    for cheap deltas; trusted only when its sha256 matches the inventory)."""
    return state_dir / "applied" / key / f"{map_name}.bin"


def current_contents(spec: dict[str, Any], e: dict[str, Any], state_dir: Path | None,
                     deep: bool) -> bytes | None:
    """What the map holds. Shallow: the applied copy (when it matches the inventory's
    hash), else the kernel. Deep: the kernel (drift check), else the applied copy."""
    from .contents import recall

    info = e.get("maps", {}).get(spec["name"], {})
    copy = None
    if state_dir is not None and info.get("contents_sha256"):
        import hashlib

        copy = recall(state_dir, f"{e['kind']}/{e['name']}", spec["name"], info["contents_sha256"])
        if copy is not None and not deep:
            return copy  # what this process wrote, still the inventory's (contents.py)

        try:
            data = None if copy is not None else applied_copy(state_dir, f"{e['kind']}/{e['name']}",
                                                              spec["name"]).read_bytes()
            if data is not None and hashlib.sha256(data).hexdigest() == info["contents_sha256"]:
                copy = data
        except OSError:
            pass
    if copy is not None and not deep:
        return copy
    kernel = read_map(info["pin"], spec) if info.get("pin") else None
    return kernel if kernel is not None else copy


def map_deltas(d: DesiredPolicy, e: dict[str, Any], state_dir: Path | None = None,
               deep: bool = True) -> dict[str, tuple[int, int]]:
    """(+N, −M) per content map: desired .bin vs what the map holds (see current_contents).
    Shallow and unchanged (same digest) → nothing to read at all. A kind's patch made
    against exactly the contents the map holds is the delta (no diff)."""
    from .contents import patch_applies, patch_counts

    out = {}
    for spec in d.manifest.get("maps", []):
        if not spec.get("contents"):
            continue
        if not deep and e.get("digest") == d.digest:
            continue
        current = current_contents(spec, e, state_dir, deep)
        patch = d.patches.get(spec["name"])
        if spec["name"] in d.preapplied or patch_applies(patch, current):
            out[spec["name"]] = patch_counts(patch, spec)
            continue
        new = d.content(spec["contents"])
        rec = spec["key_size"] + spec["value_size"]
        if current is None:
            out[spec["name"]] = (len(new) // rec, 0)
            continue
        out[spec["name"]] = diff_counts(current, new, spec)
    return out


ARRAYS = ("array", "percpu_array")
WALK_LIMIT = 65536  # maps without batch lookup are walked per key only up to this size


def read_map(pin: str, spec: dict[str, Any]) -> bytes | None:
    """The pinned map's records, sorted by key; array maps without their all-zero slots.
    Maps without batch lookup (lpm_trie) are walked key by key (GET_NEXT_KEY)."""
    from ..kernel import bpf, maps
    from ..kernel.pins import pinned

    ks, vs, percpu = spec["key_size"], spec["value_size"], bool(spec.get("percpu"))
    try:
        with pinned(pin) as fd:
            try:
                recs = maps.read_records(fd, ks, vs, percpu)
            except OSError:
                if int(spec.get("entries") or 0) > WALK_LIMIT:
                    return None  # too big to walk key by key every interval: trust the copy
                stride = bpf.value_stride(vs, percpu)
                out = []
                for k in bpf.map_keys(fd, ks):
                    v = bpf.map_lookup(fd, k, stride)
                    if v is not None:
                        out.append(k + v[:vs])
                recs = b"".join(sorted(out))
    except OSError:
        return None
    return _drop_zero_slots(recs, spec)


def _drop_zero_slots(recs: bytes, spec: dict[str, Any]) -> bytes:
    """Array maps always hold every index: an all-zero value means "no entry"."""
    if spec.get("type") not in ARRAYS or not recs:
        return recs
    import numpy as np

    rec = spec["key_size"] + spec["value_size"]
    r = np.frombuffer(recs, dtype=np.uint8).reshape(-1, rec)
    return r[r[:, spec["key_size"]:].any(axis=1)].tobytes()


def diff_counts(current: bytes, new: bytes, spec: dict[str, Any]) -> tuple[int, int]:
    if current == new:
        return (0, 0)
    from ..kernel import maps

    current, new = _drop_zero_slots(current, spec), _drop_zero_slots(new, spec)
    if current == new:
        return (0, 0)
    upsert, removed = maps.diff_records(current, new, spec["key_size"], spec["value_size"])
    rec = spec["key_size"] + spec["value_size"]
    return (len(upsert) // rec, len(removed) // spec["key_size"])


# --------------------------------------------------------------------------- printing

_STYLE = {"create": "green", "replace": "yellow", "update-map": "cyan", "reattach": "magenta",
          "record": "blue", "prune": "red", "noop": "dim", "keep": "dim"}


def render(plan: Plan, console: Any = None, *, diff: bool = False) -> None:
    """Readable plan: one row per action, then the kind's rule-level lines
    (`Kind/name: change`); `diff` adds the unified diff of each changing policy object."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if _tty() else 160)
    table = Table(title="bpfpolicy plan", show_lines=False)
    table.add_column("policy")
    table.add_column("action")
    table.add_column("detail")
    for p in plan.policies:
        for a in p.actions:
            label = a.type + (" (drift)" if a.drift else "")
            table.add_row(p.key, f"[{_STYLE.get(a.type, '')}]{label}[/]", a.detail)
    console.print(table)
    for p in plan.policies:
        for line in p.rules:
            console.print(f"{p.doc_key()}: {line}", markup=False, highlight=False, soft_wrap=True)
        if diff and p.changes and (text := p.diff()):
            console.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    if plan.kept:
        console.print(f"{len(plan.kept)} applied policies not in PATH kept (use --prune to remove)")
    n = sum(1 for p in plan.policies if p.changes)
    console.print(f"{n} of {len(plan.policies)} policies change" if n else "no changes")
    if plan.refused:
        console.print(f"[red]{plan.refused}[/]")


def _tty() -> bool:
    """Piped output (CI logs, scripts) gets a wide table instead of rich's 80 columns."""
    import sys

    return sys.stdout.isatty()
