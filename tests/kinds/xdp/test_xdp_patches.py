"""What the XDPBlocklist kind hands the controller for a list edit (issue #15): with the
controller's `defer_files` option a patched compile carries `Artifact.patches` and its
files are spliced only at `materialize()` — and the materialized artifact is the one a
from-scratch compile makes (same digest, same files), for a one-line edit in the middle,
a deleted line, an appended line, a truncated file and a file replaced by rename. The
first two are patches; truncation and a prefix are full lowerings that say why."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytest

from bpfpolicy.kinds import CompileContext
from bpfpolicy.kinds.xdp import incremental, sources
from bpfpolicy.policy.compile import compile_paths

POLICY = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {name: patched}
spec:
  interfaces: [{name: eth0}]
  deny:
    - name: listed
      sourceFiles: [list.txt]
    - name: ssh
      sources: [10.9.9.9]
      protocols: [tcp]
      ports: [22]
"""


def _lines(n: int, seed: int = 15) -> list[str]:
    rng = random.Random(seed)
    return [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in rng.sample(range(1 << 22), n)]


def _compile(src: Path, defer: bool):  # noqa: ANN202
    res = compile_paths([src], CompileContext(options={"defer_files": True} if defer else {}))
    assert res.ok, [str(d) for d in res.diagnostics]
    ((_, art),) = res.artifacts
    return art


def _from_scratch(src: Path):  # noqa: ANN202
    """A compile with no memory of earlier ones (what a restarted agent makes)."""
    incremental._states.clear()
    sources._cache.clear()
    sources._last.clear()
    return _compile(src, defer=False)


def _write(f: Path, lines: list[str]) -> None:
    f.write_text("\n".join(lines) + "\n")


@pytest.fixture
def tree(tmp_path: Path):  # noqa: ANN201
    src = tmp_path / "src"
    src.mkdir()
    (src / "p.yaml").write_text(POLICY)
    lines = _lines(20000)  # >= 4096 entries: the DIR-24-8 layout the patches apply to
    _write(src / "list.txt", lines)
    incremental._states.clear()
    yield src, lines
    incremental._states.clear()


def test_each_edit_materializes_to_the_from_scratch_artifact(tree, caplog: pytest.LogCaptureFixture) -> None:
    src, lines = tree
    f = src / "list.txt"
    _compile(src, defer=True).materialize()  # the lowering later edits patch
    edits = [
        ("mid-file edit", "patch", lambda ls: ls[:9000] + ["198.51.100.7"] + ls[9001:]),
        ("deleted line", "patch", lambda ls: ls[:1234] + ls[1235:]),
        ("appended line", "patch", lambda ls: [*ls, "203.0.113.99"]),
        ("truncated file", "full", lambda ls: ls[: len(ls) // 2]),
        ("prefix added", "full", lambda ls: [*ls, "203.0.113.0/24"]),
        ("replaced file", "patch", lambda ls: [*ls[:500], "198.51.100.8", *ls[501:]]),
    ]
    for what, path, edit in edits:
        lines = edit(lines)
        if what == "replaced file":  # a new inode, as editors and `git checkout` do
            tmp = src / ".list.txt.new"
            _write(tmp, lines)
            os.replace(tmp, f)
        else:
            _write(f, lines)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bpfpolicy.kinds.xdp"):
            art = _compile(src, defer=True)
        if path == "patch":
            assert art.patches and art.deferred is not None, what
            assert not [r for r in caplog.records if "full lowering" in r.getMessage()], what
        else:
            assert art.patches == {}, what
            assert any("full lowering" in r.getMessage() for r in caplog.records), what  # it says so
        digest, files = art.digest, dict(art.files)  # digest materializes
        assert art.deferred is None
        ref = _from_scratch(src)
        assert digest == ref.digest, what
        assert files.keys() == ref.files.keys(), what
        for name, data in ref.files.items():
            assert files[name] == data, (what, name)
        _compile(src, defer=True).materialize()  # back to an incremental state for the next edit


def test_patch_base_is_the_previous_artifacts_contents(tree) -> None:
    """The controller trusts a patch only when its base *is* what it applied: the base
    must be the previous artifact's contents object, and base + patch = new contents."""
    src, lines = tree
    first = _compile(src, defer=True)
    first.materialize()
    lines[777] = "198.51.100.1"
    _write(src / "list.txt", lines)
    second = _compile(src, defer=True)
    assert set(second.patches) <= {"v4_buckets", "v4_tbl24"} and second.patches
    for name, patch in second.patches.items():
        assert patch.base is first.files[f"maps/{name}.bin"]
    second.materialize()
    spec = {m["name"]: m for m in second.manifest["maps"]}
    for name, patch in second.patches.items():
        rec = spec[name]["key_size"] + spec[name]["value_size"]
        table = {patch.base[i:i + 4]: patch.base[i:i + rec] for i in range(0, len(patch.base), rec)}
        table.update({patch.upsert[i:i + 4]: patch.upsert[i:i + rec] for i in range(0, len(patch.upsert), rec)})
        for i in range(0, len(patch.delete), 4):
            table.pop(patch.delete[i:i + 4])
        assert b"".join(sorted(table.values(), key=lambda r: r[:4])) == second.files[f"maps/{name}.bin"]
        assert spec[name]["entries"] == len(table)
