"""`bpfpolicy kernel-test [--kernels 5.10,6.1,6.12,7,host] PATH…`: the VM kernel matrix.

PATH is an artifact directory (what `compile --out` writes; searched recursively for
kernel-test.txt / manifest.json) or a policy file/directory, which is compiled once per
target kernel, so kind-specific lowering (tcx vs clsact, kprobe vs fentry) is tested on
the kernel it targets.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from ..matrix import ALL_KERNELS, ArtifactDir, discover
from ..matrix.results import KernelRun
from . import render

# Debian architecture names (kernels, multiarch) and the compiler's (uname -m) names.
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
COMPILE_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


def _kernel_list(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    names = [k.strip() for k in value.split(",") if k.strip()]
    aliases = {"7.x": "7", "sid": "7", "trixie": "6.12", "bookworm": "6.1", "bullseye": "5.10"}
    names = [aliases.get(k, k) for k in names]
    bad = [k for k in names if k not in ALL_KERNELS]
    if bad or not names:
        raise click.BadParameter(f"unknown kernel(s) {', '.join(bad) or '(none)'}; choose from {','.join(ALL_KERNELS)}")
    return list(dict.fromkeys(names))


def _split_paths(paths: tuple[str, ...]) -> tuple[list[ArtifactDir], list[str], list[Path]]:
    """(artifact dirs found, policy paths to compile, artifact dirs with nothing to run)."""
    artifacts: list[ArtifactDir] = []
    policies: list[str] = []
    empty: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found, nothing = discover(path)
            if found or nothing:
                artifacts += found
                empty += nothing
                continue
        policies.append(p)
    return artifacts, policies, empty


@click.command("kernel-test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--kernels", "kernel_names", default=",".join(ALL_KERNELS), show_default=True,
              callback=_kernel_list, help="Matrix members: Debian kernels 5.10, 6.1, 6.12, 7 (sid) and/or host.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/kernel-test", show_default=True,
              help="Console logs, verifier logs of failures, results.json.")
@click.option("--jobs", type=int, default=None, help="Kernels booted at once (default: number of cores).")
@click.option("--timeout", type=float, default=90.0, show_default=True,
              help="Seconds per artifact (a guest gets one minute to boot plus this per artifact).")
@click.option("--caps", help="Capabilities for seccomp includes/excludes when compiling policy paths.")
@click.option("--inventory", type=click.Path(exists=True, dir_okay=False),
              help="Endpoint inventory for NetworkPolicy (YAML list, or a host config's `endpoints:`).")
@click.option("--revision", help="Revision stamped into artifacts compiled from policy paths.")
@click.option("--lenient", is_flag=True, help="Compile policy paths with --lenient.")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False),
              help="Boot nothing: write runner + artifacts per kernel to DIR, to run with DIR/run.sh "
                   "on other machines (the Vagrant VMs).")
@click.option("--arch", type=click.Choice(["amd64", "arm64", "x86_64", "aarch64"]), default="amd64",
              show_default=True, callback=lambda _c, _p, v: DEBIAN_ARCH.get(v, v),
              help="Debian architecture of the guests (arm64: qemu-system-aarch64 -M virt under TCG; "
                   "the host member only runs for the host's own architecture).")
def command(paths: tuple[str, ...], kernel_names: list[str], fmt: str, out_dir: str, jobs: int | None,
            timeout: float, caps: str | None, inventory: str | None, revision: str | None, lenient: bool,
            bundle_dir: str | None, arch: str) -> None:
    """Boot real kernels in QEMU (and use the host kernel) to load, attach and exercise artifacts."""
    from ..matrix import fetch_all, run_matrix, write_bundle
    from ..matrix import kernels as kernel_mod
    from ..matrix.guest import GuestError

    out = Path(out_dir)
    if arch != "amd64":
        if bundle_dir:
            raise click.UsageError("--bundle builds the amd64 runner only")
        if "host" in kernel_names:
            click.echo(f"kernel-test: host member left out: the host is not {arch}", err=True)
            kernel_names = [k for k in kernel_names if k != "host"]
        if not kernel_names:
            raise click.UsageError(f"no {arch} kernels to boot")
    static, policies, empty = _split_paths(paths)
    inventory = inventory or (_default_inventory(policies) if policies else None)  # README: no --inventory
    for d in empty:
        click.echo(f"kernel-test: {d}: artifact has no kernel-test.txt and no BPF object; nothing to run", err=True)
    compiled: dict[tuple[int, int] | None, list[ArtifactDir]] = {}
    versions: dict[str, tuple[int, int]] = {}
    prefetched = None
    if policies and not bundle_dir:
        # The exact target version matters when compiling: fetch first (concurrently);
        # run_matrix reuses the result and reports any fetch failure.
        prefetched = fetch_all(kernel_names, arch)
    for name in kernel_names:
        if name == "host":
            continue
        hit = prefetched[0].get(name) if prefetched else kernel_mod.cached(kernel_mod.KERNELS[name].for_arch(arch))
        versions[name] = hit.version if isinstance(hit, kernel_mod.Kernel) else _nominal(name)
    if policies:
        targets = [versions.get(name) for name in kernel_names]
        for version in dict.fromkeys(targets):
            compiled[version] = _compile(policies, version, out, caps, inventory, revision, lenient, arch)
    if not static and not any(compiled.values()):
        raise click.UsageError("nothing to test: no artifact directories or compilable policies in PATH…")

    def source(version: tuple[int, int] | None) -> list[ArtifactDir]:
        return static + compiled.get(version, [])

    if bundle_dir:
        members = [k for k in kernel_names if k != "host"]
        for member in members:
            for art in source(versions.get(member)):
                if art.error is not None:
                    click.echo(f"kernel-test: {member}: {art.name} not bundled ({art.error_status}): {art.error}", err=True)
        try:
            dest = write_bundle(Path(bundle_dir), members, source, versions)
        except GuestError as e:
            click.echo(f"kernel-test: {e}", err=True)
            sys.exit(1)
        click.echo(f"kernel-test: bundle for {', '.join(members)} in {dest}; run `sudo {dest}/run.sh` on the target")
        return
    live = Progress(kernel_names, arch, fetched=prefetched is not None)
    try:
        with live:
            report = run_matrix(kernel_names, source, out, jobs=jobs, timeout=timeout, prefetched=prefetched,
                                arch=arch, progress=live.update)
    except GuestError as e:
        click.echo(f"kernel-test: {e}", err=True)
        sys.exit(1)
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        render.matrix_table(report)
    sys.exit(0 if report.ok else 1)


class Progress:
    """One row per matrix member (arch, kernel): fetching → booting/running → done with
    its ok/fail/skip counts as soon as that guest's results arrive. A rich Live table on
    stderr when it is a terminal; otherwise one plain line per change (`kernel-test: host:
    done: 3 ok, 0 fail, 1 skip (2.1 s)`), so CI logs show progress too. stdout keeps only
    the final table (or JSON)."""

    def __init__(self, names: list[str], arch: str, fetched: bool = False, enabled: bool = True) -> None:
        import threading

        from rich.console import Console

        self.names, self.arch, self.enabled = names, arch, enabled
        self.stage = {n: "queued" if n == "host" or fetched else "fetching" for n in names}
        self.counts: dict[str, str] = {}
        self.console = Console(stderr=True)
        self.lock = threading.Lock()
        self.live = None

    def __enter__(self) -> Progress:
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        elif self.enabled:
            for name in self.names:
                self._line(name)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)  # type: ignore[arg-type]
            self.live = None

    def update(self, name: str, stage: str, run: KernelRun | None) -> None:
        """The matrix's per-kernel callback (worker threads: serialised by the lock)."""
        with self.lock:
            self.stage[name] = stage
            if run is not None:
                self.counts[name] = _counts(run)
            if self.live is not None:
                self.live.update(self._table())
            elif self.enabled:
                self._line(name)

    def _line(self, name: str) -> None:
        extra = f": {self.counts[name]}" if name in self.counts else ""
        click.echo(f"kernel-test: {self._label(name)}: {self.stage[name]}{extra}", err=True)

    def _label(self, name: str) -> str:
        return name if self.arch == "amd64" else f"{name} ({self.arch})"

    def _table(self) -> object:
        from rich.table import Table

        table = Table(title="kernel-test", title_justify="left")
        for col in ("arch", "kernel", "stage", "results"):
            table.add_column(col)
        for name in self.names:
            table.add_row(self.arch, name, self.stage[name], self.counts.get(name, ""))
        return table


