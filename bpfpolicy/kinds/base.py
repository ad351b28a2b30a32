"""The kind plug-in contract.

A kind is one module under `bpfpolicy/kinds/`, one schema under `bpfpolicy/schemas/`, and its
templates under `codegen/`. Subclassing `Kind` registers it (the way sqlglot's dialects
register), so the loader, validator, CLI and controller never name a kind.

A kind *describes*: it validates documents, compiles them to an `Artifact` (object
files, filters, map contents, attach spec), and says how to apply/observe that artifact
through the kernel layer. It never touches the kernel during validation or compilation,
so `compile --dry-run` runs unprivileged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..artifact import Artifact
from ..policy.diagnostics import Diagnostic
from ..policy.load import Document

NATIVE_API_VERSION = "bpfpolicy.io/v1"

KINDS: dict[str, type[Kind]] = {}


@dataclass(frozen=True)
class ForeignFormat:
    """A format users already own (Cilium, Tetragon, Docker/OCI) that maps onto a kind."""

    name: str  # e.g. "CiliumNetworkPolicy"
    schema_file: str  # file name under bpfpolicy/schemas/
    matches: Callable[[Any], bool]


class Reporter:
    """Collects diagnostics for one document during semantic checks.

    `unsupported()` is for foreign features with no meaning on a single host: an error
    by default; with --lenient a warning, and the enclosing rule (`drop`) is removed so
    that what remains is never *wider* than what the user wrote."""

    def __init__(self, doc: Document, lenient: bool = False) -> None:
        self.doc = doc
        self.lenient = lenient
        self.diagnostics: list[Diagnostic] = []
        self.drops: list[tuple[str | int, ...]] = []

    def error(self, path: Iterable[str | int], message: str) -> None:
        self.diagnostics.append(self.doc.diag(path, message))

    def warning(self, path: Iterable[str | int], message: str) -> None:
        self.diagnostics.append(self.doc.diag(path, message, "warning"))

    def unsupported(
        self, path: Iterable[str | int], message: str, drop: Iterable[str | int] | None = None
    ) -> None:
        path = tuple(path)
        if self.lenient:
            target = tuple(drop) if drop is not None else path
            from ..policy.diagnostics import format_path

            self.warning(path, f"{message}; dropped {format_path(target)} (--lenient)")
            self.drops.append(target)
        else:
            self.error(path, message + " (use --lenient to drop it with a warning)")

    @property
    def failed(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


@dataclass
class CompileContext:
    """What the compiler targets. Kinds read only what they need."""

    kernel: tuple[int, int] | None = None  # target kernel (major, minor); None = running
    arch: str = "x86_64"
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {"caps": [...]} for seccomp
    revision: str | None = None  # git revision stamped into programs
    cache_dir: Path | None = None
    base_dir: Path | None = None  # directory of the policy file (for relative sourceFiles)


class Kind:
    """Base class of every policy kind. Subclasses register themselves by `kind`."""

    kind: ClassVar[str]
    schema_file: ClassVar[str]
    api_version: ClassVar[str] = NATIVE_API_VERSION
    formats: ClassVar[tuple[ForeignFormat, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "kind", None):
            KINDS[cls.kind] = cls

    # -- identity ---------------------------------------------------------------
    @classmethod
    def policy_name(cls, doc: Document) -> str | None:
        name = doc.get(("metadata", "name"))
        return name if isinstance(name, str) else None

    # -- validation -------------------------------------------------------------
    def check(self, doc: Document, report: Reporter) -> None:
        """Semantic checks beyond the JSON Schema. Report every problem found."""

    # -- compilation ------------------------------------------------------------
    def compile(self, doc: Document, ctx: CompileContext) -> Artifact:
        raise NotImplementedError(f"{self.kind}: compilation is not implemented yet")


@dataclass
class Identified:
    kind: type[Kind]
    format: ForeignFormat | None

    @property
    def schema_file(self) -> str:
        return self.format.schema_file if self.format else self.kind.schema_file

    @property
    def label(self) -> str:
        return self.format.name if self.format else self.kind.kind


def identify(doc: Document) -> Identified | Diagnostic:
    """Which kind (and foreign format) a document is, or a diagnostic saying why not."""
    from ..policy.diagnostics import did_you_mean

    data = doc.data
    if not isinstance(data, dict):
        return doc.diag((), f"expected a mapping (a policy document), got {_type_name(data)}")
    for kind in KINDS.values():
        for fmt in kind.formats:
            try:
                if fmt.matches(data):
                    return Identified(kind, fmt)
            except Exception:  # a matcher must never crash identification
                continue
    api, kind_name = data.get("apiVersion"), data.get("kind")
    if api is None and "apiversion" in data:
        return doc.diag(("apiversion",), 'unknown field "apiversion" (did you mean "apiVersion"?)')
    if kind_name is None:
        if api is None:
            return doc.diag((), 'not a policy: missing "apiVersion" and "kind" (and not a seccomp profile: no "defaultAction")')
        return doc.diag((), 'missing required field "kind"')
    if not isinstance(kind_name, str):
        return doc.diag(("kind",), f"kind must be a string, got {_type_name(kind_name)}")
    if api == NATIVE_API_VERSION:
        if kind_name in KINDS:
            return Identified(KINDS[kind_name], None)
        return doc.diag(("kind",), f'unknown kind "{kind_name}"{did_you_mean(kind_name, KINDS)}')
    known_foreign = {f.name for k in KINDS.values() for f in k.formats}
    if api is None:
        return doc.diag((), 'missing required field "apiVersion"')
    if kind_name in KINDS:
        return doc.diag(("apiVersion",), f'unknown apiVersion "{api}" for kind {kind_name} (expected "{NATIVE_API_VERSION}")')
    if kind_name in known_foreign:
        return doc.diag(("apiVersion",), f'unsupported apiVersion "{api}" for kind {kind_name}')
    hint = did_you_mean(kind_name, [*KINDS, *known_foreign])
    return doc.diag(("kind",), f'unknown kind "{kind_name}" (apiVersion "{api}"){hint}')


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)
