"""Load policy files (YAML, multi-document, and JSON) into plain data that remembers
where every node came from, so later layers can say `file:line:col` about any path.

YAML goes through libyaml's composer (fast, YAML 1.1 like Kubernetes' go-yaml); JSON
through the stdlib decoder, with positions recovered by a small scanner only when a
diagnostic needs one.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .diagnostics import Diagnostic, Severity, format_path

try:  # libyaml is in PyPI's PyYAML wheels; the pure parser is the slow fallback
    from yaml.cyaml import CParser as _CParser
except ImportError:  # pragma: no cover
    _CParser = None  # type: ignore[assignment,misc]

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
    # sequence path -> position of each item (scalars in sequences have no value_pos entry)
    item_pos: dict[PathT, list[Pos]] = field(default_factory=dict, repr=False)
    # the policy tree this file was loaded from (set by validate_paths); see source_name
    tree_root: Path | None = field(default=None, repr=False)

    @property
    def source_name(self) -> str:
        """The file's name relative to its policy tree, as artifacts record it: what CI
        compiled matches the host whatever the working directory or the path's spelling
        (`pol`, `/abs/pol`, `cd pol && .`). Diagnostics keep `file`, as the user wrote it."""
        if self.tree_root is None:
            return self.file
        rel = os.path.relpath(os.path.realpath(self.file), os.path.realpath(self.tree_root))
        return self.file if rel.startswith("..") else rel

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
            if p and type(p[-1]) is int:
                items = self.item_pos.get(p[:-1])
                if items is not None and 0 <= p[-1] < len(items):
                    return items[p[-1]]
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
                if child.is_file() and child.suffix.lower() in POLICY_SUFFIXES \
                        and not child.name.endswith((".test.yaml", ".test.yml")):  # PolicyTest files (bpfpolicy test)
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
    raw = read_regular_file(path, name, MAX_FILE_BYTES)
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


def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "is a FIFO (named pipe)"),
                       (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"),
                       (stat.S_ISSOCK, "is a socket")):
        if test(mode):
            return what
    return "is not a regular file"


def read_regular_file(path: str | Path, name: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read a regular file of at most `limit` bytes, or raise a located LoadError.

    FIFOs, devices (/dev/zero) and sockets are refused before they are opened (stat),
    the open itself is non-blocking (a FIFO swapped in after the stat cannot hang it),
    and the opened file is checked again (fstat) before a byte is read."""
    fd = _open_regular(path, name)
    try:
        _check_opened(fd, name, limit)
        return _read_bounded(fd, name, limit)
    except OSError as e:
        raise _refused_file(name, e.strerror or str(e)) from None
    finally:
        os.close(fd)


def _refused_file(name: str, message: str) -> LoadError:
    return LoadError(Diagnostic(name, 0, 0, "$", message))


def _open_regular(path: str | Path, name: str) -> int:
    """stat, refuse what is not a regular file, then open without blocking."""
    try:
        what = _kind_of(os.stat(path).st_mode)
        if what is not None:
            raise _refused_file(name, f"{what}: policy files must be regular files")
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _refused_file(name, "no such file or directory") from None
    except PermissionError:
        raise _refused_file(name, "permission denied") from None
    except OSError as e:
        raise _refused_file(name, e.strerror or str(e)) from None


def _check_opened(fd: int, name: str, limit: int) -> None:
    """fstat the opened file: still a regular file (not swapped since the stat), within `limit`."""
    st = os.fstat(fd)
    what = _kind_of(st.st_mode)
    if what is not None:
        raise _refused_file(name, f"{what}: policy files must be regular files")
    if st.st_size > limit:
        raise LoadError(Diagnostic(
            name, 1, 1, "$",
            f"file is {st.st_size / 2**20:.1f} MiB; policy files are limited to "
            f"{limit // 2**20} MiB (keep large address lists in sourceFiles)"))


def _read_bounded(fd: int, name: str, limit: int) -> bytes:
    """Read to the end, refusing a file that grows past `limit` while it is read."""
    chunks = []
    total = 0
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
        if total > limit:
            raise LoadError(Diagnostic(name, 1, 1, "$", f"file is larger than "
                                       f"{limit // 2**20} MiB; policy files are limited to that"))
        chunks.append(chunk)
    return b"".join(chunks)


def _looks_like_json(path: Path, text: str) -> bool:
    if path.suffix.lower() == ".json":
        return True
    if path.suffix.lower() in (".yaml", ".yml"):
        return False
    return text.lstrip().startswith(("{", "["))


