"""Desired state: compiled artifacts with digests, read back from disk as manifests.

Sources are policy files, compiled on this host through `bpfpolicy.policy.compile.compile_paths`
(the same path `bpfpolicy compile` takes). A source holds policies, never prebuilt
artifacts: a `manifest.json` in a source tree is ignored with a warning, because a
prebuilt artifact is code and paths the host did not produce (an object file that skips
validation, a manifest that once chose its own install dir). Compiled artifacts are
written under `<state_dir>/artifacts/<Kind>/<name>/` (checked to stay there) only when
their digest changed; the apply step loads files from there.

Hand-built artifact trees are used only through an explicit operator act:
`bpfpolicy apply/plan --prebuilt DIR` or `build(..., prebuilt=True)` (the Python API the
controller's tests drive with hand-written artifacts that have no policy source). No
environment variable, config key or source content can turn that on: a source is data
the host fetched, the command line and the API are the operator vouching for the files.
Even then each manifest's kind and name must be safe path components and install dirs
stay fixed (controller/apply.py `install_dir`).

The git revision is *not* compiled into programs: a commit that touches one policy must
not reload every program on the host. It is recorded per policy in the inventory (and
shown by `status`) instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..policy.diagnostics import Diagnostic


@dataclass
class DesiredPolicy:
    """One policy's compiled artifact on disk."""

    kind: str
    name: str
    digest: str
    manifest: dict[str, Any]
    dir: Path
    source: str | None = None  # policy file it came from
    document: Any = None  # the policy document's data (plan's rule-level diff, kept at apply)
    # compiled in this process: the artifact's files in memory (what `dir` holds), the
    # kind's map patches against its previous contents, and the maps whose patch this
    # cycle already wrote into the kernel (controller/contents.py)
    files: dict[str, bytes] | None = None
    patches: dict[str, Any] = field(default_factory=dict)
    preapplied: set[str] = field(default_factory=set)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def is_bpf(self) -> bool:
        return bool(self.manifest.get("object"))

    def file(self, rel: str) -> Path:
        return self.dir / rel

    def content(self, rel: str) -> bytes:
        """A file of the artifact: from memory when compiled in this process (the same
        object the kind made, so its hash and patches are known), else from `dir`."""
        if self.files is not None and rel in self.files:
            return self.files[rel]
        return (self.dir / rel).read_bytes()


@dataclass
class DesiredState:
    policies: dict[str, DesiredPolicy] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """A manifest.json that is not one of our artifacts."""


def read_artifact_dir(d: Path) -> DesiredPolicy:
    """One artifact dir we wrote (or, with `--prebuilt`, one the operator vouches for). Raises
    ManifestError, never KeyError, when the manifest is not an artifact manifest."""
    from .paths import UnsafePath, check_component

    try:
        m = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ManifestError(f"unreadable manifest: {e}") from None
    if not isinstance(m, dict) or not all(isinstance(m.get(k), str) for k in ("kind", "name", "digest")):
        raise ManifestError("not an artifact manifest (kind, name and digest must be strings)")
    try:
        check_component(m["kind"])
        check_component(m["name"])
    except UnsafePath as e:
        raise ManifestError(str(e)) from None
    return DesiredPolicy(m["kind"], m["name"], m["digest"], m, d)


def _manifests(p: Path) -> list[Path]:
    """manifest.json files a source path holds (hidden dirs skipped, as the loader does)."""
    if p.is_file():
        return [p] if p.name == MANIFEST else []
    return sorted(m for m in p.rglob(MANIFEST)
                  if not any(part.startswith(".") for part in m.relative_to(p).parts))


EarlyHook = Callable[[list[Any]], dict[str, set[str]]]


def build(paths: list[Path], out_dir: Path, ctx: Any = None, *, prebuilt: bool = False,
          early: EarlyHook | None = None, timings: dict[str, float] | None = None,
          memo: Any = None) -> DesiredState:
    """Compile policy files into one desired state (manifests in sources are ignored).

    `prebuilt=True` is the operator's `--prebuilt DIR`: `paths` are artifact trees whose
    manifests are read as they are (unverified) instead of policies compiled here.

    `early` (the reconciler's patch fast path) sees the compiled artifacts once the whole
    tree is known to be accepted — before their digests are computed and their files
    written, which for a 1M-entry list is most of the time — and returns, per policy
    key, the maps whose patch it already wrote into the kernel. `timings` collects
    milliseconds per step (validate, compile, early, artifacts). `memo`: a
    `policy.validate.ValidationMemo` kept across cycles (unchanged files are not parsed
    again)."""
    state = DesiredState()
    if prebuilt:
        _read_prebuilt(paths, state)
        return state
    policy_paths: list[Path] = []
    ignored: set[Path] = set()
    for p in paths:
        if not p.exists():
            state.diagnostics.append(Diagnostic(str(p), 1, 1, "$", "no such file or directory"))
            continue
        manifests = _manifests(p)
        for m in manifests:
            ignored.add(m)
            state.diagnostics.append(Diagnostic(
                str(m), 1, 1, "$", "ignored: a policy source holds policies, not prebuilt artifacts "
                "(artifacts are compiled on this host; docs/controller.md)", "warning"))
        policy_paths.append(p)
    if policy_paths:
        _compile(policy_paths, out_dir, ctx, state, ignored, early, timings if timings is not None else {}, memo)
    return state


