"""Controller commands: plan, apply, watch, status, destroy, events, suspend, resume.

Exit codes follow Flux/Argo diff: `plan` 0 = no changes, 1 = changes, 2 = error;
`apply` 0 = converged, 1 = some policy failed (previous enforcement kept), 2 = error
before anything was applied (bad config, build failure, refused prune).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..policy.diagnostics import PolicyError
from .validate import STRICT_BACKEND_HELP, promote_backend_changes

_config_opt = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                           help="Host config (default /etc/bpfpolicy/config.yaml).")


def _cfg(config_path: str | None):  # noqa: ANN202
    from ..controller.config import load_config

    try:
        return load_config(config_path)
    except PolicyError as e:
        click.echo(str(e), err=True)
        sys.exit(2)


def _paths(paths: tuple[str, ...]) -> list[Path] | None:
    return [Path(p) for p in paths] or None


_prebuilt_opt = click.option(
    "--prebuilt", "prebuilt", multiple=True, type=click.Path(file_okay=False),
    help="Use hand-built artifact trees (manifest.json + objects) instead of policies. "
         "Unverified: you vouch for them. Names and paths stay confined to the state dir "
         "and bpffs root. A policy source never yields artifacts.")


_prune_opt = click.option(
    "--prune", is_flag=True,
    help="Remove applied policies that PATH does not hold (implied when PATH is the configured "
         "source or no PATH is given). Without it they are kept and listed, like kubectl apply.")


def _should_prune(cfg, paths: tuple[str, ...], prune: bool) -> bool:  # noqa: ANN001
    """GitOps: only the whole truth prunes — `--prune`, no PATH (the configured source), or
    a PATH that is the configured source directory however it is spelled."""
    if prune or not paths:
        return True
    src = cfg.source_dir
    return src is not None and len(paths) == 1 and Path(paths[0]).resolve() == Path(src).resolve()


def _desired(paths: tuple[str, ...], prebuilt: tuple[str, ...]) -> tuple[list[Path] | None, bool]:
    """(paths, prebuilt?) for the Reconciler; PATH and --prebuilt don't mix (usage error)."""
    if prebuilt and paths:
        raise click.UsageError("pass either PATH… (policies) or --prebuilt DIR (artifact trees), not both")
    if prebuilt:
        return [Path(p) for p in prebuilt], True
    return _paths(paths), False


@click.command("plan")
@click.argument("paths", nargs=-1, type=click.Path())
@_config_opt
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("-o", "--output", "output", type=click.Choice(["text", "json"]),
              help="json: the plan with digests and program hashes (as --format json).")
@click.option("--diff", "show_diff", is_flag=True, help="Also print a unified diff of each changing policy object.")
@click.option("--allow-empty", is_flag=True, help="Allow a plan that prunes every policy.")
@_prune_opt
@_prebuilt_opt
@click.option("--strict-backend", is_flag=True, help=STRICT_BACKEND_HELP)
def plan_cmd(paths: tuple[str, ...], config_path: str | None, fmt: str, output: str | None, show_diff: bool,
             allow_empty: bool, prune: bool, prebuilt: tuple[str, ...], strict_backend: bool) -> None:
    """Show what apply would do: actions, the kinds' rule-level changes (and with --diff
    the policy objects' unified diff), and per hook where it runs on this kernel (the
    notes and backend-change warnings `compile` prints). Exit 0 no changes, 1 changes,
    2 error (with --strict-backend, also a hook that runs on another backend than it asks)."""
    from ..controller.plan import render
    from ..controller.reconcile import Reconciler

    cfg = _cfg(config_path)
    fmt = output or fmt
    want, is_prebuilt = _desired(paths, prebuilt)
    try:
        res = Reconciler(cfg, want, allow_empty=allow_empty, prebuilt=is_prebuilt,
                         prune=_should_prune(cfg, paths, prune) or is_prebuilt).cycle(dry_run=True)
    except OSError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    notes = _build_notes(res.diagnostics, strict_backend)
    strict = sum(d.severity == "error" for d in notes)
    if res.error or res.plan is None or strict:
        _emit_notes(notes)
        click.echo(res.error or (f"refused: {strict} hook(s) run on another backend than they ask "
                                 "for (--strict-backend)" if strict else "no plan"), err=True)
        sys.exit(2)
    if fmt == "json":
        click.echo(json.dumps({"revision": res.revision, **res.plan.as_dict(),
                               "diagnostics": [d.as_dict() for d in notes]}, indent=2))
    else:
        _emit_notes(notes)
        render(res.plan, diff=show_diff)
    if res.plan.refused:
        sys.exit(2)
    sys.exit(1 if res.plan.changes else 0)


