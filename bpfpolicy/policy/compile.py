"""Compile validated policies into artifacts (the layer between validation and reconcile).

No kernel access here: compiling is safe to run unprivileged in CI. Output is written
per policy, atomically, so an interrupted compile never leaves a half artifact.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..kinds import Artifact, CompileContext
from .diagnostics import BuildError, Diagnostic, PolicyError
from .validate import Validated, ValidationResult, validate_paths

_LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<path>\S+): (?P<msg>.*)$", re.S)


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
    document is invalid: a tree is accepted or rejected as a whole."""
    validation = validate_paths(paths, lenient=lenient)
    result = CompileResult(diagnostics=list(validation.diagnostics), validation=validation)
    if not validation.ok:
        return result
    ctx = ctx or CompileContext()
    groups: dict[type, list[Validated]] = {}
    for policy in validation.policies:
        groups.setdefault(policy.ident.kind, []).append(policy)
    for kind_cls, policies in groups.items():
        kind = kind_cls()
        if hasattr(kind, "compile_group"):
            pairs, diags = compile_group(kind, policies, ctx)
            result.artifacts.extend(pairs)
            result.diagnostics.extend(diags)
            continue
        for policy in policies:
            artifact, diags = compile_policy(policy, ctx)
            result.diagnostics.extend(diags)
            if artifact is not None:
                result.artifacts.append((policy, artifact))
    return result


def compile_group(kind: object, policies: list[Validated], ctx: CompileContext
                  ) -> tuple[list[tuple[Validated, Artifact]], list[Diagnostic]]:
    """Kinds whose artifacts merge several policies (NetworkPolicy: one program per
    endpoint, because several programs on one hook would AND their verdicts) compile a
    whole tree at once through `compile_group(policies, ctx) -> (pairs, diagnostics)`."""
    first = policies[0].doc
    try:
        return kind.compile_group(policies, ctx)  # type: ignore[attr-defined]
    except PolicyError as e:
        return [], e.diagnostics
    except BuildError as e:
        return [], [located_diagnostic(str(e), first.diag((), str(e)))]


def compile_policy(policy: Validated, ctx: CompileContext) -> tuple[Artifact | None, list[Diagnostic]]:
    doc = policy.doc
    local = dataclasses.replace(ctx, base_dir=Path(doc.file).resolve().parent)
    kind = policy.ident.kind()
    try:
        return kind.compile(doc, local), []
    except PolicyError as e:
        return None, e.diagnostics
    except BuildError as e:
        return None, [located_diagnostic(str(e), doc.diag((), str(e)))]
    except NotImplementedError as e:
        return None, [doc.diag(("kind",), str(e))]


def located_diagnostic(message: str, fallback: Diagnostic) -> Diagnostic:
    """Build errors often already name `file:line:col: path:`; keep that location."""
    m = _LOCATED.match(message)
    if m:
        return Diagnostic(m["file"], int(m["line"]), int(m["col"]), m["path"], m["msg"])
    return dataclasses.replace(fallback, message=message)


def write_artifacts(result: CompileResult, out_dir: Path) -> list[Path]:
    return [artifact.write(out_dir) for _, artifact in result.artifacts]
