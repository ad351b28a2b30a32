"""Find the artifact directories a kernel-test run exercises.

An artifact directory is what `bpfpolicy compile --out` writes (manifest.json + files)
or any directory holding a `kernel-test.txt`. Its script says what to run; an artifact
with BPF objects but no script still gets a load test ("object <file>" per object)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .expect import resolve_dir

SCRIPT = "kernel-test.txt"


@dataclass(frozen=True)
class ArtifactDir:
    name: str  # <Kind>/<name> from the manifest, else the directory's relative path
    path: Path | None
    script: str  # the kernel-test.txt text (possibly synthesised)
    synthesized: bool = False
    # A policy that did not compile for this kernel: reported as a `compile` step with
    # this status ("skip" when the compiler says the kernel lacks a feature).
    error: str | None = None
    error_status: str = "fail"


def compile_failure(name: str, message: str) -> ArtifactDir:
    """Stand-in for a policy the compiler refused for one target kernel."""
    status = "skip" if re.search(r"\blacks?\b|not supported on|needs .* kernel", message) else "fail"
    return ArtifactDir(_safe(name), None, "", error=message, error_status=status)


def _is_artifact(d: Path) -> bool:
    return (d / SCRIPT).is_file() or (d / "manifest.json").is_file()


def _name(d: Path, base: Path) -> str:
    manifest = d / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            if isinstance(data, dict) and data.get("kind") and data.get("name"):
                return f"{data['kind']}/{data['name']}"
        except (OSError, ValueError):
            pass
    rel = d.relative_to(base).as_posix() if d != base else d.name
    return rel or d.name


def _safe(name: str) -> str:
    """Names go into whitespace-separated RESULT lines."""
    return re.sub(r"[^A-Za-z0-9._/+-]", "_", name) or "artifact"


def load(d: Path, name: str) -> ArtifactDir | None:
    script_file = d / SCRIPT
    if script_file.is_file():  # event-expect lines resolved against the manifest (expect.py)
        return ArtifactDir(_safe(name), d, resolve_dir(d, script_file.read_text()))
    objects = sorted(p.relative_to(d).as_posix() for p in d.rglob("*.o"))
    if not objects:
        return None
    lines = [f"# synthesised by bpfpolicy kernel-test: {SCRIPT} missing, load test only"]
    lines += [f"object {o}" for o in objects]
    return ArtifactDir(_safe(name), d, "\n".join(lines) + "\n", synthesized=True)


def discover(root: Path) -> tuple[list[ArtifactDir], list[Path]]:
    """(artifacts under root, directories that look like artifacts but have nothing to run)."""
    root = root.resolve()
    found: list[ArtifactDir] = []
    empty: list[Path] = []
    candidates = [root] if _is_artifact(root) else sorted(
        {p.parent for p in root.rglob(SCRIPT)} | {p.parent for p in root.rglob("manifest.json")})
    base = root if len(candidates) > 1 or candidates[:1] != [root] else root.parent
    for d in candidates:
        if any(part.startswith(".") for part in d.relative_to(root).parts):
            continue  # half-written artifacts (Artifact.write's temp dirs)
        art = load(d, _name(d, base))
        if art is None:
            empty.append(d)
        else:
            found.append(art)
    return found, empty
