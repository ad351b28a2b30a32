"""The loader keeps line:col for every node and turns bad files into diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfpolicy.policy.load import LoadError, load_file, load_paths


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_yaml_positions_of_keys_and_items(tmp_path: Path) -> None:
    p = write(tmp_path, "a.yaml", "kind: X\nspec:\n  deny:\n    - name: a\n      ports: [22, 80]\n")
    (doc,) = load_file(p)
    assert doc.data["spec"]["deny"][0]["ports"] == [22, 80]
    assert doc.pos(("spec", "deny", 0, "ports")) == (5, 7)  # the key
    assert doc.pos(("spec", "deny", 0, "ports", 1)) == (5, 19)  # the item
    assert doc.pos(("spec", "deny", 0, "missing", 3)) == (4, 7)  # nearest ancestor (the item)


def test_multi_document_yaml_keeps_index_and_skips_empty(tmp_path: Path) -> None:
    p = write(tmp_path, "m.yaml", "---\na: 1\n---\n---\nb: 2\n")
    docs = load_file(p)
    assert [d.data for d in docs] == [{"a": 1}, {"b": 2}]
    assert docs[1].pos(("b",)) == (5, 1)


def test_json_positions_are_recovered_lazily(tmp_path: Path) -> None:
    p = write(tmp_path, "p.json", '{\n\t"defaultAction": "SCMP_ACT_ERRNO",\n\t"syscalls": [\n\t\t{"names": ["read"]}\n\t]\n}\n')
    (doc,) = load_file(p)
    assert doc.pos(("syscalls", 0, "names")) == (4, 4)
    assert doc.diag(("syscalls", 0, "names"), "x").path == "syscalls[0].names"


@pytest.mark.parametrize(
    ("name", "content", "where", "message"),
    [
        ("dup.yaml", "a: 1\nb: 2\na: 3\n", (3, 1), 'duplicate key "a" (first defined at line 1)'),
        ("dup.json", '{"a": 1,\n "a": 2}', (2, 2), 'duplicate key "a"'),
        ("syntax.yaml", "a: [1, 2\nb: 3\n", (2, 2), "YAML syntax error"),
        ("syntax.json", '{"a": 1,}', (1, 9), "JSON syntax error"),
        ("empty.yaml", "   \n", (1, 1), "file is empty"),
        ("nul.yaml", b"a: 1\n\x00\x01\x02", (2, 1), "binary data"),
        ("latin1.yaml", b"a: caf\xe9\n", (1, 7), "not UTF-8"),
        ("comments.yaml", "# only a comment\n", (1, 1), "file has no documents"),
        ("tab.yaml", "a:\n\tb: 1\n", (2, 1), "YAML syntax error"),
    ],
)
def test_bad_files_are_diagnostics(tmp_path: Path, name: str, content: str | bytes,
                                   where: tuple[int, int], message: str) -> None:
    p = write(tmp_path, name, content)
    with pytest.raises(LoadError) as e:
        load_file(p)
    d = e.value.diagnostic
    assert (d.line, d.col) == where
    assert message in d.message
    assert str(d).startswith(f"{p}:{where[0]}:{where[1]}: ")


def test_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    p = tmp_path / "huge.yaml"
    with p.open("wb") as f:
        f.truncate(50 * 1024 * 1024)
    with pytest.raises(LoadError) as e:
        load_file(p)
    assert "50.0 MiB" in e.value.diagnostic.message


def test_directories_recurse_and_skip_hidden(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "x: 1\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "b.json", '{"y": 2}')
    write(tmp_path / "sub", "notes.txt", "ignored")
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".git", "c.yaml", "z: 3\n")
    docs, diags = load_paths([tmp_path])
    assert sorted(Path(d.file).name for d in docs) == ["a.yaml", "b.json"]
    assert diags == []
