"""TracingPolicy: Tetragon-style kernel hooks compiled to straight-line BPF C.

Accepts Tetragon's own `cilium.io/v1alpha1` TracingPolicy / TracingPolicyNamespaced files
and the native `bpfpolicy.io/v1` TracingPolicy (whose `spec` is Tetragon's spec).
Validation lives in `tracing_check`, backend choice in `tracing_features`, lowering to
the template in `tracing_lower`; see docs/tracing.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...policy.diagnostics import Diagnostic
from ...policy.load import Document
from ..base import Artifact, CompileContext, Compiled, ForeignFormat, Kind, Model, Reporter
from .changes import describe_change as _describe_change
from .check import TracingChecker
from .events import decode_event, decode_process
from .schema import FOREIGN_FILE, NATIVE_FILE
from .tetragon_json import to_tetragon

TETRAGON_API = "cilium.io/v1alpha1"
TETRAGON_KINDS = ("TracingPolicy", "TracingPolicyNamespaced")


def _is_tetragon(kind: str) -> Any:
    return lambda data: data.get("apiVersion") == TETRAGON_API and data.get("kind") == kind


@dataclass
class TracingModel(Model):
    """A checked TracingPolicy: the lowering reads its spec; `foreign` names the Tetragon
    kind it came as (None for the native form)."""

    foreign: str | None


class TracingPolicyKind(Kind):
    kind = "TracingPolicy"
    describe_change = staticmethod(_describe_change)  # plan's rule-level lines (changes.py)
    schema_file = NATIVE_FILE
    event_layouts = {"tracing_event_v1": decode_event, "tracing_process_v1": decode_process}
    formats = tuple(ForeignFormat(k, FOREIGN_FILE, _is_tetragon(k)) for k in TETRAGON_KINDS)
    export_formatters = {"tetragon": to_tetragon}  # exportFormat: tetragon (Tetragon's export JSON)

    def check(self, doc: Document, report: Reporter) -> None:
        self.parse(doc, report)

    def parse(self, doc: Document, report: Reporter) -> TracingModel:
        data = doc.data
        foreign = data.get("kind") if data.get("apiVersion") == TETRAGON_API else None
        TracingChecker(report, foreign).check(data)
        return TracingModel(doc, foreign)

    def compile(self, doc: Document, ctx: CompileContext) -> Artifact:
        from .lower import compile_tracing_policy

        return compile_tracing_policy(doc, ctx)

    def compile_all(self, models: Sequence[Model], ctx: CompileContext) -> Compiled:
        """Every TracingPolicy, plus the process sensor whenever there is one: events
        carry process/parent blocks and `process_exec`/`process_exit` only when the
        sched tracepoints feed the cache, and the controller applies and destroys the
        sensor like any artifact (paired with the first policy, which owns its status)."""
        out = super().compile_all(models, ctx)
        if not models:
            return out
        header = _sensor_header(ctx)
        if ctx.target.foreign_arch and header is None:
            return out  # no vmlinux.h of that arch: the policies' own diagnostics say so
        from ...policy.diagnostics import BuildError
        from ..base import compile_failure
        from .process import build_sensor

        try:
            out.artifacts.append((models[0], build_sensor(ctx.arch, ctx.revision, header)))
        except BuildError as e:
            out.diagnostics += compile_failure(e, models[0].doc)
        return out

    def compile_one(self, model: Model, ctx: CompileContext) -> tuple[Artifact | None, list[Diagnostic]]:
        """The artifact plus, per hook, where it runs on the target (docs/tracing.md
        "What runs where"), read back from the manifest's hook table."""
        artifact, diags = super().compile_one(model, ctx)
        if artifact is not None:
            diags = [*diags, *self._where(model.doc, artifact.manifest["events"]["hooks"],
                                          artifact.manifest["features"].get("kernel", "?"))]
        return artifact, diags

    def backend_diagnostics(self, model: Model, ctx: CompileContext) -> list[Diagnostic]:
        """`validate`: the same notes without building (the C is rendered, not compiled);
        a hook that cannot run on the target is a note here — compile makes it an error."""
        from ...policy.diagnostics import PolicyError
        from .lower import Lowering

        try:
            lowering = Lowering(model.doc, ctx)
        except PolicyError as e:
            kernel = ctx.target.version_text
            return [dataclasses.replace(d, severity="note", message=f"cannot run on kernel {kernel}: {d.message}")
                    for d in e.diagnostics if d.severity == "error"]
        return self._where(model.doc, lowering.hooks, lowering.features.get("kernel", "?"))

    @staticmethod
    def _where(doc: Document, hooks: list[dict[str, Any]], kernel: str) -> list[Diagnostic]:
        from .backends.choose import backend_report

        return [Diagnostic(doc.file, line, col, path, message, severity)  # type: ignore[arg-type]
                for (line, col), path, severity, message in backend_report(hooks, kernel)]


def _sensor_header(ctx: CompileContext) -> Path | None:
    """The BTF the sensor's `vmlinux.h` comes from, as the tracing lowering picks it
    (`Lowering.header_btf`): a given btf file or the matrix cache's image for another
    arch; None (the host's) otherwise."""
    if not ctx.target.foreign_arch:
        return None
    if ctx.options.get("btf"):
        return Path(ctx.options["btf"])
    return ctx.target.btf if ctx.kernel is not None else None
