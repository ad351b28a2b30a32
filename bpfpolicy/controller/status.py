"""`bpfpolicy status`: per policy — revision, programs (ids, tags), attachments, per-rule
counters, condition (Ready / Reconciling / Stalled + reason), last-applied vs
last-attempted revision. Built from the inventory, status.json and a fresh observation
(so a detached program shows up here before the next cycle repairs it).

Counters: the manifest's `counters` map (layout `percpu_array_u64x2`: packets, bytes per
rule index) summed over every CPU.
"""

from __future__ import annotations

from typing import Any

from .config import HostConfig
from .observe import describe_attachment, observe
from .state import Store


def collect(cfg: HostConfig) -> dict[str, Any]:
    store = Store(cfg.state_dir)
    inv, st = store.inventory(), store.status()
    obs = observe(cfg, store)
    out: dict[str, Any] = {"source": st.get("source", {}), "suspended": cfg.suspended, "policies": []}
    for key in sorted(set(inv) | set(st["policies"]) | set(obs.policies)):
        e, s, o = inv.get(key, {}), st["policies"].get(key, {}), obs.policies.get(key)
        cond = s.get("condition") or ("Ready" if e else "Reconciling")
        reason = s.get("reason", "")
        message = s.get("message", "")
        if o and o.drift and cond == "Ready":
            cond, reason, message = "Reconciling", "DriftDetected", "; ".join(o.drift)
        row = {
            "policy": key, "condition": cond, "reason": reason, "message": message,
            "digest": e.get("digest"), "revision": e.get("revision"),
            "last_applied_revision": s.get("last_applied_revision", e.get("revision")),
            "last_attempted_revision": s.get("last_attempted_revision"),
            "applied_at": e.get("applied_at"),
            "programs": [{"name": n, "id": (o.prog_ids.get(n) if o else None) or p.get("id"), "tag": p.get("tag")}
                         for n, p in e.get("programs", {}).items()],
            "attachments": [{"attachment": describe_attachment(a), "program": a.get("program"),
                             "prog_id": a.get("prog_id"),
                             "attached": bool(o and a.get("prog_id") in o.attached.get(int(a["index"]), []))}
                            for a in e.get("attachments", [])],
            "counters": counters(e),
            "install_dir": e.get("install_dir"),
        }
        if s.get("log"):
            row["log"] = s["log"]
        if s.get("last_drift"):
            row["last_drift"] = s["last_drift"]
        out["policies"].append(row)
    return out


def counters(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-rule packets/bytes from the manifest's counters map (summed over CPUs)."""
    spec = (entry.get("manifest") or {}).get("counters")
    if not spec or spec.get("layout", "percpu_array_u64x2") != "percpu_array_u64x2":
        return []
    pin = entry.get("maps", {}).get(spec.get("map"), {}).get("pin")
    rules = spec.get("rules", [])
    if not pin or not rules:
        return []
    from ..kernel import maps
    from ..kernel.pins import pinned

    try:
        with pinned(pin) as fd:
            values = maps.read_counters(fd, max(int(r["index"]) for r in rules) + 1)
    except OSError:
        return []
    return [{"rule": r.get("name"), "path": r.get("path"), "action": r.get("action"),
             "packets": values[int(r["index"])][0], "bytes": values[int(r["index"])][1]} for r in rules]


def render(data: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if _tty() else 160)
    src = data.get("source", {})
    console.print(f"source: {src.get('condition', 'Unknown')} {src.get('reason', '')}  "
                  f"last applied {src.get('last_applied_revision', '-')}  "
                  f"last attempted {src.get('last_attempted_revision', '-')}"
                  + ("  [yellow]SUSPENDED[/]" if data.get("suspended") else ""))
    if src.get("message"):
        console.print(f"  {src['message']}")
    t = Table(title="bpfpolicy status")
    for col in ("policy", "condition", "revision", "programs", "attachments", "counters"):
        t.add_column(col)
    color = {"Ready": "green", "Stalled": "red", "Reconciling": "yellow"}
    for p in data["policies"]:
        cond = f"[{color.get(p['condition'], '')}]{p['condition']}[/]"
        if p["reason"]:
            cond += f"\n{p['reason']}"
        if p["message"]:
            cond += f"\n{p['message'][:200]}"
        progs = "\n".join(f"{x['name']} id {x['id']} tag {x['tag']}" for x in p["programs"]) or (p.get("install_dir") or "")
        atts = "\n".join(f"{a['attachment']} {'✓' if a['attached'] else '✗ detached'}" for a in p["attachments"])
        ctr = "\n".join(f"{c['rule']}: {c['packets']} pkts {c['bytes']} B" for c in p["counters"])
        rev = f"{p.get('last_applied_revision') or '-'}"
        if p.get("last_attempted_revision") and p["last_attempted_revision"] != p.get("last_applied_revision"):
            rev += f"\n(attempted {p['last_attempted_revision']})"
        t.add_row(p["policy"], cond, rev, progs, atts, ctr)
    console.print(t)


def _tty() -> bool:
    """Piped output (CI logs, scripts) gets a wide table instead of rich's 80 columns."""
    import sys

    return sys.stdout.isatty()
