"""Prometheus metrics (prometheus-client), served by `bpfpolicy watch` on the configured
`metricsAddress`. Names follow the Flux/Argo convention of a controller prefix:

* bpfpolicy_reconcile_total{result}          — cycles by result (success|failure|noop|suspended)
* bpfpolicy_reconcile_duration_seconds       — histogram of cycle durations
* bpfpolicy_apply_total{action,result}       — per-policy actions applied
* bpfpolicy_policies{condition}              — policies by condition (Ready|Stalled|...)
* bpfpolicy_map_entries{policy,map}          — records in each content map (desired)
* bpfpolicy_drift_repairs_total              — drift detected and repaired
* bpfpolicy_rule_packets_total/_bytes_total{kind,policy,rule} — per-rule counters, read
  from the pinned maps at scrape time (ScrapeCollector), never stale
* bpfpolicy_policy_condition{kind,policy,type,status} — 1 for each policy's current
  condition status (Flux's gotk_reconcile_condition shape: True/False/Unknown series)
* bpfpolicy_source_stalled{reason}           — 1 while the source is Stalled for that reason
* bpfpolicy_cycle_errors_total{reason}       — cycles refused (BuildFailed, UntrustedRevision, ...)
* bpfpolicy_applied_revision_info{revision}  — 1 for the revision the last converged cycle applied
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REGISTRY = CollectorRegistry()
RECONCILES = Counter("bpfpolicy_reconcile", "Reconcile cycles", ["result"], registry=REGISTRY)
DURATION = Histogram("bpfpolicy_reconcile_duration_seconds", "Reconcile cycle duration",
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                     registry=REGISTRY)
APPLIES = Counter("bpfpolicy_apply", "Per-policy actions applied", ["action", "result"], registry=REGISTRY)
POLICIES = Gauge("bpfpolicy_policies", "Policies by condition", ["condition"], registry=REGISTRY)
MAP_ENTRIES = Gauge("bpfpolicy_map_entries", "Entries in content maps", ["policy", "map"], registry=REGISTRY)
DRIFT = Counter("bpfpolicy_drift_repairs", "Drift detected and repaired", registry=REGISTRY)
SOURCE_STALLED = Gauge("bpfpolicy_source_stalled", "1 while the source is Stalled (by reason)", ["reason"],
                       registry=REGISTRY)
CYCLE_ERRORS = Counter("bpfpolicy_cycle_errors", "Cycles that refused a revision, by reason", ["reason"],
                       registry=REGISTRY)
_STALLED_REASONS: set[str] = set()
APPLIED_REVISION = Gauge("bpfpolicy_applied_revision_info",
                         "1 for the source revision the last converged cycle applied (a fleet view)",
                         ["revision"], registry=REGISTRY)


class ScrapeCollector:
    """Series read at scrape time from the state dir and the pinned counter maps: a rule's
    packets are what the kernel counted now, and a pruned policy's series vanish with it
    (no stale label sets to forget)."""

    def __init__(self) -> None:
        self.state_dir: Path | None = None  # set by the first cycle (observe_cycle)

    def collect(self) -> Iterator[Any]:
        packets = CounterMetricFamily("bpfpolicy_rule_packets", "Packets matched per policy rule (summed over CPUs)",
                                      labels=["kind", "policy", "rule"])
        nbytes = CounterMetricFamily("bpfpolicy_rule_bytes", "Bytes matched per policy rule (summed over CPUs)",
                                     labels=["kind", "policy", "rule"])
        cond = GaugeMetricFamily("bpfpolicy_policy_condition", "1 for the current status of each policy condition",
                                 labels=["kind", "policy", "type", "status"])
        if self.state_dir is not None:
            self._fill(packets, nbytes, cond)
        yield from (packets, nbytes, cond)

    def _fill(self, packets: Any, nbytes: Any, cond: Any) -> None:
        from .state import Store
        from .status import counters

        store = Store(self.state_dir)  # type: ignore[arg-type]
        for key, entry in store.inventory().items():
            kind = key.split("/", 1)[0]
            for c in counters(entry):
                packets.add_metric([kind, key, str(c["rule"])], c["packets"])
                nbytes.add_metric([kind, key, str(c["rule"])], c["bytes"])
        for key, st in store.status().get("policies", {}).items():
            ready = {"Ready": "True", "Stalled": "False"}.get(st.get("condition"), "Unknown")
            for status in ("True", "False", "Unknown"):
                cond.add_metric([key.split("/", 1)[0], key, "Ready", status], 1.0 if status == ready else 0.0)


SCRAPE = ScrapeCollector()
REGISTRY.register(SCRAPE)  # type: ignore[arg-type]
DEFAULT_HOST = "127.0.0.1"  # metrics name policies and rules: loopback unless an address is given


def serve(address: str) -> None:
    """Start the /metrics HTTP server in a daemon thread ("host:port"; ":port" binds
    loopback)."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or DEFAULT_HOST, registry=REGISTRY)


def observe_cycle(cfg: Any, res: Any) -> None:
    DURATION.observe(res.seconds)
    if res.skipped:
        RECONCILES.labels("suspended").inc()
    elif not res.ok:
        RECONCILES.labels("failure").inc()
    elif res.changed:
        RECONCILES.labels("success").inc()
    else:
        RECONCILES.labels("noop").inc()
    if res.error and getattr(res, "reason", None):
        CYCLE_ERRORS.labels(res.reason).inc()
    _source_condition(cfg, res)
    if res.ok and not res.skipped and res.revision:  # one series: the revision enforced now
        APPLIED_REVISION.clear()
        APPLIED_REVISION.labels(res.revision).set(1)
    if res.applied:
        for o in res.applied.outcomes:
            APPLIES.labels(o.action, "success" if o.ok else "failure").inc()
            if o.ok and o.drift:
                DRIFT.inc()
    SCRAPE.state_dir = cfg.state_dir
    if res.plan is not None:
        counts: dict[str, int] = {"Ready": 0, "Stalled": 0}
        from .state import Store

        for st in Store(cfg.state_dir).status()["policies"].values():
            counts[st.get("condition", "Unknown")] = counts.get(st.get("condition", "Unknown"), 0) + 1
        for cond, n in counts.items():
            POLICIES.labels(cond).set(n)
        for pp in res.plan.policies:
            if pp.desired is None:
                continue
            for spec in pp.desired.manifest.get("maps", []):
                if spec.get("contents") and "entries" in spec:
                    MAP_ENTRIES.labels(pp.key, spec["name"]).set(spec["entries"])


def _source_condition(cfg: Any, res: Any) -> None:
    """The source's condition as status.json has it after this cycle."""
    from .state import Store

    if res.skipped:
        return
    src = Store(cfg.state_dir).status().get("source", {})
    stalled = src.get("reason") if src.get("condition") == "Stalled" else None
    for reason in _STALLED_REASONS | ({stalled} if stalled else set()):
        SOURCE_STALLED.labels(reason).set(1 if reason == stalled else 0)
    if stalled:
        _STALLED_REASONS.add(stalled)
