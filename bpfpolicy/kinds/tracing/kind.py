"""TracingPolicy: Tetragon-style kernel hooks compiled to straight-line BPF C.

Accepts Tetragon's own `cilium.io/v1alpha1` TracingPolicy / TracingPolicyNamespaced files
and the native `bpfpolicy.io/v1` TracingPolicy (whose `spec` is Tetragon's spec).
Validation lives in `tracing_check`, backend choice in `tracing_features`, lowering to
the template in `tracing_lower`; see docs/tracing.md.
"""

from __future__ import annotations

from typing import Any

from ...policy.load import Document
from ..base import Artifact, CompileContext, ForeignFormat, Kind, Reporter
from .check import TracingChecker
from .schema import FOREIGN_FILE, NATIVE_FILE

TETRAGON_API = "cilium.io/v1alpha1"
TETRAGON_KINDS = ("TracingPolicy", "TracingPolicyNamespaced")


def _is_tetragon(kind: str) -> Any:
    return lambda data: data.get("apiVersion") == TETRAGON_API and data.get("kind") == kind


class TracingPolicyKind(Kind):
    kind = "TracingPolicy"
    schema_file = NATIVE_FILE
    formats = tuple(ForeignFormat(k, FOREIGN_FILE, _is_tetragon(k)) for k in TETRAGON_KINDS)

    def check(self, doc: Document, report: Reporter) -> None:
        data = doc.data
        foreign = data.get("kind") if data.get("apiVersion") == TETRAGON_API else None
        TracingChecker(report, foreign).check(data)

    def compile(self, doc: Document, ctx: CompileContext) -> Artifact:
        from .lower import compile_tracing_policy

        return compile_tracing_policy(doc, ctx)