def _build_notes(diags: list, strict_backend: bool) -> list:  # noqa: ANN001
    """The compile's notes and warnings (per hook: the backend the kernel gets, and a
    `backend change:` warning when that is not what the policy asked for), as `compile`
    prints them; errors are reported through the plan's build failure instead."""
    from ..policy.diagnostics import Diagnostic

    own = [d for d in diags if isinstance(d, Diagnostic) and d.severity != "error"]
    return promote_backend_changes(own, strict_backend)


def _emit_notes(notes: list) -> None:  # noqa: ANN001
    from . import render as out

    out.emit_text(notes)


@click.command("apply")
@click.argument("paths", nargs=-1, type=click.Path())
@_config_opt
@click.option("--allow-empty", is_flag=True, help="Allow pruning every policy.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@_prune_opt
@_prebuilt_opt
def apply_cmd(paths: tuple[str, ...], config_path: str | None, allow_empty: bool, fmt: str,
              prune: bool, prebuilt: tuple[str, ...]) -> None:
    """Converge once: load, fill, swap atomically; prune with --prune (or the configured
    source). Non-zero exit on failure."""
    from rich.console import Console

    from ..controller.reconcile import Reconciler

    cfg = _cfg(config_path)
    want, is_prebuilt = _desired(paths, prebuilt)
    console = Console(stderr=fmt == "json")
    status = console.status("reconciling…")
    status.start()

    def progress(key: str, action: str) -> None:
        status.update(f"{action} {key}…")

    try:
        res = Reconciler(cfg, want, allow_empty=allow_empty, progress=progress, prebuilt=is_prebuilt,
                         prune=_should_prune(cfg, paths, prune) or is_prebuilt).cycle()
    finally:
        status.stop()
    if fmt == "json":
        click.echo(json.dumps(_result_json(res), indent=2))
    else:
        _print_result(console, res)
    if res.error:
        sys.exit(2)
    sys.exit(0 if res.ok else 1)


def _result_json(res) -> dict:  # noqa: ANN001
    outs = res.applied.outcomes if res.applied else []
    return {"revision": res.revision, "ok": res.ok, "error": res.error, "skipped": res.skipped,
            "seconds": res.seconds,
            "outcomes": [{"policy": o.key, "action": o.action, "ok": o.ok, "message": o.message,
                          "reason": o.reason, "drift": o.drift, "seconds": o.seconds} for o in outs],
            "kept": sorted(res.plan.kept) if res.plan is not None else []}


def _print_result(console, res) -> None:  # noqa: ANN001
    if res.error:
        console.print(f"[red]error:[/] {res.error}")
        return
    if res.skipped:
        console.print(f"[yellow]skipped:[/] {res.skipped}")
        return
    outs = res.applied.outcomes if res.applied else []
    for o in outs:
        mark = "[green]✓[/]" if o.ok else "[red]✗[/]"
        console.print(f"{mark} {o.key}: {o.action}{' (drift)' if o.drift else ''} {o.message}"
                      f" [dim]{o.seconds * 1000:.1f} ms[/]")
        if not o.ok and o.log:
            console.print(o.log[-3000:], markup=False, highlight=False)
    if not outs:
        console.print("no changes")
    kept = sorted(res.plan.kept) if res.plan is not None else []
    for key in kept:
        console.print(f"[dim]- {key}: not in PATH (use --prune to remove)[/]")
    console.print(f"revision {res.revision}: {'converged' if res.ok else 'FAILED'} in {res.seconds * 1000:.1f} ms")


@click.command("watch")
@click.argument("paths", nargs=-1, type=click.Path())
@_config_opt
def watch_cmd(paths: tuple[str, ...], config_path: str | None) -> None:
    """Run the controller: file watch + interval + git poll, debounced; SIGHUP = now."""
    from ..controller.watch import Watcher

    cfg = _cfg(config_path)
    if not paths and cfg.source_dir is None and cfg.git is None:
        click.echo("error: no policy source: pass PATH… or set `source` in the config", err=True)
        sys.exit(2)
    from ..controller.export import Exporter

    exporter = Exporter(cfg, on_warning=lambda m: click.echo(f"warning: {m}", err=True)).start()
    try:
        Watcher(cfg, _paths(paths), log=lambda m: click.echo(m, err=True)).run()
    finally:
        exporter.stop()


@click.command("status")
@click.argument("name", required=False)
@_config_opt
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("-o", "--output", "output", type=click.Choice(["wide", "json"]),
              help="wide: programs, attachments, per-rule counters, messages; json: as --format json.")
def status_cmd(name: str | None, config_path: str | None, fmt: str, output: str | None) -> None:
    """Policies, revisions, programs, attachments, counters, conditions (NAME: one
    policy in detail). Exit 0 when every policy is Ready, 1 otherwise (like a `flux`
    check; scripts can gate on it)."""
    from ..controller.status import all_ready, collect, render

    data = collect(_cfg(config_path))
    if fmt == "json" or output == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        render(data, wide=output == "wide", name=name)
    sys.exit(0 if all_ready(data) else 1)


@click.command("destroy")
@_config_opt
@click.option("--yes", "--allow-empty", "yes", is_flag=True,
              help="Do not ask for confirmation (--allow-empty: same, for symmetry with apply).")
def destroy_cmd(config_path: str | None, yes: bool) -> None:
    """Remove everything bpfpolicy loaded (inventory-driven, then every pin under the root)."""
    from ..controller.destroy import destroy

    cfg = _cfg(config_path)
    if not yes and sys.stdin.isatty():
        click.confirm(f"remove every policy under {cfg.bpffs_root}?", abort=True)
    result = destroy(cfg, on_removed=lambda key: click.echo(f"removed {key}"),
                     on_error=lambda msg: click.echo(f"error: {msg}", err=True))
    if not result.ok:
        sys.exit(1)


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """--since/--until: RFC 3339 or a duration; anything else is a usage error (exit 2)."""
    from ..controller.stream import parse_when

    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


@click.command("events")
@_config_opt
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new events (SIGINT/SIGTERM end it, exit 0).")
@click.option("-o", "--output", "output", type=click.Choice(["json", "compact"]), default="json",
              help="json: one object per line (the export's own lines); compact: one human line per event.")
@click.option("--policy", help="Only events of Kind/name (or name).")
@click.option("--kind", help="Only events of this kind (e.g. TracingPolicy).")
@click.option("--source", type=click.Choice(["kernel", "controller"]), help="Only kernel or controller events.")
@click.option("--verdict", help="Only events with this action (allow, deny, audit, Sigkill, …).")
@click.option("--ip", help="Only packets with this local or remote address.")
@click.option("--port", type=click.IntRange(0, 65535), help="Only packets with this local or remote port.")
@click.option("--since", callback=_when, help="RFC 3339 time or duration ago (1h, 30m): events at or after it.")
@click.option("--until", callback=_when, help="RFC 3339 time or duration ago: events at or before it.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
def events_cmd(config_path: str | None, follow: bool, output: str, count: int | None, **filters) -> None:  # noqa: ANN003
    """Kernel events and the controller log.

    While a controller (`watch`) runs it is the one reader of every ring buffer and
    writes them to the export file (exportFile, default <stateDir>/events/export.jsonl,
    rotated); this command reads and follows that file. With no controller running it
    reads the ring buffers directly (as the only reader: a second `events --follow`
    would compete for the same records). Without --follow: the controller log, then the
    exported kernel events."""
    from ..controller import export

    cfg = _cfg(config_path)
    s = export.settings(cfg)
    printer = _printer(output)
    if export.controller_exporting(s):
        lines = _from_export(cfg, s, follow=follow, replay=filters["since"] is not None or not follow)
    elif follow:
        lines = _from_rings(cfg, since=filters["since"])
    else:
        lines = _from_export(cfg, s, follow=False, replay=True)
    _print_events(lines, printer, count, filters)


def _printer(output: str):  # noqa: ANN202
    from .render import event_line

    render = event_line if output == "compact" else (lambda ev: json.dumps(ev, default=str))

    def emit(ev) -> None:  # noqa: ANN001
        line = render(ev)
        _WRITING.append(True)  # a stop signal now exits at once (see _stop_on_signals)
        try:
            click.echo(line)
        finally:
            _WRITING.clear()
    return emit


def _print_events(lines, printer, count: int | None, filters: dict) -> None:  # noqa: ANN001
    from ..controller.stream import from_controller, matches

    seen = 0
    try:
        for ev in lines:
            view = ev if "source" in ev or "reason" not in ev else from_controller(ev)
            if not matches(view, **filters):
                continue
            printer(ev)
            seen += 1
            if count is not None and seen >= count:
                break
    except BrokenPipeError:
        pass


_WRITING: list[bool] = []  # non-empty while a line is being written to stdout


def _stop_on_signals(stop) -> None:  # noqa: ANN001
    """SIGINT/SIGTERM ask the stream to end after its current poll, so the last lines
    are flushed. A write blocked on a full pipe (a reader that stopped reading) would be
    retried after the handler (PEP 475) and never reach the next poll: then exit at once."""
    import signal

    def handler(*_: object) -> None:
        stop()
        if _WRITING:
            raise SystemExit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _from_rings(cfg, *, since: float | None):  # noqa: ANN001, ANN202
    """No controller: read the ring buffers here (and tail the controller log)."""
    from ..controller.stream import EventStream

    stream = EventStream(cfg.bpffs_root, cfg.state_dir, since=None if since is None else "",
                         on_warning=lambda m: click.echo(f"warning: {m}", err=True))
    _stop_on_signals(stream.stop)
    return stream.run()


def _from_export(cfg, s, *, follow: bool, replay: bool):  # noqa: ANN001, ANN202
    """The controller log and the export file (its rotated backups first, oldest first);
    with `follow`, then what both gain until SIGINT/SIGTERM. Without `replay` only new lines."""
    import time

    from ..controller.events import LogTail
    from ..controller.stream import from_controller

    stop: list[bool] = []
    _stop_on_signals(lambda: stop.append(True))
    log = LogTail(cfg.events_path, at_end=not replay)
    exp = LogTail(s.path, at_end=not replay)
    if replay:
        for i in range(s.keep - 1, 0, -1):
            yield from LogTail(s.path.with_name(f"{s.path.name}.{i}")).new()
    while True:
        for ev in log.new():
            yield ev if not follow and replay else from_controller(ev)
        yield from exp.new()
        if not follow or stop:
            return
        time.sleep(0.2)


@click.command("suspend")
@_config_opt
def suspend_cmd(config_path: str | None) -> None:
    """Pause applying and drift correction (enforcement stays as it is)."""
    from ..controller import events

    cfg = _cfg(config_path)
    from ..controller.paths import create_private

    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    fd = create_private(cfg.suspend_flag, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(events.now_iso() + "\n")
    events.emit(cfg.events_path, "Suspended", "reconciliation suspended")
    click.echo("suspended")


@click.command("resume")
@_config_opt
def resume_cmd(config_path: str | None) -> None:
    """Resume reconciliation after `suspend`."""
    from ..controller import events

    cfg = _cfg(config_path)
    cfg.suspend_flag.unlink(missing_ok=True)
    events.emit(cfg.events_path, "Resumed", "reconciliation resumed")
    click.echo("resumed" + (" (config still has suspend: true)" if cfg.suspend else ""))


commands = [plan_cmd, apply_cmd, watch_cmd, status_cmd, destroy_cmd, events_cmd, suspend_cmd, resume_cmd]
