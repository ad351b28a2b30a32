"""bpfpolicy: policy-as-code for the Linux kernel.

The public face of the package: everything a program needs is importable from here,
and everything else is internal (kopf-style: one public module over private rooms).

    import bpfpolicy
    result = bpfpolicy.compile(["policies/"])      # validate + lower + codegen + build
    for d in result.diagnostics: print(d)          # file:line:col: path: message

The pipeline, and where each stage lives (imports point down this list only; the rule
is enforced by tests/test_layering.py, see docs/ARCHITECTURE.md):

    load       policy/load.py         files → Documents with line/column for every value
    validate   policy/validate.py     schemas/*.json + each kind's semantic checks → Validated
    lower      kinds/<kind>/          a kind turns one validated policy into a model/IR
    codegen    codegen/render.py      the model → C text from codegen/templates/*.j2
    build      codegen/build.py       clang -target bpf → object + manifest (the artifact,
                                      docs/ARTIFACTS.md); seccomp compiles to cBPF directly
    reconcile  controller/            desired (compile) → observe → plan → apply (bpffs pins)

`policy/compile.py` drives lower → codegen → build for a whole tree; `cli/` is the
command line over these functions; `kernel/` is the only layer that talks to the kernel.

Importing `bpfpolicy` is cheap: the heavy parts (jsonschema, jinja2, the kinds, the
controller) load on first use of the names below.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "Diagnostic",
    "PolicyError",
    "Reconciler",
    "__version__",
    "compile",
    "load",
    "validate",
]

if TYPE_CHECKING:
    from .controller.reconcile import Reconciler
    from .kinds import CompileContext
    from .policy.compile import CompileResult
    from .policy.diagnostics import Diagnostic, PolicyError
    from .policy.load import Document
    from .policy.validate import ValidationResult

# Public classes, imported from their home module on first access (PEP 562).
_LAZY_CLASSES = {
    "Diagnostic": "bpfpolicy.policy.diagnostics",
    "PolicyError": "bpfpolicy.policy.diagnostics",
    "Reconciler": "bpfpolicy.controller.reconcile",
}


def __getattr__(name: str) -> object:
    if name in _LAZY_CLASSES:
        import importlib

        return getattr(importlib.import_module(_LAZY_CLASSES[name]), name)
    raise AttributeError(f"module 'bpfpolicy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_CLASSES))


def load(paths: Iterable[str | Path]) -> tuple[list[Document], list[Diagnostic]]:
    """Read every policy file under `paths` (YAML or JSON, directories walked): the
    documents, and a diagnostic for each file that could not be read or parsed."""
    from .policy.load import load_paths

    return load_paths(paths)


def validate(paths: Iterable[str | Path], *, lenient: bool = False) -> ValidationResult:
    """Load and validate every policy under `paths`; `.ok` is false if any error was
    found, and `.diagnostics` holds all of them (not just the first)."""
    from .policy.validate import validate_paths

    return validate_paths(paths, lenient=lenient)


def compile(paths: Iterable[str | Path], ctx: CompileContext | None = None, *,
            lenient: bool = False) -> CompileResult:
    """Validate and compile every policy under `paths` into artifacts (nothing written;
    `policy.compile.write_artifacts` writes them). Nothing is compiled if any document
    is invalid: a tree is accepted or rejected as a whole."""
    from .policy.compile import compile_paths

    return compile_paths(paths, ctx, lenient=lenient)
