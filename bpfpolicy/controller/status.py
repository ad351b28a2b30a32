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


def all_ready(data: dict[str, Any]) -> bool:
    """`status` exits 0 only when this holds (like a `flux` check): every policy Ready.
    The source's own condition is shown, but a Stalled source leaves the previous
    revision's policies enforcing and Ready."""
    return all(p.get("condition") == "Ready" and p.get("reason") != "DriftDetected"  # self-heal off
               for p in data.get("policies", []))


def _short_rev(rev: str | None) -> str:
    """`dir@sha256:0123456789abcdef` → `dir@0123456789ab`: enough to tell revisions apart
    in 80 columns; `-o wide` and `--format json` keep the whole string."""
    if not rev:
        return "-"
    head, _, digest = rev.partition("@")
    digest = digest.split(":", 1)[-1]
    return f"{head}@{digest[:12]}" if digest else rev[:20]


def render(data: dict[str, Any], console: Any = None, *, wide: bool = False, name: str | None = None) -> None:
    """Narrow by default (fits 80 columns, policy names whole: NAME, READY, REASON,
    REVISION, PACKETS); `wide=True` or one policy `name` shows programs, attachments,
    per-rule counters and messages."""
    from rich.console import Console

    console = console or Console()
    src = data.get("source", {})
    console.print(f"source: {src.get('condition', 'Unknown')} {src.get('reason', '')}  "
                  f"applied {_short_rev(src.get('last_applied_revision'))}"
                  + ("  [yellow]SUSPENDED[/]" if data.get("suspended") else ""), overflow="fold")
    if src.get("message"):
        console.print(f"  {src['message']}", overflow="fold")
    rows = [p for p in data["policies"] if name in (None, p["policy"], p["policy"].split("/", 1)[-1])]
    if name is not None and not rows:
        console.print(f"no policy {name}")
        return
    if name:
        for p in rows:
            _detail(p, console)
    elif wide:
        console.print(_wide(rows))
    elif max((len(p["policy"]) for p in rows), default=0) + NARROW_REST > console.width:
        _stacked(rows, console)  # names too long for one row: the name alone, details below
    else:
        console.print(_narrow(rows))


# READY + REASON + REVISION + PACKETS with their gaps in the narrow table (measured):
# a name longer than the terminal width minus this goes on its own line.
NARROW_REST = 58


def _cells(p: dict[str, Any]) -> list[str]:
    ready = "True" if p["condition"] == "Ready" else "False"
    pkts = sum(int(c.get("packets") or 0) for c in p.get("counters", []))
    return [f"[{_COLOR.get(p['condition'], '')}]{ready}[/]", p.get("reason") or p["condition"],
            _short_rev(p.get("last_applied_revision")), str(pkts) if p.get("counters") else "-"]


def _detail(p: dict[str, Any], console: Any) -> None:
    """`status NAME`: one policy as `field: value` lines (folded, never cut)."""
    out = [("policy", p["policy"]), ("condition", f"{p['condition']} {p.get('reason') or ''}".strip()),
           ("message", p.get("message") or ""), ("revision", p.get("last_applied_revision") or "-")]
    if p.get("last_attempted_revision") and p["last_attempted_revision"] != p.get("last_applied_revision"):
        out.append(("attempted", p["last_attempted_revision"]))
    out += [("program", f"{x['name']} id {x['id']} tag {x['tag']}") for x in p.get("programs", [])]
    out += [("attachment", f"{a['attachment']} {'attached' if a['attached'] else 'DETACHED'}")
            for a in p.get("attachments", [])]
    out += [("counter", f"{c['rule']}: {c['packets']} pkts {c['bytes']} B") for c in p.get("counters", [])]
    for k, v in out:
        if v:
            console.print(f"{k + ':':<12}{v}", overflow="fold", markup=False, highlight=False)


def _stacked(rows: list[dict[str, Any]], console: Any) -> None:
    for p in rows:
        console.print(p["policy"], overflow="fold", markup=False, highlight=False)
        ready, reason, rev, pkts = _cells(p)
        console.print(f"  ready {ready}  {reason}  {rev}  packets {pkts}", overflow="fold")


_COLOR = {"Ready": "green", "Stalled": "red", "Reconciling": "yellow"}


def _narrow(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    t = Table(box=None, pad_edge=False)
    t.add_column("NAME", no_wrap=True)  # never cut: names are what an operator types next
    t.add_column("READY", no_wrap=True)
    t.add_column("REASON", no_wrap=True)
    t.add_column("REVISION", no_wrap=True)
    t.add_column("PACKETS", justify="right", no_wrap=True)
    for p in rows:
        t.add_row(p["policy"], *_cells(p))
    return t


def _wide(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    t = Table(title="bpfpolicy status")
    for col in ("policy", "condition", "revision", "programs", "attachments", "counters"):
        t.add_column(col, overflow="fold")
    for p in rows:
        cond = f"[{_COLOR.get(p['condition'], '')}]{p['condition']}[/]"
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
    return t
