"""The kind plug-in contract.

A kind is one module under `bpfpolicy/kinds/`, one schema under `bpfpolicy/schemas/`, and its
templates under `codegen/`. Subclassing `Kind` registers it (the way sqlglot's dialects
register), so the loader, validator, CLI and controller never name a kind.

A kind *describes*: it parses each document once into a typed `Model` (`parse`, run by
validation: the semantic checks build the model as they go), compiles models to
`Artifact`s (`compile_all`: one per model by default; NetworkPolicy merges per endpoint),
and says how to apply/observe that artifact through the kernel layer. It never touches
the kernel during validation or compilation, so `compile --dry-run` runs unprivileged.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..artifact import Artifact
from ..policy.diagnostics import BuildError, Diagnostic, PolicyError
from ..policy.load import Document
from .target import Target

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

    @property
    def target(self) -> Target:
        """The kernel this compile targets (version, arch, BTF, features): one place."""
        return Target(self.kernel, self.arch)


@dataclass
class Model:
    """What a kind's `parse` built from one checked document. Kinds subclass it with their
    typed fields; the document stays along for diagnostics and provenance."""

    doc: Document


@dataclass
class Compiled:
    """What `Kind.compile_all` produced: each artifact with the model it was built from
    (NetworkPolicy: the first policy merged into it), and diagnostics of what failed."""

    artifacts: list[tuple[Model, Artifact]] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


class Kind:
    """Base class of every policy kind. Subclasses register themselves by `kind`."""

    kind: ClassVar[str]
    schema_file: ClassVar[str]
    api_version: ClassVar[str] = NATIVE_API_VERSION
    formats: ClassVar[tuple[ForeignFormat, ...]] = ()
    # Artifacts installed as files (not bpffs pins) go to `<state dir>/<install_subdir>/<name>`.
    install_subdir: ClassVar[str | None] = None
    # Ring-buffer record decoders by `events.layout`: `(raw, manifest) -> dict`.
    event_layouts: ClassVar[dict[str, Callable[[bytes, dict[str, Any]], dict[str, Any]]]] = {}
    # Export formats beyond bpfpolicy's own, by name (exportFormat): `event -> object | None`.
    export_formatters: ClassVar[dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "kind", None):
            KINDS[cls.kind] = cls

    @classmethod
    def describe_change(cls, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        """`plan`'s rule-level lines for one policy document changing from `old` to `new`
        (either None: added/removed). Default: the changed top-level spec fields; kinds
        say it in their own terms (`deny[bogons] +1 source (203.0.113.7/32)`)."""
        return spec_field_changes(old, new)

    # -- identity ---------------------------------------------------------------
    @classmethod
    def policy_name(cls, doc: Document) -> str | None:
        name = doc.get(("metadata", "name"))
        return name if isinstance(name, str) else None

    # -- validation -------------------------------------------------------------
    def check(self, doc: Document, report: Reporter) -> None:
        """Semantic checks beyond the JSON Schema. Report every problem found."""

    def parse(self, doc: Document, report: Reporter) -> Model:
        """The document's typed model, built once during validation by the semantic
        checks (which report every problem). Kinds whose compiler reads the checked
        document itself keep this default: the model is the document."""
        self.check(doc, report)
        return Model(doc)

    # -- compilation ------------------------------------------------------------
    def compile(self, doc: Document, ctx: CompileContext) -> Artifact:
        raise NotImplementedError(f"{self.kind}: compilation is not implemented yet")

    def compile_model(self, model: Model, ctx: CompileContext) -> Artifact:
        """One model → its artifact. Kinds with a typed model override this; the default
        compiles the checked document."""
        return self.compile(model.doc, ctx)

    def compile_all(self, models: Sequence[Model], ctx: CompileContext) -> Compiled:
        """Every model of this kind in a tree → artifacts. Default: one artifact per model,
        each compiled on its own (one failure does not hide the others' diagnostics)."""
        out = Compiled()
        for model in models:
            artifact, diagnostics = self.compile_one(model, ctx)
            out.diagnostics += diagnostics
            if artifact is not None:
                out.artifacts.append((model, artifact))
        return out

    def compile_one(self, model: Model, ctx: CompileContext) -> tuple[Artifact | None, list[Diagnostic]]:
        """One model on its own, relative paths resolved from its policy file's directory:
        its artifact, or the diagnostics saying why not."""
        local = dataclasses.replace(ctx, base_dir=Path(model.doc.file).resolve().parent)
        try:
            return self.compile_model(model, local), []
        except (PolicyError, BuildError, NotImplementedError) as e:
            return None, compile_failure(e, model.doc)


def spec_field_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """`spec.X changed/added/removed` for each top-level spec field that differs."""
    o = (old or {}).get("spec") if isinstance(old, dict) else None
    n = (new or {}).get("spec") if isinstance(new, dict) else None
    o, n = (o if isinstance(o, dict) else {}), (n if isinstance(n, dict) else {})
    out = []
    for key in sorted(set(o) | set(n), key=str):
        if key not in o:
            out.append(f"{key} added")
        elif key not in n:
            out.append(f"{key} removed")
        elif o[key] != n[key]:
            out.append(f"{key} changed")
    return out


def spec_of(doc: Any) -> dict[str, Any]:
    """A policy document's `spec` mapping for describe_change (empty when absent or not a mapping)."""
    spec = doc.get("spec") if isinstance(doc, dict) else None
    return spec if isinstance(spec, dict) else {}


def list_changes(field: str, old: Any, new: Any, label: Callable[[int, Any], str] | None = None,
                 inner: Callable[[Any, Any], list[str]] | None = None) -> list[str]:
    """Per-index changes of a list field: `field[i] added|removed`, or `inner`'s words for
    an entry present on both sides (default `changed`). `label` names an entry
    (`deny[bogons]` instead of `deny[0]`)."""
    old = old if isinstance(old, list) else []
    new = new if isinstance(new, list) else []
    name = label or (lambda i, _e: f"{field}[{i}]")
    out: list[str] = []
    for i in range(max(len(old), len(new))):
        if i >= len(old):
            out.append(f"{name(i, new[i])} added")
        elif i >= len(new):
            out.append(f"{name(i, old[i])} removed")
        elif old[i] != new[i]:
            words = inner(old[i], new[i]) if inner else []
            out.append(f"{name(i, new[i])} " + (", ".join(words) if words else "changed"))
    return out


def set_delta(noun: str, old: Any, new: Any) -> list[str]:
    """`+1 source (203.0.113.7/32)` / `-2 names (a, b)` for two lists of scalars."""
    o = {str(x) for x in old} if isinstance(old, list) else set()
    n = {str(x) for x in new} if isinstance(new, list) else set()
    out = []
    for sign, items in (("+", sorted(n - o)), ("-", sorted(o - n))):
        if items:
            shown = ", ".join(items[:3]) + (", …" if len(items) > 3 else "")
            out.append(f"{sign}{len(items)} {noun if len(items) == 1 else noun + 's'} ({shown})")
    return out


_LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<path>\S+): (?P<msg>.*)$", re.S)


def compile_failure(error: Exception, doc: Document) -> list[Diagnostic]:
    """A compile failure as diagnostics, located in `doc` unless the message names its place."""
    if isinstance(error, PolicyError):
        return error.diagnostics
    if isinstance(error, NotImplementedError):
        return [doc.diag(("kind",), str(error))]
    return [located_diagnostic(str(error), doc.diag((), str(error)))]


def located_diagnostic(message: str, fallback: Diagnostic) -> Diagnostic:
    """Build errors often already name `file:line:col: path:`; keep that location."""
    m = _LOCATED.match(message)
    if m:
        return Diagnostic(m["file"], int(m["line"]), int(m["col"]), m["path"], m["msg"])
    return dataclasses.replace(fallback, message=message)


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
