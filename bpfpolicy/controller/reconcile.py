"""One reconcile cycle, shared by `apply` (once) and `watch` (forever):

    lock → source snapshot → desired (compile) → observe → plan → apply → status + events

Build failures apply nothing (a tree is accepted or rejected as a whole, like a Flux
Kustomization) and mark the source Stalled/BuildFailed; a policy that fails to apply
keeps its previous version enforcing and is marked Stalled with the reason (verifier
log included) while the others converge.

Every cycle is guarded: any exception from fetching, walking, loading, compiling,
planning or applying a revision — foreseen or not — ends that cycle only. The source is
marked Stalled (BuildFailed before anything was applied, ApplyFailed after; the source's
own reason for fetch/tree/signature problems) with a one-line message naming the file
when one can be found; the traceback goes to the `bpfpolicy.controller` logger at debug
level. Nothing of the revision is applied, so the previous enforcement stays.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import events
from .apply import ApplyResult, apply_plan, gc_installed, gc_staging
from .config import HostConfig
from .contents import early_patches
from .desired import DesiredState, build, gc_artifacts, lap
from .observe import observe
from .plan import Plan, make_plan
from .source import Snapshot, SourceError, snapshot
from .state import Store, gc_temporaries, push_history

log = logging.getLogger("bpfpolicy.controller")


@contextlib.contextmanager
def _kind_notes(notes: list[str]) -> Iterator[None]:
    """Kinds log why a compile took its slow path (`bpfpolicy.kinds.*` at INFO, e.g. an
    incremental lowering falling back to a full one); during a build those lines become
    the cycle's notes, which `watch` prints. A first lowering is not news."""
    logger = logging.getLogger("bpfpolicy.kinds")

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if "first lowering" not in msg:
                notes.append(msg)

    handler, level = Capture(logging.INFO), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def one_line(e: BaseException) -> str:
    """`Type: first line of the message`, never a traceback."""
    text = " ".join(str(e).split())
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class CycleResult:
    revision: str | None = None
    plan: Plan | None = None
    applied: ApplyResult | None = None
    diagnostics: list[Any] = field(default_factory=list)
    error: str | None = None  # source / build / refused
    seconds: float = 0.0
    skipped: str | None = None  # "suspended"
    deep: bool = True
    reason: str | None = None  # the source's Stalled reason when error is set
    timings: dict[str, float] = field(default_factory=dict)  # ms per phase (watch logs them)
    notes: list[str] = field(default_factory=list)  # why a change took the slow path

    @property
    def ok(self) -> bool:
        return self.error is None and (self.applied is None or self.applied.ok)

    @property
    def changed(self) -> bool:
        return bool(self.applied and self.applied.outcomes)