def _read_prebuilt(paths: list[Path], state: DesiredState) -> None:
    """Every manifest.json under the operator-named trees. A missing path is an error
    (a typo must not read as "prune everything"); an empty tree is an empty desired
    state, which the plan's prune-everything guard still refuses without --allow-empty."""
    for p in paths:
        if not p.exists():
            state.diagnostics.append(Diagnostic(str(p), 1, 1, "$", "no such file or directory"))
            continue
        for m in _manifests(p):
            try:
                _add(state, read_artifact_dir(m.parent))
            except ManifestError as e:
                state.diagnostics.append(Diagnostic(str(m), 1, 1, "$", str(e)))


def _compile(paths: list[Path], out_dir: Path, ctx: Any, state: DesiredState,
             ignored: set[Path] | None = None, early: EarlyHook | None = None,
             timings: dict[str, float] | None = None, memo: Any = None) -> None:
    from ..kinds import CompileContext
    from ..kinds.xdp.sources import policy_tree
    from ..policy.compile import compile_validation
    from ..policy.load import iter_policy_files
    from ..policy.validate import validate_paths
    from .paths import UnsafePath, contained

    timings = {} if timings is None else timings
    t = time.perf_counter()
    files: list[Path] = list(paths)
    if ignored:  # compile every file but the ignored manifests; sourceFiles keep the given roots
        files = [f for f in iter_policy_files(paths) if f not in ignored]
    with policy_tree(paths):
        validation = validate_paths(files, memo=memo)
        t = lap(timings, "validate", t)
        result = compile_validation(validation, ctx or CompileContext(),
                                    getattr(memo, "compiled", None) if memo is not None else None)
    t = lap(timings, "compile", t)
    state.diagnostics.extend(result.diagnostics)
    if not result.ok:
        return
    placed = []
    seen: dict[str, str] = {}
    for validated, artifact in result.artifacts:
        src = getattr(getattr(validated, "doc", None), "file", None) or "."
        try:
            placed.append((validated, artifact, contained(out_dir, artifact.kind, artifact.name)))
        except UnsafePath as e:
            state.diagnostics.append(Diagnostic(src, 1, 1, "metadata.name", f"refused artifact dir: {e}"))
        key = f"{artifact.kind}/{artifact.name}"
        if key in seen:  # `_add` reports it below; nothing of a refused tree goes early
            state.diagnostics.append(Diagnostic(src, 1, 1, "metadata.name", f"duplicate policy {key} "
                                                f"(also in {seen[key]})"))
        seen.setdefault(key, src)
    if not state.ok:
        return
    pre: dict[str, set[str]] = {}
    if early is not None:
        pre = early([artifact for _, artifact, _ in placed])
        t = lap(timings, "early", t)
    for validated, artifact, dest in placed:
        src = getattr(getattr(validated, "doc", None), "file", None) or "."
        if _on_disk_digest(dest) != artifact.digest:
            dest = artifact.write(out_dir)
        try:
            pol = read_artifact_dir(dest)
        except ManifestError as e:
            state.diagnostics.append(Diagnostic(src, 1, 1, "$", f"{dest}: {e}"))
            continue
        pol.source = getattr(getattr(validated, "doc", None), "file", None)
        pol.document = getattr(getattr(validated, "doc", None), "data", None)
        if pol.digest == artifact.digest:  # what is on disk is this artifact
            pol.files, pol.patches = artifact.files, dict(artifact.patches)
            pol.preapplied = set(pre.get(pol.key, ()))
        _add(state, pol)
    lap(timings, "artifacts", t)


def lap(timings: dict[str, float], name: str, t: float) -> float:
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + (now - t) * 1000
    return now


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

    from .paths import is_inside

    if not out_dir.is_dir() or out_dir.is_symlink():
        return
    for kind_dir in out_dir.iterdir():
        if kind_dir.is_symlink() or not kind_dir.is_dir() or not is_inside(kind_dir, out_dir):
            continue  # never follow a link out of the artifacts dir
        for d in kind_dir.iterdir():
            if d.name.startswith(".") or f"{kind_dir.name}/{d.name}" not in keep:
                if d.is_symlink() or not is_inside(d, out_dir):
                    with contextlib.suppress(OSError):
                        os.unlink(d)  # the link itself, not what it points to
                    continue
                shutil.rmtree(d, ignore_errors=True)
        if not any(kind_dir.iterdir()):
            os.rmdir(kind_dir)
