"""The artifact contract (bpfpolicy/artifact.py, docs/ARTIFACTS.md) holds for every example
policy: each compiles to a manifest of the declared shape, its digest does not depend on
the run or on how the policy path was spelled, and every program's
`bpf_metadata_bpfpolicy_hash` is the documented program hash."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from bpfpolicy.artifact import Artifact, manifest_problems, program_hash, stamp_program_hash
from bpfpolicy.kinds import CompileContext
from bpfpolicy.policy.compile import compile_paths

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted(p for p in (ROOT / "policies").rglob("*.yaml") if p.is_file() and not p.name.endswith(".test.yaml"))
INVENTORY = str(ROOT / "examples" / "host-config.yaml")  # the example endpoint NetworkPolicy builds for
STAMP = re.compile(rb'bpf_metadata_bpfpolicy_hash\[\] SEC\("\.rodata"\) = "([0-9a-f]*)";')


def _compile(paths: list[Path | str]) -> dict[str, Artifact]:
    result = compile_paths(paths, CompileContext(options={"inventory": INVENTORY}))
    assert result.ok, [str(d) for d in result.diagnostics]
    return {f"{a.kind}/{a.name}": a for _, a in result.artifacts}


@pytest.fixture(scope="module")
def compiled() -> dict[str, Artifact]:
    if not shutil.which("clang"):
        pytest.skip("clang not installed (scripts/setup.sh installs it)")
    return _compile(POLICIES)


def test_every_kind_of_example_is_compiled(compiled: dict[str, Artifact]) -> None:
    assert {a.kind for a in compiled.values()} == {"XDPBlocklist", "NetworkPolicy", "SeccompProfile",
                                                   "TracingPolicy"}


def test_every_example_manifest_matches_the_typed_contract(compiled: dict[str, Artifact]) -> None:
    for label, art in compiled.items():
        on_disk = {"kind": art.kind, "name": art.name, "digest": art.digest, **art.manifest}
        assert manifest_problems(on_disk) == [], label


def test_written_manifest_matches_the_contract(compiled: dict[str, Artifact], tmp_path: Path) -> None:
    import json

    for art in compiled.values():
        manifest = json.loads((art.write(tmp_path) / "manifest.json").read_text())
        assert manifest_problems(manifest) == [], f"{art.kind}/{art.name}"
        assert manifest["digest"] == art.digest


def test_digest_is_stable_across_runs_and_path_spellings(compiled: dict[str, Artifact],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    relative = _compile([os.path.relpath(p, ROOT) for p in POLICIES])
    absolute = _compile([p.resolve() for p in POLICIES])
    assert {k: a.digest for k, a in relative.items()} == {k: a.digest for k, a in compiled.items()}
    assert {k: a.digest for k, a in absolute.items()} == {k: a.digest for k, a in compiled.items()}


def test_each_programs_metadata_hash_is_the_documented_program_hash(compiled: dict[str, Artifact]) -> None:
    programs = [a for a in compiled.values() if "program_hash" in a.manifest]
    assert {a.kind for a in programs} == {"XDPBlocklist", "NetworkPolicy", "TracingPolicy"}
    for art in programs:
        label = f"{art.kind}/{art.name}"
        source = art.files["prog.bpf.c"].decode()
        assert art.manifest["program_hash"] == program_hash(source), label
        (in_source,) = STAMP.findall(art.files["prog.bpf.c"])
        assert in_source.decode() == art.manifest["program_hash"], label
        # what bpftool shows: the .rodata string of the object itself
        assert art.manifest["program_hash"].encode() + b"\0" in art.files["prog.bpf.o"], label


def test_program_hash_ignores_comments_and_its_own_stamp() -> None:
    code = 'const volatile char bpf_metadata_bpfpolicy_hash[] SEC(".rodata") = "";\nint x; /* rule a */\n'
    stamped, shape = stamp_program_hash(code)
    assert shape == program_hash(stamped) == program_hash(code.replace("rule a", "rule b"))
    assert f'= "{shape}";' in stamped
    assert program_hash(code.replace("int x;", "int y;")) != shape