class Reconciler:
    """Holds what survives between cycles in one process: the compile memo."""

    def __init__(self, cfg: HostConfig, paths: list[Path] | None = None, *,
                 allow_empty: bool = False, progress: Any = None, prebuilt: bool = False,
                 prune: bool = True) -> None:
        self.cfg = cfg
        self.prebuilt = prebuilt  # `paths` are operator-vouched artifact trees (desired.build)
        self.paths = paths
        self.allow_empty = allow_empty
        self.prune = prune  # False: `apply PATH` without --prune keeps policies outside PATH
        self.progress = progress
        self.store = Store(cfg.state_dir)
        self._memo: tuple[str, DesiredState] | None = None
        from ..policy.validate import ValidationMemo

        self._validation = ValidationMemo()
        self._started = False
        self._snap: Snapshot | None = None

    def desired(self, snap: Snapshot, res: CycleResult | None = None, *, early: bool = False) -> DesiredState:
        """Compile unless the source fingerprint is unchanged since the last cycle.
        `early`: a kind's map patches may go into the kernel as soon as the whole tree
        compiled (contents.early_patches), before digests and artifact files."""
        if self._memo and self._memo[0] == snap.revision:
            return self._memo[1]
        timings = res.timings if res is not None else None
        hook = None
        if early and res is not None:
            def hook(artifacts: list[Any]) -> dict[str, set[str]]:
                done, notes = early_patches(self.cfg.state_dir, self.store.inventory(),
                                            self.store.status()["policies"], artifacts)
                res.notes.extend(notes)
                return done
        # file-triggered cycles reuse the validation of unchanged self-contained files;
        # deep ones (startup, interval, SIGHUP) validate everything again
        memo = self._validation if res is not None and not res.deep else None
        with _kind_notes(res.notes if res is not None else []):
            state = build(snap.paths, self.cfg.state_dir / "artifacts", self.compile_context(),
                          prebuilt=self.prebuilt, early=hook, timings=timings, memo=memo)
        if state.ok:
            self._memo = (snap.revision, state)
        return state

    def compile_context(self) -> Any:
        """The endpoint inventory from the host config goes to kinds that select
        local workloads (endpoints) as `options["inventory"]`. `defer_files`: a kind may
        leave files to `Artifact.materialize()` (desired.build does it once the early
        patches are in the kernel)."""
        from ..kinds import CompileContext

        options: dict[str, Any] = {"defer_files": True}
        if self.cfg.endpoints_raw is not None:
            options["inventory"] = self.cfg.endpoints_raw
        return CompileContext(options=options)

    def startup(self) -> None:
        """Once per process, under the lock: clear what a killed run left behind."""
        if self._started:
            return
        self._started = True
        for what in gc_staging(self.cfg) + gc_temporaries(self.cfg.state_dir):
            events.emit(self.cfg.events_path, "GarbageCollected", f"removed leftover {what}")
        gc_installed(self.cfg)

    def cycle(self, *, dry_run: bool = False, heal: bool | None = None, deep: bool = True,
              retry_failed: bool = True) -> CycleResult:
        """One reconcile. `deep=False` (file-triggered) trusts the inventory for unchanged
        policies; deep cycles (startup, interval, `apply`) check the kernel for drift."""
        t0 = time.perf_counter()
        res = CycleResult(deep=deep)
        with self.store.lock():
            phase = ["startup"]
            try:
                self._cycle(res, phase, dry_run=dry_run, heal=heal, deep=deep, retry_failed=retry_failed)
            except Exception as e:  # the cycle boundary: never let input kill the controller
                log.debug("cycle failed in %s phase of %s", phase[0], res.revision, exc_info=True)
                reason = "ApplyFailed" if phase[0] in ("apply", "record") else "BuildFailed"
                res.error = self._describe(e, phase[0], res)
                res.reason = reason
                res.plan = res.plan if phase[0] in ("apply", "record") else None
                if not dry_run:
                    try:
                        self._source_status(res.revision, "Stalled", reason, res.error)
                    except Exception:  # status itself unwritable: the log line still says why
                        log.debug("cannot record status", exc_info=True)
        return self._done(res, t0)

    def _cycle(self, res: CycleResult, phase: list[str], *, dry_run: bool, heal: bool | None, deep: bool,
               retry_failed: bool) -> None:
        if not dry_run:
            self.startup()
        phase[0] = "source"
        t = time.perf_counter()
        try:
            snap = snapshot(self.cfg, self.paths)
        except SourceError as e:
            res.error, res.reason, res.revision = str(e), e.reason, e.revision
            if not dry_run:
                self._source_status(e.revision, "Stalled", e.reason, str(e))
            return
        res.revision = snap.revision
        self._snap = snap
        t = lap(res.timings, "source", t)
        phase[0] = "build"
        # file-triggered cycles may write a kind's patches early (deep ones check drift first)
        early = not (dry_run or deep or self.cfg.suspended or self.prebuilt)
        desired = self.desired(snap, res, early=early)
        t = time.perf_counter()
        res.diagnostics = desired.diagnostics
        if not desired.ok:
            res.error = "build failed:\n" + "\n".join(str(x) for x in desired.diagnostics
                                                      if getattr(x, "severity", "error") == "error")
            res.reason = "BuildFailed"
            if not dry_run:
                errs = [str(x) for x in desired.diagnostics if getattr(x, "severity", "error") == "error"]
                more = f"; … {len(errs) - 10} more" if len(errs) > 10 else ""
                self._source_status(snap.revision, "Stalled", "BuildFailed",
                                    "build failed: " + "; ".join(" ".join(e.split()) for e in errs[:10]) + more)
            return
        phase[0] = "plan"
        res.plan = make_plan(self.cfg, desired, observe(self.cfg, self.store, deep=deep),
                             allow_empty=self.allow_empty, deep=deep, prune=self.prune)
        t = lap(res.timings, "plan", t)
        if dry_run:
            return
        if not retry_failed:
            self._hold_stalled(res.plan)
        if res.plan.refused:
            res.error, res.reason = res.plan.refused, "PruneFailed"
            self._source_status(snap.revision, "Stalled", "PruneFailed", res.plan.refused)
            return
        if self.cfg.suspended:
            res.skipped = "suspended"
            self._source_status(snap.revision, "Ready", "Suspended", "reconciliation suspended")
            return
        phase[0] = "apply"
        self._mark_reconciling(res.plan, snap.revision)
        try:
            res.applied = apply_plan(self.cfg, res.plan, self.store, revision=snap.revision,
                                     progress=self.progress, heal=heal)
        finally:
            for d in desired.policies.values():  # a patch is against one base, used once
                d.patches, d.preapplied = {}, set()
        t = lap(res.timings, "apply", t)
        phase[0] = "record"
        self._record(res, snap.revision, desired)
        gc_artifacts(self.cfg.state_dir / "artifacts", set(desired.policies) | res.plan.kept)
        lap(res.timings, "record", t)

    def _describe(self, e: Exception, phase: str, res: CycleResult) -> str:
        """A one-line message for an unforeseen exception, naming the policy file that
        raises it when loading the snapshot's files one by one finds it."""
        what = f"{phase} of {res.revision}" if res.revision else phase
        if phase == "build":
            culprit = self._culprit()
            if culprit:
                return f"{culprit[0]}: cannot be loaded: {culprit[1]}"
        return f"internal error during {what}: {one_line(e)}"

    def _culprit(self) -> tuple[str, str] | None:
        from ..policy.load import LoadError, load_file

        snap = getattr(self, "_snap", None)
        for f in (snap.files if snap else []):
            try:
                load_file(f)
            except LoadError:
                continue
            except Exception as e:  # noqa: BLE001 — this is the search for the one that raises
                return str(f), one_line(e)
        return None

    def _done(self, res: CycleResult, t0: float) -> CycleResult:
        res.seconds = time.perf_counter() - t0
        try:
            from . import metrics

            metrics.observe_cycle(self.cfg, res)
        except Exception:  # metrics must never break reconciliation
            pass
        return res

    # -- status + events -----------------------------------------------------
    def _record(self, res: CycleResult, revision: str, desired: DesiredState) -> None:
        assert res.applied is not None and res.plan is not None
        status = self.store.status()
        # compare against what is on disk now (a Stalled/BuildFailed written by an earlier
        # cycle must be cleared by a fixed revision even when nothing is applied)
        before = json.loads(json.dumps(status))
        before["source"].pop("last_reconcile", None)
        status["source"].pop("last_reconcile", None)
        pols = status["policies"]
        failed = {o.key: o for o in res.applied.outcomes if not o.ok}
        done = {o.key: o for o in res.applied.outcomes if o.ok}
        ev = self.cfg.events_path
        for o in res.applied.outcomes:
            if o.ok:
                reason = {"prune": "Pruned", "reattach": "DriftRepaired"}.get(o.action, "Applied")
                if o.drift and reason == "Applied":
                    reason = "DriftRepaired"
                events.emit(ev, reason, f"{o.action}: {o.message}".rstrip(": "), policy=o.key,
                            revision=revision, seconds=round(o.seconds, 6))
            else:
                events.emit(ev, o.reason or "ApplyFailed", o.message, policy=o.key, type_="Warning",
                            revision=revision, log=o.log[-4000:] if o.log else None)
        for key in list(pols):
            if key not in desired.policies and key not in res.plan.kept:
                pols.pop(key)
        heal_off = not self.cfg.self_heal
        for pp in res.plan.policies:
            if pp.desired is None:
                continue
            st = pols.setdefault(pp.key, {})
            st["last_attempted_revision"] = revision
            if pp.key in failed:
                o = failed[pp.key]
                st.update(condition="Stalled", reason=o.reason or "ApplyFailed", message=o.message,
                          log=o.log[-8000:] if o.log else None, failed_digest=pp.desired.digest)
            else:
                drift_left = heal_off and any(a.drift for a in pp.actions)
                if (st.get("condition") == "Stalled" and st.get("failed_digest") == pp.desired.digest
                        and not pp.changes):
                    continue  # held (see _hold_stalled): keep the failure visible
                st.pop("failed_digest", None)
                st.update(condition="Ready", reason="DriftDetected" if drift_left else "Applied",
                          message="; ".join(a.detail for a in pp.actions if a.drift) if drift_left else "",
                          log=None)
                if pp.key in done or st.get("last_applied_revision") is None:
                    st["last_applied_revision"] = revision
                if pp.key in done and any(a.drift for a in pp.actions):
                    st["last_drift"] = {"time": events.now_iso(),
                                        "detail": "; ".join(a.detail for a in pp.actions if a.drift)}
            if pp.key in done or pp.key in failed or "updated" not in st:
                st["updated"] = events.now_iso()
        src = status["source"]
        src["last_attempted_revision"] = revision
        stalled = sorted(k for k, st in pols.items() if st.get("condition") == "Stalled")
        if not stalled:
            src["last_applied_revision"] = revision
            push_history(src, revision)
            src.update(condition="Ready", reason="ReconciliationSucceeded", message="")
        else:
            src.update(condition="Stalled", reason="ApplyFailed",
                       message=f"{len(stalled)} policies failed: {', '.join(stalled)}")
        if status != before or res.applied.outcomes:
            if src.get("condition") == "Ready" and before["source"].get("condition") == "Stalled":
                events.emit(ev, "Recovered", f"{revision} reconciled; was {before['source'].get('reason')}",
                            revision=revision)
            src["last_reconcile"] = events.now_iso()
            self.store.save_status(status)

    def _hold_stalled(self, plan: Plan) -> None:
        """Like Flux: a policy Stalled at a digest is not retried every cycle (no event
        storm, no verifier run per interval) until its digest changes, drift is found,
        or the operator asks (SIGHUP, `bpfpolicy apply`)."""
        from .plan import Action

        pols = self.store.status()["policies"]
        for pp in plan.policies:
            st = pols.get(pp.key, {})
            if (pp.desired is not None and st.get("condition") == "Stalled"
                    and st.get("failed_digest") == pp.desired.digest
                    and not any(a.drift for a in pp.actions)):
                pp.actions = [Action("noop", f"stalled at digest {pp.desired.digest[:12]}: {st.get('reason')}")]

    def _mark_reconciling(self, plan: Plan, revision: str) -> None:
        """Policies about to change show `Reconciling` while apply runs (status is read
        by other processes: `bpfpolicy status` during a long apply)."""
        changing = [p.key for p in plan.policies if p.changes and p.desired is not None]
        if not changing:
            return
        status = self.store.status()
        for key in changing:
            st = status["policies"].setdefault(key, {})
            st.update(condition="Reconciling", reason="Progressing", message=f"applying {revision}")
        self.store.save_status(status)

    def _source_status(self, revision: str | None, condition: str, reason: str, message: str) -> None:
        status = self.store.status()
        src = status["source"]
        if revision:
            src["last_attempted_revision"] = revision
        src.update(condition=condition, reason=reason, message=message, last_reconcile=events.now_iso())
        self.store.save_status(status)
        if condition == "Stalled":
            events.emit(self.cfg.events_path, reason, message, type_="Warning", revision=revision)
