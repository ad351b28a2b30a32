"""Desired state: compiled artifacts with digests, read back from disk as manifests.

Sources are policy files (compiled through `bpfpolicy.compile.compile_paths`, the same
path `bpfpolicy compile` takes) or already-compiled artifact trees (`compile --out DIR`
output: `<Kind>/<name>/manifest.json`), so CI can ship artifacts and hosts need no clang.
Compiled artifacts are written under `<state_dir>/artifacts/` only when their digest
changed; the apply step loads files from there.

The git revision is *not* compiled into programs: a commit that touches one policy must
not reload every program on the host. It is recorded per policy in the inventory (and
shown by `status`) instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Diagnostic


@dataclass
class DesiredPolicy:
    """One policy's compiled artifact on disk."""

    kind: str
    name: str
    digest: str
    manifest: dict[str, Any]
    dir: Path
    source: str | None = None  # policy file it came from

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def is_bpf(self) -> bool:
        return bool(self.manifest.get("object"))

    def file(self, rel: str) -> Path:
        return self.dir / rel


@dataclass
class DesiredState:
    policies: dict[str, DesiredPolicy] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def read_artifact_dir(d: Path) -> DesiredPolicy:
    m = json.loads((d / "manifest.json").read_text())
    return DesiredPolicy(m["kind"], m["name"], m["digest"], m, d)


def is_artifact_tree(p: Path) -> bool:
    if p.is_file():
        return p.name == "manifest.json"
    return p.is_dir() and (any(p.glob("*/*/manifest.json")) or (p / "manifest.json").exists())


def artifact_dirs(p: Path) -> list[Path]:
    if p.is_file():
        return [p.parent]
    if (p / "manifest.json").exists():
        return [p]
    return sorted(m.parent for m in p.glob("*/*/manifest.json") if not m.parent.name.startswith("."))


def build(paths: list[Path], out_dir: Path, ctx: Any = None) -> DesiredState:
    """Compile policy files / read artifact trees into one desired state."""
    state = DesiredState()
    policy_paths = []
    for p in paths:
        if not p.exists():
            state.diagnostics.append(Diagnostic(str(p), 1, 1, "$", "no such file or directory"))
        elif is_artifact_tree(p):
            for d in artifact_dirs(p):
                _add(state, read_artifact_dir(d))
        else:
            policy_paths.append(p)
    if policy_paths:
        _compile(policy_paths, out_dir, ctx, state)
    return state


def _compile(paths: list[Path], out_dir: Path, ctx: Any, state: DesiredState) -> None:
    from ..compile import compile_paths
    from ..kinds import CompileContext

    result = compile_paths(paths, ctx or CompileContext())
    state.diagnostics.extend(result.diagnostics)
    if not result.ok:
        return
    for validated, artifact in result.artifacts:
        dest = out_dir / artifact.kind / artifact.name
        if _on_disk_digest(dest) != artifact.digest:
            dest = artifact.write(out_dir)
        pol = read_artifact_dir(dest)
        pol.source = getattr(getattr(validated, "doc", None), "file", None)
        _add(state, pol)


def _add(state: DesiredState, pol: DesiredPolicy) -> None:
    if pol.key in state.policies:
        other = state.policies[pol.key]
        state.diagnostics.append(Diagnostic(pol.source or str(pol.dir), 1, 1, "metadata.name",
                                            f"duplicate policy {pol.key} (also in {other.source or other.dir})"))
        return
    state.policies[pol.key] = pol


def _on_disk_digest(d: Path) -> str | None:
    try:
        return json.loads((d / "manifest.json").read_text()).get("digest")
    except (OSError, ValueError):
        return None


def gc_artifacts(out_dir: Path, keep: set[str]) -> None:
    """Remove compiled artifacts of policies no longer desired (and torn temp dirs)."""
    import shutil

    if not out_dir.is_dir():
        return
    for kind_dir in out_dir.iterdir():
        if not kind_dir.is_dir():
            continue
        for d in kind_dir.iterdir():
            if d.name.startswith(".") or f"{kind_dir.name}/{d.name}" not in keep:
                shutil.rmtree(d, ignore_errors=True)
        if not any(kind_dir.iterdir()):
            os.rmdir(kind_dir)
