"""Compile validated policies into artifacts (the layer between validation and reconcile).

No kernel access here: compiling is safe to run unprivileged in CI. Output is written
per policy, atomically, so an interrupted compile never leaves a half artifact.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..kinds import Artifact, CompileContext, Kind
from ..kinds.base import located_diagnostic
from .diagnostics import Diagnostic
from .validate import Validated, ValidationResult, validate_paths

__all__ = ["CompileResult", "compile_paths", "compile_validation", "compile_policy", "located_diagnostic", "write_artifacts"]


@dataclass
class CompileResult:
    artifacts: list[tuple[Validated, Artifact]] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    validation: ValidationResult | None = None

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def compile_paths(paths: Iterable[str | Path], ctx: CompileContext | None = None,
                  lenient: bool = False) -> CompileResult:
    """Validate and compile every policy under `paths`. Nothing is compiled if any
    document is invalid: a tree is accepted or rejected as a whole. Each kind compiles
    the models validation built (`Kind.compile_all`), so nothing is parsed twice."""
    return compile_validation(validate_paths(paths, lenient=lenient), ctx)


def compile_validation(validation: ValidationResult, ctx: CompileContext | None = None,
                       memo: dict[Any, Any] | None = None) -> CompileResult:
    """`compile_paths` after its validation step (the controller times the two apart).

    `memo` (the controller keeps one across cycles): a kind whose models are the very
    objects of the last compile (a `ValidationMemo` reused them: their files did not
    change) with an equal context is not compiled again; its artifacts are reused."""
    result = CompileResult(diagnostics=list(validation.diagnostics), validation=validation)
    if not validation.ok:
        return result
    ctx = ctx or CompileContext()
    by_kind: dict[type[Kind], list[Validated]] = {}
    for policy in validation.policies:
        by_kind.setdefault(policy.ident.kind, []).append(policy)
    fresh: dict[Any, Any] = {}
    for kind_cls, policies in by_kind.items():
        owner = {id(p.model): p for p in policies}
        models = [p.model for p in policies]
        hit = (memo or {}).get(kind_cls)
        if hit is not None and len(hit[0]) == len(models) and all(a is b for a, b in zip(hit[0], models, strict=True)) \
                and hit[1] == ctx:
            compiled = hit[2]
            for _, artifact in compiled.artifacts:
                artifact.patches = {}  # made against an older base
        else:
            compiled = kind_cls().compile_all(models, ctx)
        if memo is not None and not any(d.severity == "error" for d in compiled.diagnostics):
            fresh[kind_cls] = (models, copy.deepcopy(ctx), compiled)
        result.artifacts += [(owner[id(model)], artifact) for model, artifact in compiled.artifacts]
        result.diagnostics += compiled.diagnostics
    if memo is not None:
        memo.clear()
        memo.update(fresh)
    return result


def compile_policy(policy: Validated, ctx: CompileContext) -> tuple[Artifact | None, list[Diagnostic]]:
    """One validated policy on its own (tools and tests): its artifact, or diagnostics."""
    return policy.ident.kind().compile_one(policy.model, ctx)


def write_artifacts(result: CompileResult, out_dir: Path) -> list[Path]:
    return [artifact.write(out_dir) for _, artifact in result.artifacts]