def _counts(run: KernelRun) -> str:
    """`3 ok, 0 fail, 1 skip (2.1 s)`, or the run's error when the guest never reported."""
    tally = {s: sum(1 for r in run.results if r.status == s) for s in ("ok", "fail", "skip")}
    text = ", ".join(f"{n} {s}" for s, n in tally.items()) + f" ({run.seconds:.1f} s)"
    return f"{text}; {run.error}" if run.error else text


def _default_inventory(policies: list[Path]) -> str | None:
    """Without --inventory: the host config's endpoints when it has some, else
    examples/host-config.yaml of the repository holding the policy tree; else say so
    (NetworkPolicy then fails to compile with its own located error)."""
    import os

    host = Path(os.environ.get("BPFPOLICY_CONFIG", "/etc/bpfpolicy/config.yaml"))
    candidates = [host] + [d / "examples" / "host-config.yaml"
                           for p in policies for d in Path(p).resolve().parents]
    for c in candidates:
        if c.is_file() and _inventory(c):
            click.echo(f"kernel-test: endpoint inventory from {c}", err=True)
            return str(c)
    click.echo("kernel-test: no endpoint inventory (no host config endpoints, no examples/host-config.yaml"
               " above the policies): NetworkPolicy needs --inventory", err=True)
    return None


