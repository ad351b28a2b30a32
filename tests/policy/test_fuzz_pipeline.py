"""Fuzzing as a habit: mutated policies never crash the pipeline.

Seeds are policies/, docs/examples and (when present) the conformance corpus; each case is
one of bench/fuzz.py's mutations (YAML-tree level: huge/negative integers, empty or
non-ASCII strings, lists and mappings in place of scalars, dropped/renamed keys,
duplicated items; byte level: YAML punctuation, anchors, tags, merge keys spliced in).

Property: `bpfpolicy validate` (the real click CLI, in-process, exceptions not caught)
exits 0 or 1 without a traceback, within a per-case bound; and what it accepts compiles —
the generated C of a sample of validated cases goes through clang without an error.
Derandomized: the same cases run on every machine. Long runs: `python bench/fuzz.py`.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("bpfpolicy_bench_fuzz", ROOT / "bench" / "fuzz.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FUZZ = _fuzz_module()
REPO_SEEDS = FUZZ.seed_files(corpus=None)
CORPUS_SEEDS = FUZZ.seed_files(corpus=CORPUS) if CORPUS.is_dir() else []
# Problems that mean a bug; a located compile refusal (no inventory for a NetworkPolicy,
# a kernel function missing from BTF) is the pipeline working as documented.
BUGS = ("traceback", "hang", "internal-error", "clang-failed-after-validate")
COMPILE_FRACTION = 0.25 if shutil.which("clang") else 0.0
FUZZ_SETTINGS = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow])


def _check(seeds: list[tuple[str, str]], seed: int, tmp: Path) -> None:
    r = FUZZ.check_case(seed, seeds, tmp, FUZZ.sampled(seed, COMPILE_FRACTION), timeout=30.0)
    if r["problem"] in BUGS:
        name, content = FUZZ.make_case(seed, seeds)
        pytest.fail(f"case {seed} ({name}): {r['problem']}\n--- input ---\n"
                    f"{content.decode(errors='replace')[:3000]}\n--- detail ---\n{r['detail']}")
    assert r["validate"] in (0, 1)


def test_seeds_are_found() -> None:
    kinds = {name for name, _ in REPO_SEEDS}
    assert len(REPO_SEEDS) >= 5, kinds


def test_cases_are_deterministic() -> None:
    assert FUZZ.make_case(12345, REPO_SEEDS) == FUZZ.make_case(12345, REPO_SEEDS)


@FUZZ_SETTINGS
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_mutated_repo_policies_never_crash(tmp_path_factory, seed: int) -> None:
    _check(REPO_SEEDS, seed, tmp_path_factory.mktemp("fuzz"))


@FUZZ_SETTINGS
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_mutated_corpus_policies_never_crash(tmp_path_factory, seed: int) -> None:
    if not CORPUS_SEEDS:
        pytest.skip(f"conformance corpus not found at {CORPUS}")
    _check(CORPUS_SEEDS, seed, tmp_path_factory.mktemp("fuzz"))
