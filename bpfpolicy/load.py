"""Load policy files (YAML, multi-document, and JSON) into plain data that remembers
where every node came from, so later layers can say `file:line:col` about any path.

YAML goes through libyaml's composer (fast, YAML 1.1 like Kubernetes' go-yaml); JSON
through the stdlib decoder, with positions recovered by a small scanner only when a
diagnostic needs one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Diagnostic, Severity, format_path

try:  # libyaml is in PyPI's PyYAML wheels; the pure loader is the slow fallback
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

MAX_FILE_BYTES = 16 * 1024 * 1024
POLICY_SUFFIXES = (".yaml", ".yml", ".json")

PathT = tuple[str | int, ...]
Pos = tuple[int, int]


@dataclass
class Document:
    """One policy document: its data plus a map from JSON path to source position."""

    file: str
    index: int
    data: Any
    value_pos: dict[PathT, Pos] = field(default_factory=dict, repr=False)
    key_pos: dict[PathT, Pos] = field(default_factory=dict, repr=False)
    text: str | None = field(default=None, repr=False)
    _located: bool = field(default=True, repr=False)

    def pos(self, path: Iterable[str | int]) -> Pos:
        """Line and column of `path`, or of its nearest ancestor we know about.

        A mapping key's own position is preferred (an unknown or unsupported field is
        reported where the field's name is written)."""
        self._ensure_positions()
        p: PathT = tuple(path)
        while True:
            if p and isinstance(p[-1], str) and p in self.key_pos:
                return self.key_pos[p]
            if p in self.value_pos:
                return self.value_pos[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def diag(
        self, path: Iterable[str | int], message: str, severity: Severity = "error"
    ) -> Diagnostic:
        p = tuple(path)
        line, col = self.pos(p)
        return Diagnostic(self.file, line, col, format_path(p), message, severity)

    def get(self, path: Iterable[str | int], default: Any = None) -> Any:
        node = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return default
        return node

    def _ensure_positions(self) -> None:
        if self._located or self.text is None:
            return
        self._located = True
        try:
            self.value_pos, self.key_pos = _JsonLocator(self.text).locate()
        except Exception:  # positions are a convenience; never fail a diagnostic on them
            pass


class LoadError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic


# --------------------------------------------------------------------------- files


def iter_policy_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Expand directories recursively (sorted, hidden entries skipped); keep files as given."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for child in sorted(p.rglob("*")):
                rel = child.relative_to(p).parts
                if any(part.startswith(".") for part in rel):
                    continue
                if child.is_file() and child.suffix.lower() in POLICY_SUFFIXES:
                    yield child
        else:
            yield p


def load_paths(paths: Iterable[str | Path]) -> tuple[list[Document], list[Diagnostic]]:
    """Load every document under `paths`; problems become diagnostics, never exceptions."""
    docs: list[Document] = []
    diags: list[Diagnostic] = []
    for f in iter_policy_files(paths):
        try:
            docs.extend(load_file(f))
        except LoadError as e:
            diags.append(e.diagnostic)
    return docs, diags


def load_file(path: str | Path) -> list[Document]:
    name = str(path)
    text = _read_text(Path(path), name)
    if not text.strip():
        raise LoadError(Diagnostic(name, 1, 1, "$", "file is empty: expected a policy document"))
    if _looks_like_json(Path(path), text):
        return [_load_json(name, text)]
    return _load_yaml(name, text)


def _read_text(path: Path, name: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LoadError(
                Diagnostic(
                    name, 1, 1, "$",
                    f"file is {size / 2**20:.1f} MiB; policy files are limited to "
                    f"{MAX_FILE_BYTES // 2**20} MiB (keep large address lists in sourceFiles)",
                )
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LoadError(Diagnostic(name, 0, 0, "$", "no such file or directory")) from None
    except IsADirectoryError:
        raise LoadError(Diagnostic(name, 0, 0, "$", "is a directory")) from None
    except PermissionError:
        raise LoadError(Diagnostic(name, 0, 0, "$", "permission denied")) from None
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise LoadError(Diagnostic(name, line, 1, "$", "binary data (NUL byte): not a policy file"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise LoadError(
            Diagnostic(name, line, col, "$", f"not UTF-8 text (invalid byte 0x{raw[e.start]:02x})")
        ) from None
    return text.removeprefix("\ufeff")


def _looks_like_json(path: Path, text: str) -> bool:
    if path.suffix.lower() == ".json":
        return True
    if path.suffix.lower() in (".yaml", ".yml"):
        return False
    return text.lstrip().startswith(("{", "["))


# --------------------------------------------------------------------------- YAML

_constructor = yaml.SafeLoader("")  # only its scalar constructors are used


def _load_yaml(name: str, text: str) -> list[Document]:
    docs: list[Document] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        raise LoadError(Diagnostic(name, line, col, "$", f"YAML syntax error: {msg}")) from None
    except yaml.YAMLError as e:
        raise LoadError(Diagnostic(name, 1, 1, "$", f"YAML error: {e}")) from None
    for index, node in enumerate(nodes):
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            continue
        builder = _YamlBuilder(name)
        data = builder.build(node, ())
        docs.append(Document(name, index, data, builder.value_pos, builder.key_pos))
    if not docs:
        raise LoadError(Diagnostic(name, 1, 1, "$", "file has no documents: expected a policy"))
    return docs


class _YamlBuilder:
    """Turns composed YAML nodes into plain data, recording every node's position and
    refusing duplicate keys (PyYAML would silently keep the last one)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.value_pos: dict[PathT, Pos] = {}
        self.key_pos: dict[PathT, Pos] = {}
        self._depth = 0

    def build(self, node: yaml.Node, path: PathT) -> Any:
        self.value_pos[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        self._depth += 1
        if self._depth > 100:
            raise self._error(node, path, "nesting deeper than 100 levels")
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self._depth -= 1

    def _mapping(self, node: yaml.MappingNode, path: PathT) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged = self.build(value_node, path)
                for m in merged if isinstance(merged, list) else [merged]:
                    if isinstance(m, dict):
                        for k, v in m.items():
                            out.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._error(key_node, path, "mapping keys must be plain strings")
            key = str(self._scalar(key_node, path))
            child = (*path, key)
            if key in out:
                first = self.key_pos[child]
                raise self._error(
                    key_node, child, f'duplicate key "{key}" (first defined at line {first[0]})'
                )
            self.key_pos[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, child)
        return out

    def _scalar(self, node: yaml.Node, path: PathT) -> Any:
        try:
            value = _constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as e:
            raise self._error(node, path, f"bad value: {e.problem}") from None
        if isinstance(value, bytes):
            return value.decode("latin-1")
        if not isinstance(value, str | int | float | bool | type(None)):
            return node.value  # timestamps etc.: keep what the user wrote
        return value

    def _error(self, node: yaml.Node, path: PathT, msg: str) -> LoadError:
        m = node.start_mark
        return LoadError(Diagnostic(self.name, m.line + 1, m.column + 1, format_path(path), msg))


# --------------------------------------------------------------------------- JSON


def _load_json(name: str, text: str) -> Document:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise _DuplicateKey(k)
            out[k] = v
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise LoadError(Diagnostic(name, e.lineno, e.colno, "$", f"JSON syntax error: {e.msg}")) from None
    except _DuplicateKey as e:
        doc = Document(name, 0, None, text=text, _located=False)
        value_pos, key_pos, dup = _JsonLocator(text).locate_duplicate()
        line, col = dup[1] if dup else (1, 1)
        path = format_path(dup[0]) if dup else "$"
        del doc
        raise LoadError(Diagnostic(name, line, col, path, f'duplicate key "{e.key}"')) from None
    except RecursionError:
        raise LoadError(Diagnostic(name, 1, 1, "$", "nesting too deep")) from None
    return Document(name, 0, data, text=text, _located=False)


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<punct>[{}\[\]:,])|(?P<lit>[^\s{}\[\]:,"]+))', re.S)


class _JsonLocator:
    """Re-scans valid JSON text to recover the position of every key and value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = [(m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup)) for m in _TOKEN.finditer(text) if m.lastgroup]
        self.i = 0
        self.value_pos: dict[PathT, Pos] = {}
        self.key_pos: dict[PathT, Pos] = {}
        self.duplicate: tuple[PathT, Pos] | None = None
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def locate(self) -> tuple[dict[PathT, Pos], dict[PathT, Pos]]:
        self._value(())
        return self.value_pos, self.key_pos

    def locate_duplicate(self) -> tuple[dict[PathT, Pos], dict[PathT, Pos], tuple[PathT, Pos] | None]:
        try:
            self._value(())
        except IndexError:
            pass
        return self.value_pos, self.key_pos, self.duplicate

    def _at(self, offset: int) -> Pos:
        import bisect

        line = bisect.bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def _value(self, path: PathT) -> None:
        kind, tok, off = self.tokens[self.i]
        self.value_pos[path] = self._at(off)
        self.i += 1
        if tok == "{":
            seen: set[str] = set()
            while self.tokens[self.i][1] != "}":
                _, ktok, koff = self.tokens[self.i]
                key = json.loads(ktok)
                child = (*path, key)
                if key in seen and self.duplicate is None:
                    self.duplicate = (child, self._at(koff))
                seen.add(key)
                self.key_pos[child] = self._at(koff)
                self.i += 2  # key and ':'
                self._value(child)
                if self.tokens[self.i][1] == ",":
                    self.i += 1
            self.i += 1
        elif tok == "[":
            n = 0
            while self.tokens[self.i][1] != "]":
                self._value((*path, n))
                n += 1
                if self.tokens[self.i][1] == ",":
                    self.i += 1
            self.i += 1
