"""The loader cannot be abused: YAML features that expand, execute or mislead are refused
at their `file:line:col`, merge keys follow the YAML 1.1 spec, and paths that are not
regular files are refused without being read."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bpfpolicy.policy.load import ALIAS_BUDGET_FLOOR, MAX_INT_DIGITS, LoadError, load_file

XDP = "apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {name: edge}\nspec:\n  interfaces: [eth0]\n"
# nine levels of nine aliases: 9**9 = 387,420,489 nodes once expanded
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))

# (case, content, line, col, path, message substring) -- every one exits 1 from `validate`
REFUSED: list[tuple[str, str, int, int, str, str]] = [
    ("alias-bomb", BOMB, 6, 10, "a5[0]", 'alias "*a4" expands the document past 100,000 nodes'),
    ("int-tag-on-float-text", XDP + "  deny: [{sources: [10.0.0.0/8], ports: [!!int 1e5]}]\n", 6, 42, "spec.deny[0].ports[0]", '!!int "1e5" is not an integer'),
    ("int-tag-on-word", "a: !!int ten\n", 1, 4, "a", '!!int "ten" is not an integer'),
    ("float-tag-on-word", "a: !!float abc\n", 1, 4, "a", '"abc" is not a number'),
    ("bool-tag-on-word", "a: !!bool maybe\n", 1, 4, "a", '!!bool "maybe" is not true or false'),
    ("timestamp-tag", XDP + "  deny: [{sources: [!!timestamp foo]}]\n", 6, 21, "spec.deny[0].sources[0]", "!!timestamp is not supported"),
    ("timestamp-tag-valid-date", "a: !!timestamp 2024-01-01\n", 1, 4, "a", "!!timestamp is not supported"),
    ("python-tag", "a: !!python/object/apply:os.system [id]\n", 1, 4, "a", "unsupported YAML tag !!python/object/apply:os.system"),
    ("python-name-tag", "a: !!python/name:os.system ''\n", 1, 4, "a", "unsupported YAML tag !!python/name:os.system"),
    ("binary-tag", "a: !!binary aGk=\n", 1, 4, "a", "unsupported YAML tag !!binary"),
    ("set-tag", "a: !!set {x, y}\n", 1, 4, "a", "unsupported YAML tag !!set"),
    ("local-tag", "a: !secret x\n", 1, 4, "a", "unsupported YAML tag !secret"),
    ("seq-tag-on-map", "a: !!seq {x: 1}\n", 1, 4, "a", "unsupported YAML tag !!seq"),
    ("merge-scalar", "m:\n  <<: 5\n  b: 2\n", 2, 3, "m", "<< (merge key) takes a mapping or a list of mappings, not the scalar '5'"),
    ("merge-list-with-scalar", "r: &r {a: 1}\nm:\n  <<: [*r, 7]\n", 3, 3, "m", "not the scalar '7'"),
    ("merge-null", "m:\n  <<:\n  b: 2\n", 2, 3, "m", "not null"),
    ("duplicate-explicit-after-merge", "r: &r {a: 1}\nm:\n  <<: *r\n  b: 2\n  b: 3\n", 5, 3, "m.b", 'duplicate key "b"'),
    ("huge-int", XDP + "  deny: [{sources: [10.0.0.0/8], ports: [" + "9" * 5000 + "]}]\n", 6, 42, "spec.deny[0].ports[0]", "integer with 5000 digits: at most 40"),
    ("huge-negative-int", "a: -" + "1" * 41 + "\n", 1, 4, "a", "integer with 41 digits"),
    ("huge-hex-int", "a: 0x" + "f" * 64 + "\n", 1, 4, "a", "integer with 64 digits"),
    ("huge-int-tagged", "a: !!int '" + "7" * 50 + "'\n", 1, 4, "a", "integer with 50 digits"),
    ("huge-int-json", '{"a": [1, ' + "9" * 5000 + "]}", 1, 11, "$", "integer with 5000 digits"),
    ("alias-as-key", "a: &k x\n*k : 1\n", 2, 1, "$", "an alias cannot be a key"),
    ("control-character", "a: 1\nb: \"x\x07\"\n", 2, 6, "$", "unacceptable character #x0007: control characters are not allowed"),
    ("mapping-as-key", "? {a: 1}\n: 2\n", 1, 3, "$", "mapping keys must be plain strings"),
]


@pytest.mark.parametrize(("case", "content", "line", "col", "path", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_at_its_location(cli, tmp_path: Path, case: str, content: str, line: int, col: int,
                                 path: str, message: str) -> None:
    f = tmp_path / ("a.json" if content.startswith("{") else "a.yaml")
    f.write_text(content)
    code, out = cli("validate", str(f))
    assert code == 1, out
    assert "Traceback" not in out
    assert re.search(rf"^{re.escape(str(f))}:{line}:{col}: {re.escape(path)}: .*{re.escape(message)}", out, re.M), out


# (case, content, expected data) -- the YAML 1.1 merge spec and core-schema resolution
LOADED: list[tuple[str, str, object]] = [
    ("merge-one", "r: &r {a: 1, b: 2}\nm:\n  <<: *r\n", {"a": 1, "b": 2}),
    ("merge-override-after", "r: &r {name: a, v: 1}\nm:\n  <<: *r\n  name: b\n", {"name": "b", "v": 1}),
    ("merge-override-before", "r: &r {name: a, v: 1}\nm:\n  name: b\n  <<: *r\n", {"name": "b", "v": 1}),
    ("merge-list-first-wins", "r: &r {x: 1}\ns: &s {x: 2, y: 2}\nm:\n  <<: [*r, *s]\n", {"x": 1, "y": 2}),
    ("merge-list-then-key", "r: &r {a: 1}\nm:\n  <<: [*r, {x: 1}]\n  b: 2\n", {"a": 1, "x": 1, "b": 2}),
    ("merge-inline-map", "m:\n  <<: {a: 1}\n  a: 3\n", {"a": 3}),
    ("quoted-merge-is-a-key", "m:\n  '<<': 1\n", {"<<": 1}),
    ("timestamp-like-stays-string", "m: 2024-01-01\n", "2024-01-01"),
    ("base60-stays-string", "m: 1:30\n", "1:30"),
    ("equals-stays-string", "m: =\n", "="),
    ("yaml11-bools", "m: [yes, No, on, OFF, true]\n", [True, False, True, False, True]),
    ("ints", "m: [0x1f, 0o17, 017, 0b101, -1_000, +5]\n", [31, 15, 15, 5, -1000, 5]),
    ("float-needs-dot", "m: [1e5, 1.5, .inf]\n", ["1e5", 1.5, float("inf")]),
    ("str-tag-keeps-text", "m: !!str 0x10\n", "0x10"),
    ("non-specific-tag-is-string", "m: ! 12\n", "12"),
    ("forty-digit-int", "m: " + "9" * MAX_INT_DIGITS + "\n", int("9" * MAX_INT_DIGITS)),
    ("aliases-are-copies", "a: &a [1]\nm: *a\n", [1]),
]


@pytest.mark.parametrize(("case", "content", "expected"), LOADED, ids=[r[0] for r in LOADED])
def test_loaded_per_spec(tmp_path: Path, case: str, content: str, expected: object) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(content)
    (doc,) = load_file(f)
    assert doc.data["m"] == expected


def test_alias_copies_are_independent(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("a: &a {x: [1]}\nb: *a\n")
    (doc,) = load_file(f)
    doc.data["b"]["x"].append(2)
    assert doc.data["a"] == {"x": [1]}


def test_moderate_alias_use_is_fine(tmp_path: Path) -> None:
    """Shared selectors: 50 aliases of a 100-node anchor stay inside the budget."""
    body = "s: &s {" + ", ".join(f"k{i}: v" for i in range(50)) + "}\n"
    body += "".join(f"u{i}: *s\n" for i in range(50))
    f = tmp_path / "a.yaml"
    f.write_text(body)
    (doc,) = load_file(f)
    assert doc.data["u49"] == doc.data["s"]
    assert ALIAS_BUDGET_FLOOR > 50 * 101


def test_merged_keys_are_located_at_the_merge(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("r: &r {a: 1}\nm:\n  <<: *r\n  b: 2\n")
    (doc,) = load_file(f)
    assert doc.pos(("m", "a")) == (3, 3)
    assert doc.pos(("m", "b")) == (4, 3)


def test_inline_list_items_are_located(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("m: [a, bb,\n  ccc]\n")
    (doc,) = load_file(f)
    assert [doc.pos(("m", i)) for i in range(3)] == [(1, 5), (1, 8), (2, 3)]


# (case, how to make the path, message) -- never opened for reading, never blocks
def _fifo(tmp: Path) -> str:
    p = tmp / "pipe.yaml"
    os.mkfifo(p)
    return str(p)


def _socket(tmp: Path) -> str:
    import socket

    p = tmp / "s.yaml"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    return str(p)


NOT_REGULAR = [
    ("fifo", _fifo, "is a FIFO (named pipe): policy files must be regular files"),
    ("dev-zero", lambda tmp: "/dev/zero", "is a character device: policy files must be regular files"),
    ("dev-stdin-like", lambda tmp: "/dev/tty" if os.path.exists("/dev/tty") else "/dev/null", "is a character device"),
    ("unix-socket", _socket, "is a socket: policy files must be regular files"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("case", "make", "message"), NOT_REGULAR, ids=[r[0] for r in NOT_REGULAR])
def test_non_regular_files_are_refused_without_reading(cli, tmp_path: Path, case: str, make, message: str) -> None:
    path = make(tmp_path)
    code, out = cli("validate", path)
    assert code == 1, out
    assert f"{path}:0:0: $: {message}" in out, out


@pytest.mark.timeout(60)
def test_fifo_inside_a_directory_is_skipped_and_never_blocks(cli, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "ok.yaml").write_text(XDP + "  deny: [{sources: [10.0.0.0/8]}]\n")
    code, out = cli("validate", str(tmp_path))
    assert code == 0, out


def test_load_error_is_a_diagnostic_not_an_exception_type_leak(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("a: !!python/object:os.system x\n")
    with pytest.raises(LoadError) as e:
        load_file(f)
    assert (e.value.diagnostic.line, e.value.diagnostic.col) == (1, 4)
