"""Validation = identify the kind, check the JSON Schema, then the kind's semantic checks.

Every problem is reported (not just the first), each as `file:line:col: path: message`.
Schema messages are rewritten into the words a policy author uses ("unknown field
"protocl" (did you mean "protocol"?)") instead of jsonschema's internals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

try:
    from jsonschema import _keywords as _jsonschema_keywords
except ImportError:  # pragma: no cover - jsonschema < 4.18
    from jsonschema import _validators as _jsonschema_keywords  # type: ignore[no-redef]

from ..kinds import Identified, Reporter, identify
from ..kinds.base import Model
from ..resources import SCHEMAS_DIR
from .diagnostics import Diagnostic, did_you_mean
from .load import Document, load_paths

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass
class Validated:
    """A document that passed validation, with its kind resolved and its typed model
    (built once, by the kind's checks; compile reads it instead of parsing again)."""

    doc: Document
    ident: Identified
    name: str
    model: Model


@dataclass
class ValidationResult:
    policies: list[Validated] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: int = 0

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class ValidationMemo:
    """Per policy file, its documents and their validation, reused while the file is
    unchanged (device, inode, size, mtime and ctime in ns) and every document in it
    validated and is of a kind whose model depends on the document alone
    (`Kind.self_contained`; XDPBlocklist reads `sourceFiles`, so it is always checked
    again). The controller keeps one across `watch` cycles: an edit to one policy no
    longer re-parses a 10k-CIDR NetworkPolicy beside it."""

    files: dict[str, tuple[tuple[int, ...], list[Document], list[Diagnostic], list[Any]]] = field(
        default_factory=dict)
    reused: int = 0  # documents reused by the last validate_paths
    compiled: dict[Any, Any] = field(default_factory=dict)  # policy.compile.compile_validation's memo

    def key(self, f: Path) -> tuple[int, ...] | None:
        try:
            st = f.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def validate_paths(paths: Iterable[str | Path], lenient: bool = False,
                   memo: ValidationMemo | None = None) -> ValidationResult:
    from ..kinds.xdp.sources import current_roots, root_for, tree_roots

    paths = list(paths)
    roots = current_roots() or tree_roots(paths)
    if memo is not None and not lenient:
        return _validate_with_memo(paths, roots, memo)
    docs, diags = load_paths(paths)
    for doc in docs:  # files a policy may read (sourceFiles) stay inside its tree
        doc.tree_root = root_for(doc.file, roots)
    result = validate_documents(docs, lenient=lenient)
    result.diagnostics[:0] = diags
    result.files = len({d.file for d in docs} | {d.file for d in diags})
    return result


def _validate_with_memo(paths: list[str | Path], roots: Any, memo: ValidationMemo) -> ValidationResult:
    from ..kinds.xdp.sources import root_for
    from .load import iter_policy_files

    docs: list[Document] = []
    diags: list[Diagnostic] = []
    results: list[Any] = []
    fresh: dict[str, Any] = {}
    memo.reused = 0
    for f in iter_policy_files(paths):
        key, hit = memo.key(f), memo.files.get(str(f))
        if hit is not None and key is not None and hit[0] == key:
            memo.reused += len(hit[1])
        else:
            fdocs, fdiags = load_paths([f])
            for doc in fdocs:
                doc.tree_root = root_for(doc.file, roots)
            hit = (key or (), fdocs, fdiags, [validate_document(doc) for doc in fdocs])
        if key is not None and not hit[2] and all(v is not None and getattr(v.ident.kind, "self_contained", False)
                                                  for v, _ in hit[3]):
            fresh[str(f)] = hit
        docs += hit[1]
        diags += hit[2]
        results += hit[3]
    memo.files = fresh
    result = _collect(zip(docs, results, strict=True))
    result.diagnostics[:0] = diags
    result.files = len({d.file for d in docs} | {d.file for d in diags})
    return result


def validate_documents(docs: Iterable[Document], lenient: bool = False) -> ValidationResult:
    return _collect((doc, validate_document(doc, lenient=lenient)) for doc in docs)


def _collect(checked: Iterable[tuple[Document, tuple[Validated | None, list[Diagnostic]]]]) -> ValidationResult:
    result = ValidationResult()
    seen: dict[tuple[str, str], Document] = {}
    for doc, (validated, diags) in checked:
        result.diagnostics.extend(diags)
        if validated is None:
            continue
        key = getattr(validated.model, "identity", None) or (validated.ident.kind.kind, validated.name)
        if key in seen:
            first = seen[key]
            line, col = first.pos(("metadata", "name"))
            result.diagnostics.append(doc.diag(
                ("metadata", "name"),
                f'duplicate {key[0]} "{key[1]}" (also defined at {first.file}:{line}:{col})',
            ))
            continue
        seen[key] = doc
        result.policies.append(validated)
    return result


def validate_document(doc: Document, lenient: bool = False) -> tuple[Validated | None, list[Diagnostic]]:
    ident = identify(doc)
    if isinstance(ident, Diagnostic):
        return None, [ident]
    notes = prune_foreign_top_level(doc, ident)
    diags = schema_diagnostics(doc, ident.schema_file)
    if diags:
        return None, notes + diags
    kind = ident.kind()
    name = kind.policy_name(doc)
    if name is None:
        return None, [doc.diag(("metadata",), 'missing required field "metadata.name"')]
    if ident.format is not None and not DNS1123_LABEL.match(name):
        name, note = label_for_foreign_name(doc, name)
        if note is not None:
            notes.append(note)
    if not DNS1123_LABEL.match(name) or len(name) > 63:
        return None, notes + [doc.diag(("metadata", "name"),
                              f'"{name}" is not a valid name: lower-case letters, digits and "-", '
                              "starting and ending with a letter or digit, at most 63 characters")]
    report = Reporter(doc, lenient=lenient)
    report.diagnostics.extend(notes)
    try:
        model = kind.parse(doc, report)
    except Exception as e:  # a checker bug must surface as a diagnostic, not a traceback
        report.error((), f"internal error while checking {ident.label}: {type(e).__name__}: {e}")
    if report.failed:
        return None, report.diagnostics
    if report.drops:
        for path in sorted(report.drops, key=_drop_order, reverse=True):
            _delete(doc.data, path)
        # --lenient removed parts of the document: the model is rebuilt from what remains
        model = kind.parse(doc, Reporter(doc, lenient=True))
    return Validated(doc, ident, name, model), report.diagnostics


# --------------------------------------------------------------------------- foreign files


def prune_foreign_top_level(doc: Document, ident: Identified) -> list[Diagnostic]:
    """Kubernetes prunes unknown top-level fields of a custom resource (kubectl warns);
    upstream examples rely on that (a top-level `description`). Warn and ignore them,
    as the API server would, instead of rejecting a file users already apply."""
    validator = schema_validator(ident.schema_file) if ident.format is not None else None
    if validator is None or not isinstance(doc.data, dict):
        return []
    schema = validator.schema
    known = schema.get("properties", {})
    if schema.get("additionalProperties", True) is not False or not {"apiVersion", "kind"} <= set(known):
        return []
    notes = []
    for key in [k for k in doc.data if k not in known]:
        notes.append(doc.diag((key,), f'unknown top-level field "{key}"{did_you_mean(key, known)}: '
                              "Kubernetes prunes it when applying this resource; ignored", "warning"))
        del doc.data[key]
    return notes


def label_for_foreign_name(doc: Document, name: str) -> tuple[str, Diagnostic | None]:
    """Kubernetes names may be DNS-1123 subdomains (dots, up to 253 characters); bpffs path
    components cannot hold dots, so such a name is applied under a derived label."""
    if not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        return name, None
    label = name.replace(".", "-")
    if len(label) > 63:
        import hashlib

        label = label[:56].rstrip("-") + "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    doc.data["metadata"]["name"] = label
    return label, doc.diag(("metadata", "name"), f'"{name}" is applied as "{label}" '
                           "(bpffs path components cannot contain dots)", "warning")


# --------------------------------------------------------------------------- schema


# Keywords a scalar item schema may use for the fast `items` path below.
_SIMPLE_ITEM_KEYS = frozenset({"type", "minLength", "maxLength", "pattern", "enum", "description",
                               "title", "default", "examples"})
_FAST_ITEMS_MIN = 64


def _simple_item_check(items: Any) -> Any:
    """A predicate that is True only for items `items` certainly accepts, or None when the
    item schema is not a plain scalar schema. Conservative: anything it cannot decide is
    validated the slow way, so errors and their messages are jsonschema's own."""
    if not isinstance(items, dict) or not items or not set(items) <= _SIMPLE_ITEM_KEYS:
        return None
    t = items.get("type")
    if t not in (None, "string", "integer"):
        return None
    lo, hi = items.get("minLength"), items.get("maxLength")
    pattern = re.compile(items["pattern"]) if "pattern" in items else None
    enum = frozenset(e for e in items.get("enum", ()) if isinstance(e, str)) if "enum" in items else None

    def ok(x: Any) -> bool:
        if t == "integer":
            return type(x) is int and not lo and not hi and pattern is None and enum is None
        if type(x) is not str:
            return False
        if lo is not None and len(x) < lo or hi is not None and len(x) > hi:
            return False
        if pattern is not None and not pattern.search(x):
            return False
        return enum is None or x in enum

    return ok


def _fast_items(validator: Any, items: Any, instance: Any, schema: Any) -> Any:
    """jsonschema's `items`, with a fast path for long lists of scalars: a million-address
    inline `sources:` list is checked in a loop instead of a million validator descents."""
    if (isinstance(instance, list) and len(instance) >= _FAST_ITEMS_MIN
            and "prefixItems" not in schema):
        ok = _simple_item_check(items)
        if ok is not None:
            for index, item in enumerate(instance):
                if not ok(item):
                    yield from validator.descend(item, items, path=index)
            return
    yield from _jsonschema_keywords.items(validator, items, instance, schema)


_FastValidator = jsonschema.validators.extend(Draft202012Validator, {"items": _fast_items})


@cache
def schema_validator(schema_file: str) -> Draft202012Validator | None:
    path = SCHEMAS_DIR / schema_file
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    registry_base = path.resolve().as_uri()
    schema.setdefault("$id", registry_base)
    # Checking the schema against the metaschema costs more than validating 1,000
    # policies; tests/policy/test_schemas.py does it once instead of every run.
    return _FastValidator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_diagnostics(doc: Document, schema_file: str) -> list[Diagnostic]:
    validator = schema_validator(schema_file)
    if validator is None:
        return []
    out: dict[tuple[Any, ...], Diagnostic] = {}
    for error in validator.iter_errors(doc.data):
        for path, message in _explain(error):
            key = (tuple(str(p) for p in path), message)
            out.setdefault(key, doc.diag(path, message))
    return sorted(out.values(), key=lambda d: (d.line, d.col, d.path))


def _explain(error: jsonschema.ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    """Turn one jsonschema error into (path, message) pairs in a policy author's words."""
    path: tuple[str | int, ...] = tuple(error.absolute_path)
    v, inst, schema = error.validator, error.instance, error.schema
    if v in ("oneOf", "anyOf") and error.context:
        best = _best_context(error)
        if best is not None:
            return _explain(best)
    if v == "additionalProperties" and isinstance(inst, dict):
        known = list(schema.get("properties", {}))
        allowed = schema.get("additionalProperties")
        pattern = schema.get("patternProperties", {})
        extra = [k for k in inst if k not in known and not any(re.search(p, k) for p in pattern)]
        if allowed is False and extra:
            return [((*path, k), f'unknown field "{k}"{did_you_mean(k, known)}') for k in extra]
    if v == "unevaluatedProperties" and isinstance(inst, dict):
        known = list(schema.get("properties", {}))
        extra = re.findall(r"'([^']+)'", error.message.split("(")[-1])
        return [((*path, k), f'unknown field "{k}"{did_you_mean(k, known)}') for k in extra] or [(path, error.message)]
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else str(error.validator_value)
        return [(path, f'missing required field "{missing}"')]
    if v == "type":
        return [(path, f"expected {_types(error.validator_value)}, got {_describe(inst)}")]
    if v == "enum":
        choices = [str(c) for c in error.validator_value]
        hint = did_you_mean(str(inst), choices, cutoff=0.6) if isinstance(inst, str) else ""
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        return [(path, f"{_describe(inst)} is not one of: {shown}{hint}")]
    if v == "const":
        return [(path, f"must be {json.dumps(error.validator_value)}, got {_describe(inst)}")]
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": "at least", "maximum": "at most",
                "exclusiveMinimum": "greater than", "exclusiveMaximum": "less than"}[v]
        return [(path, f"{_describe(inst)} is out of range: must be {word} {error.validator_value}")]
    if v in ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"):
        return [(path, _size_message(v, error.validator_value, inst))]
    if v == "pattern":
        desc = schema.get("description")
        return [(path, f"{_describe(inst)} is not valid" + (f": {desc}" if desc else f" (must match {error.validator_value})"))]
    if v == "not" and isinstance(schema.get("not"), dict) and "required" in schema["not"]:
        return [(path, f"{' and '.join(schema['not']['required'])} cannot be combined here")]
    return [(path, error.message)]


def _best_context(error: jsonschema.ValidationError) -> jsonschema.ValidationError | None:
    """Among oneOf/anyOf branches, the error from the branch that got furthest."""
    candidates = [e for e in error.context or [] if e.validator not in ("type", "const")]
    candidates = candidates or list(error.context or [])
    if not candidates:
        return None
    return max(candidates, key=lambda e: (len(e.absolute_path), e.validator != "required"))


def _size_message(v: str, limit: Any, inst: Any) -> str:
    what = {"Items": "items", "Length": "characters", "Properties": "fields"}[v[3:]]
    bound = "at least" if v.startswith("min") else "at most"
    return f"must have {bound} {limit} {what} (has {len(inst)})"


def _types(t: Any) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "null"}
    if isinstance(t, list):
        return " or ".join(names.get(x, x) for x in t)
    return names.get(t, str(t))


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + '..."'


# --------------------------------------------------------------------------- lenient drops


def _drop_order(path: tuple[str | int, ...]) -> tuple[Any, ...]:
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in path)


def _delete(data: Any, path: tuple[str | int, ...]) -> None:
    node = data
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    try:
        del node[path[-1]]
    except (KeyError, IndexError, TypeError):
        pass
