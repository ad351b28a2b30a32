"""Mutated Tetragon examples never crash validation or lowering: every outcome is a
located diagnostic (schema, semantic, or compile-time), never a traceback."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest

from bpfpolicy.kinds import CompileContext
from bpfpolicy.kinds.tracing.lower import Lowering
from bpfpolicy.policy.diagnostics import PolicyError
from bpfpolicy.policy.load import load_file
from bpfpolicy.policy.validate import validate_document

VALUES = [None, 0, -1, 7, "x", "", "Equal", [], {}, [1], {"a": 1}, True, 2**40, "/etc/passwd",
          "host_ns", "AF_INET", "sys_openat", "security_file_open", "127.0.0.1/8", "1:2"]


def _paths(node, p=()):
    yield p
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*p, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*p, i))


def _mutate(data, rng: random.Random) -> None:
    candidates = [p for p in _paths(data) if len(p) > 2]
    for _ in range(rng.randint(1, 3)):
        p = rng.choice(candidates)
        node = data
        try:
            for k in p[:-1]:
                node = node[k]
            if rng.random() < 0.3 and isinstance(node, dict):
                del node[p[-1]]
            else:
                node[p[-1]] = copy.deepcopy(rng.choice(VALUES))
        except (KeyError, IndexError, TypeError):
            pass


@pytest.mark.parametrize("seed", range(4))
def test_mutated_corpus_never_crashes(corpus: Path, seed: int) -> None:
    files = sorted((corpus / "tetragon").glob("*.yaml"))
    if not files:
        pytest.skip("no Tetragon corpus")
    rng = random.Random(seed)
    for _ in range(60):
        f = rng.choice(files)
        doc = load_file(f)[0]
        _mutate(doc.data, rng)
        validated, diags = validate_document(doc)
        assert not [d for d in diags if "internal error" in d.message], diags
        assert all(d.line >= 1 for d in diags), diags
        if validated is None:
            continue
        try:
            Lowering(doc, CompileContext(kernel=(6, 12))).render()
        except PolicyError as e:
            assert all(d.line >= 1 for d in e.diagnostics)