# --------------------------------------------------------------------------- YAML
#
# libyaml parses (its event stream is fast); everything after that is ours, because
# PyYAML's composer and constructors are where the time and the attack surface are:
#
# * Core schema only. Plain scalars resolve as YAML 1.1 does in Kubernetes (go-yaml):
#   null, bool (true/false/yes/no/on/off), int (decimal, 0x, 0o, 0b, leading-0 octal),
#   float (with a dot, .inf, .nan). Everything else, including text that looks like a
#   timestamp ("2024-01-01") or a base-60 number ("1:30", which PyYAML would turn into
#   90), stays the string that was written.
# * Explicit tags: !!str !!int !!float !!bool !!null !!seq !!map. `!!timestamp` is
#   refused (no policy field is a date; a date is written as a plain string), and so is
#   every other tag (!!binary, !!set, !!python/..., local !tags): a located error.
# * Integers are bounded before conversion (MAX_INT_DIGITS).
# * Merge keys follow the YAML 1.1 merge spec: `<<: *a` or `<<: [*a, *b]` (earlier
#   mappings win), explicit keys override merged ones wherever they are written, and a
#   `<<` whose value is not a mapping (or a list of mappings) is a located error.
# * Aliases are copied, and every copied node counts against an expansion budget
#   (ALIAS_BUDGET_*), so a "billion laughs" document is refused at the alias that
#   crossed it instead of expanding for minutes.

MAX_DEPTH = 100
# Forty digits hold any 128-bit value; no policy field needs more, and int() of a
# multi-thousand-digit string is both slow and refused by CPython (4300-digit limit).
MAX_INT_DIGITS = 40
# Nodes that aliases may add on top of the document's own nodes: at most this factor
# times the nodes written so far, but always at least ALIAS_BUDGET_FLOOR, never above
# ALIAS_BUDGET_MAX. Anchors in real policies (shared selectors, port lists) stay far
# below; a nine-deep, nine-wide alias bomb (387M nodes) is refused at ~100k.
ALIAS_BUDGET_FACTOR = 10
ALIAS_BUDGET_FLOOR = 100_000
ALIAS_BUDGET_MAX = 1_000_000

_T = "tag:yaml.org,2002:"
_BOOL = {"yes": True, "Yes": True, "YES": True, "no": False, "No": False, "NO": False,
         "true": True, "True": True, "TRUE": True, "false": False, "False": False,
         "FALSE": False, "on": True, "On": True, "ON": True, "off": False, "Off": False,
         "OFF": False}
