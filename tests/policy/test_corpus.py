"""Every real upstream file in ../shared/corpus is accepted, or rejected with a located
reason — never a crash. (Per-kind verdicts are asserted in tests/<kind>/.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml", ".json")) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_file_is_accepted_or_rejected_with_a_location(cli, corpus: Path, path: Path) -> None:
    code, out = cli("validate", "--format", "text", str(path))
    assert code in (0, 1), out
    assert "Traceback" not in out and "internal error" not in out, out
    diagnostics = [ln for ln in out.splitlines() if ln.startswith(str(path))]
    if code == 1:
        assert diagnostics, out
    for ln in diagnostics:
        assert re.match(rf"^{re.escape(str(path))}:[1-9]\d*:[1-9]\d*: \S+: \S", ln), ln


def test_corpus_is_present(corpus: Path) -> None:
    assert len(FILES) >= 60