def _inventory(path: Path) -> list[object]:
    """Endpoint inventory: a YAML list, or a host config's `inventory:` / `endpoints:`."""
    import yaml

    data = yaml.safe_load(path.read_text()) or []
    if isinstance(data, dict):
        data = data.get("inventory", data.get("endpoints", []))
    return data if isinstance(data, list) else []


def _nominal(name: str) -> tuple[int, int]:
    major, _, minor = name.partition(".")
    return int(major), int(minor or 0)


def _compile(policies: list[str], version: tuple[int, int] | None, out: Path, caps: str | None,
             inventory: str | None, revision: str | None, lenient: bool, arch: str = "amd64") -> list[ArtifactDir]:
    """Compile the policy paths for one target kernel. An invalid tree stops everything
    (exit 1); a policy the compiler refuses for THIS kernel becomes a `compile` result
    for that kernel (a skip when the kernel lacks what it needs), so one kernel's gap
    does not hide the others' results."""
    from ..matrix.artifacts import compile_failure
    from ..matrix.tracing import annotate, sensor_artifacts
    from ..policy.compile import compile_policy
    from ..policy.validate import validate_paths
    from .compile import make_context

    validation = validate_paths(policies, lenient=lenient)
    if not validation.ok:
        for d in validation.diagnostics:
            click.echo(str(d), err=True)
        sys.exit(1)
    ctx = dataclasses.replace(make_context(None, COMPILE_ARCH[arch], caps, None, revision), kernel=version)
    if inventory:
        ctx.options["inventory"] = _inventory(Path(inventory))
    target = "host" if version is None else f"{version[0]}.{version[1]}"
    target += "" if arch == "amd64" else f"-{arch}"
    dest = out / "artifacts" / target
    found: list[ArtifactDir] = []
    for policy in validation.policies:
        artifact, diags = compile_policy(policy, ctx)
        label = f"{policy.ident.kind.kind}/{policy.name}"
        errors = [d for d in diags if d.severity == "error"]
        if artifact is None or errors:
            found.append(compile_failure(label, "; ".join(str(d) for d in errors) or "compile failed"))
            continue
        written = artifact.write(dest)
        annotate(written, policy.doc.file, policy.name, host=version is None)  # Tetragon corpus checks
        arts, _ = discover(written)
        found += arts
    # The process sensor beside TracingPolicies, with a process_exec check (matrix/tracing.py).
    found += sensor_artifacts([p for p in validation.policies if p.ident.kind.kind == "TracingPolicy"], ctx, dest)
    return found