_NULL = {"", "~", "null", "Null", "NULL"}
_INT = re.compile(r"[-+]?(?:0b[0-1_]+|0o?[0-7_]+|0x[0-9a-fA-F_]+|0|[1-9][0-9_]*)")
_FLOAT = re.compile(r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_FLOAT_EXPLICIT = re.compile(r"[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?")
# first characters of plain scalars that may be something other than a string
_MAYBE = frozenset("0123456789+-.~nNtTfFyYoO")
_SCALAR_TAGS = {_T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"}


class _Refused(Exception):
    def __init__(self, mark: Any, message: str, path: str = "$") -> None:
        self.mark, self.message, self.path = mark, message, path


def _int_value(text: str, mark: Any) -> int:
    s = text.replace("_", "")
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    if s.startswith(("0x", "0X")):
        base, digits = 16, s[2:]
    elif s.startswith(("0b", "0B")):
        base, digits = 2, s[2:]
    elif s.startswith(("0o", "0O")):
        base, digits = 8, s[2:]
    elif len(s) > 1 and s[0] == "0":
        base, digits = 8, s[1:]
    else:
        base, digits = 10, s
    if len(digits) > MAX_INT_DIGITS:
        raise _Refused(mark, f"integer with {len(digits)} digits: at most {MAX_INT_DIGITS} "
                       "digits (no policy field holds a larger number)")
    try:
        return sign * int(digits, base)
    except ValueError:
        raise _Refused(mark, f'"{_short(text)}" is not an integer') from None


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _plain(value: str, mark: Any) -> Any:
    """Resolve a plain (unquoted, untagged) scalar."""
    if not value:
        return None
    if value[0] not in _MAYBE:
        return value
    if "/" in value or ":" in value or value.count(".") > 1:  # addresses, CIDRs, paths
        return value
    if value in _NULL:
        return None
    b = _BOOL.get(value)
    if b is not None:
        return b
    if _INT.fullmatch(value):
        return _int_value(value, mark)
    if _FLOAT.fullmatch(value):
        return _float_value(value, mark)
    return value


def _float_value(text: str, mark: Any) -> float:
    s = text.replace("_", "")
    low = s.lower()
    if low.lstrip("+-") in (".inf", ".nan"):
        v = float(low.replace(".", ""))
        return v
    if len(s) > 1000 or not _FLOAT_EXPLICIT.fullmatch(s) or not any(c.isdigit() for c in s):
        raise _Refused(mark, f'"{_short(text)}" is not a number')
    return float(s)


def _tagged(tag: str, value: str, mark: Any) -> Any:
    if tag == _T + "str":
        return value
    if tag == _T + "int":
        if not _INT.fullmatch(value.strip()):
            raise _Refused(mark, f'!!int "{_short(value)}" is not an integer (decimal, 0x, 0o or 0b)')
        return _int_value(value.strip(), mark)
    if tag == _T + "float":
        v = value.strip()
        if v.lower().lstrip("+-") in (".inf", ".nan"):
            return _float_value(v, mark)
        return _float_value(v, mark)
    if tag == _T + "bool":
        if value not in _BOOL:
            raise _Refused(mark, f'!!bool "{_short(value)}" is not true or false')
        return _BOOL[value]
    return None  # !!null


def _tag_problem(tag: str) -> str:
    short = "!!" + tag[len(_T):] if tag.startswith(_T) else tag
    if tag == _T + "timestamp":
        return ("!!timestamp is not supported: no policy field is a date "
                "(write the value as a plain string)")
    return f"unsupported YAML tag {short}: only !!str, !!int, !!float, !!bool, !!null, !!seq, !!map"


def _count(value: Any) -> int:
    """Nodes in a value (for the alias budget)."""
    if isinstance(value, dict):
        return 1 + sum(_count(v) for v in value.values()) + len(value)
    if isinstance(value, list):
        return 1 + sum(_count(v) for v in value)
    return 1


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _load_yaml(name: str, text: str) -> list[Document]:
    try:
        return _YamlReader(name).read(text)
    except _Refused as e:
        m = e.mark
        line, col = (m.line + 1, m.column + 1) if m is not None else (1, 1)
        raise LoadError(Diagnostic(name, line, col, e.path, e.message)) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        raise LoadError(Diagnostic(name, line, col, "$", f"YAML syntax error: {msg}")) from None
    except yaml.reader.ReaderError as e:  # a control character: locate it in the text
        raw = text.encode("utf-8")[: max(e.position, 0)]
        line, col = raw.count(b"\n") + 1, len(raw) - (raw.rfind(b"\n") + 1) + 1
        what = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        raise LoadError(Diagnostic(name, line, col, "$", f"YAML syntax error: unacceptable "
                                   f"character {what}: {e.reason}")) from None
    except yaml.YAMLError as e:
        raise LoadError(Diagnostic(name, 1, 1, "$", f"YAML error: {e}")) from None


class _Frame:
    __slots__ = ("kind", "path", "items", "pos", "pairs", "merges", "key", "keypos", "keymark",
                 "anchor", "start", "mark")

    def __init__(self, kind: str, path: PathT, anchor: str | None, start: int, mark: Any) -> None:
        self.kind, self.path, self.anchor, self.start, self.mark = kind, path, anchor, start, mark
        self.items: list[Any] = []
        self.pos: list[Pos] = []
        self.pairs: dict[str, Any] = {}
        self.merges: list[tuple[Any, Any]] = []
        self.key: Any = _NOKEY
        self.keypos: Pos = (0, 0)
        self.keymark: Any = None


_NOKEY = object()
_MERGE = object()


class _YamlReader:
    """Builds plain data straight from libyaml's events (no PyYAML node objects), recording
    positions: value_pos/key_pos per path, and one position list per sequence (so a
    million-item inline list does not need a million path tuples)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def read(self, text: str) -> list[Document]:
        parser = _CParser(text.encode("utf-8")) if _CParser is not None else None
        if parser is None:  # pragma: no cover - PyYAML without libyaml
            events: Iterator[Any] = iter(yaml.parse(text, Loader=yaml.SafeLoader))
            get = events.__next__
        else:
            get = parser.get_event
        docs: list[Document] = []
        index = -1
        ScalarE, AliasE = yaml.ScalarEvent, yaml.AliasEvent
        SeqS, SeqE = yaml.SequenceStartEvent, yaml.SequenceEndEvent
        MapS, MapE = yaml.MappingStartEvent, yaml.MappingEndEvent
        DocS, DocE, StreamE = yaml.DocumentStartEvent, yaml.DocumentEndEvent, yaml.StreamEndEvent
        while True:
            ev = get()
            t = type(ev)
            if t is StreamE or ev is None:
                break
            if t is DocS:
                index += 1
                self._begin()
                continue
            if t is DocE or t is yaml.StreamStartEvent:
                continue
            # the document's root node
            data = self._node(ev, get, (ScalarE, AliasE, SeqS, SeqE, MapS, MapE))
            if data is None:
                continue
            docs.append(Document(self.name, index, data, self.value_pos, self.key_pos,
                                 item_pos=self.item_pos))
        if not docs:
            raise LoadError(Diagnostic(self.name, 1, 1, "$", "file has no documents: expected a policy"))
        return docs

    def _begin(self) -> None:
        self.value_pos: dict[PathT, Pos] = {}
        self.key_pos: dict[PathT, Pos] = {}
        self.item_pos: dict[PathT, list[Pos]] = {}
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.own = 0  # nodes written in the document
        self.added = 0  # nodes added by alias expansion

    def _error(self, mark: Any, path: PathT, message: str) -> _Refused:
        return _Refused(mark, message, format_path(path))

    def _node(self, ev: Any, get: Any, types: tuple[Any, ...]) -> Any:
        """Consume one whole node starting with event `ev`; return its data."""
        ScalarE, AliasE, SeqS, SeqE, MapS, MapE = types
        stack: list[_Frame] = []
        value_pos, key_pos, item_pos = self.value_pos, self.key_pos, self.item_pos
        plain, maybe = _plain, _MAYBE
        while True:
            t = type(ev)
            top = stack[-1] if stack else None
            done = False
            if t is ScalarE:
                self.own += 1
                v = ev.value
                tag = ev.tag
                try:
                    if tag is None or tag == "!":
                        if tag is None and ev.implicit[0] and not ev.style:
                            value = v if (v and v[0] not in maybe) else plain(v, ev.start_mark)
                        else:
                            value = v
                    elif tag in _SCALAR_TAGS:
                        value = _tagged(tag, v, ev.start_mark)
                    else:
                        raise _Refused(ev.start_mark, _tag_problem(tag))
                except _Refused as e:
                    e.path = format_path(_here(top))
                    raise
                if top is not None and top.kind == "map" and top.key is _NOKEY:
                    # a mapping key
                    if v == "<<" and tag is None and ev.implicit[0] and not ev.style:
                        top.key = _MERGE
                    else:
                        top.key = str(value)
                    top.keymark = ev.start_mark
                    top.keypos = (ev.start_mark.line + 1, ev.start_mark.column + 1)
                    ev = get()
                    continue
                if ev.anchor is not None:
                    self.anchors[ev.anchor] = (value, 1)
                path = None  # computed below only where a position is recorded
                done = True
            elif t is AliasE:
                if top is not None and top.kind == "map" and top.key is _NOKEY:
                    raise self._error(ev.start_mark, _here(top), "mapping keys must be plain strings "
                                      "(an alias cannot be a key)")
                anchored = self.anchors.get(ev.anchor)
                if anchored is None:  # libyaml reports this itself; belt and braces
                    raise self._error(ev.start_mark, _here(top), f'unknown alias "*{ev.anchor}"')
                value, size = anchored
                self.added += size
                budget = min(ALIAS_BUDGET_MAX, max(ALIAS_BUDGET_FLOOR, ALIAS_BUDGET_FACTOR * self.own))
                if self.added > budget:
                    raise self._error(ev.start_mark, _here(top), f'alias "*{ev.anchor}" expands the '
                                      f"document past {budget:,} nodes (aliases add "
                                      f"{self.added:,}): refusing an alias bomb")
                value = _copy(value)
                path = _here(top)
                done = True
            elif t is SeqS or t is MapS:
                self.own += 1
                tag = ev.tag
                path = _here(top)
                want = _T + ("seq" if t is SeqS else "map")
                if tag not in (None, "!", want):
                    raise self._error(ev.start_mark, path, _tag_problem(tag))
                if top is not None and top.kind == "map" and top.key is _NOKEY:
                    raise self._error(ev.start_mark, path, "mapping keys must be plain strings")
                if len(stack) >= MAX_DEPTH:
                    raise self._error(ev.start_mark, path, f"nesting deeper than {MAX_DEPTH} levels")
                frame = _Frame("seq" if t is SeqS else "map", path, ev.anchor,
                               self.own + self.added, ev.start_mark)
                stack.append(frame)
                ev = get()
                if t is SeqS:  # fast path: a run of untagged, unanchored scalar items
                    items, positions, n = frame.items, frame.pos, 0
                    while type(ev) is ScalarE and ev.tag is None and ev.anchor is None:
                        v = ev.value
                        if ev.implicit[0] and not ev.style and not (v and v[0] not in maybe):
                            try:
                                v = plain(v, ev.start_mark)
                            except _Refused as e:
                                e.path = format_path((*path, len(items)))
                                raise
                        m = ev.start_mark
                        items.append(v)
                        positions.append((m.line + 1, m.column + 1))
                        n += 1
                        ev = get()
                    self.own += n
                continue
            elif t is SeqE or t is MapE:
                f = stack.pop()
                if f.kind == "seq":
                    value = f.items
                    item_pos[f.path] = f.pos
                else:
                    value = self._merge(f)
                if f.anchor is not None:
                    self.anchors[f.anchor] = (value, self.own + self.added - f.start + 1)
                path = f.path
                ev_mark = f.mark
                top = stack[-1] if stack else None
                done = True
                ev = _Placed(ev_mark)
            else:  # pragma: no cover - stream structure is libyaml's job
                raise self._error(getattr(ev, "start_mark", None), _here(top), f"unexpected YAML event {t.__name__}")
            if done:
                m = ev.start_mark
                p = (m.line + 1, m.column + 1)
                if top is None:
                    value_pos[()] = p
                    return value
                if top.kind == "seq":
                    top.items.append(value)
                    top.pos.append(p)
                    if type(value) is dict or type(value) is list:
                        value_pos[path if path is not None else _here(top)] = p
                else:
                    key = top.key
                    top.key = _NOKEY
                    if key is _MERGE:
                        top.merges.append((value, top.keymark))
                    else:
                        if key in top.pairs:
                            first = key_pos[(*top.path, key)]
                            raise self._error(top.keymark, (*top.path, key), f'duplicate key "{key}" '
                                              f"(first defined at line {first[0]})")
                        top.pairs[key] = value
                        path = (*top.path, key)
                        key_pos[path] = top.keypos
                        value_pos[path] = p
                ev = get()

    def _merge(self, f: _Frame) -> dict[str, Any]:
        if not f.merges:
            return f.pairs
        out = f.pairs
        for value, mark in f.merges:
            sources = value if isinstance(value, list) else [value]
            for m in sources:
                if not isinstance(m, dict):
                    raise self._error(mark, f.path, "<< (merge key) takes a mapping or a list of "
                                      f"mappings, not {_what(m)}")
                for k, v in m.items():
                    if k not in out:
                        out[k] = v
                        self.key_pos[(*f.path, k)] = (mark.line + 1, mark.column + 1)
        return out


def _here(top: _Frame | None) -> PathT:
    """The path of the node about to be added to `top`."""
    if top is None:
        return ()
    if top.kind == "seq":
        return (*top.path, len(top.items))
    if top.key is _NOKEY or top.key is _MERGE:
        return top.path
    return (*top.path, top.key)


class _Placed:
    __slots__ = ("start_mark",)

    def __init__(self, mark: Any) -> None:
        self.start_mark = mark


def _what(v: Any) -> str:
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "null"
    return f"the scalar {_short(str(v))!r}"


# --------------------------------------------------------------------------- JSON


def _load_json(name: str, text: str) -> Document:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise _DuplicateKey(k)
            out[k] = v
        return out

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            raise _HugeInt(digits)
        return int(digits)

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_int=bounded_int)
    except _HugeInt as e:
        where = text.find(e.digits)
        line = text.count("\n", 0, where) + 1 if where >= 0 else 1
        col = where - (text.rfind("\n", 0, where) + 1) + 1 if where >= 0 else 1
        n = len(e.digits.lstrip("-"))
        raise LoadError(Diagnostic(name, line, col, "$", f"integer with {n} digits: at most "
                                   f"{MAX_INT_DIGITS} digits (no policy field holds a larger number)")) from None
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


class _HugeInt(Exception):
    def __init__(self, digits: str) -> None:
        self.digits = digits


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
        except (IndexError, ValueError):  # best effort: the diagnostic falls back to 1:1
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
