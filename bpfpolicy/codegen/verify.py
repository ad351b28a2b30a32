"""Run compiled objects through the kernel's verifier without attaching anything
(`compile --dry-run` when privileged), and point a rejection back at the policy rule.

With `-g`, the verifier log quotes the generated source line it was checking (`; code
@ prog.bpf.c:123`); the nearest `@policy #FILE:LINE:COL PATH` marker above that line
(`codegen.find_marker`, FILE resolved through the source's `@policy-files` table) names
the rule the user wrote.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..kernel.libbpf import BpfLoadError, BpfObject
from ..policy.diagnostics import Diagnostic
from .render import find_marker

_LOG_SOURCE = re.compile(r"^; (.*?)(?: @ [^:]+:(\d+))?$")


def verify_artifact(artifact_dir: Path, fallback: Diagnostic | None = None) -> list[Diagnostic]:
    """Load the artifact's object (if it has one) and unload it; diagnostics on refusal."""
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    if (artifact_dir / "filter.bin").exists():
        return _verify_seccomp(artifact_dir, manifest, fallback)
    obj_name = manifest.get("object")
    if not obj_name:
        return []
    try:
        with BpfObject.open_file(artifact_dir / obj_name) as obj:
            obj.load()
    except BpfLoadError as e:
        source = artifact_dir / "prog.bpf.c"
        return [rejection(manifest, str(e), e.log, source.read_text() if source.exists() else "", fallback)]
    return []


def _verify_seccomp(artifact_dir: Path, manifest: dict, fallback: Diagnostic | None) -> list[Diagnostic]:
    """Seccomp filters are checked by the kernel in a throwaway child (never us)."""
    from ..kernel.seccomp import verify

    error = verify((artifact_dir / "filter.bin").read_bytes())
    if error is None:
        return []
    text = f"the kernel refused the seccomp filter of {manifest.get('kind')}/{manifest.get('name')}: {error}"
    if fallback is not None:
        return [Diagnostic(fallback.file, fallback.line, fallback.col, fallback.path, text)]
    return [Diagnostic(str(artifact_dir), 0, 0, "$", text)]


def rejection(manifest: dict, message: str, log: str, source: str, fallback: Diagnostic | None) -> Diagnostic:
    who = f"{manifest.get('kind')}/{manifest.get('name')}"
    reason = last_verifier_line(log) or message.splitlines()[0]
    text = f"the kernel verifier rejected {who}: {reason}"
    marker = marker_for_log(log, source)
    if marker:
        file, line, col, path = marker
        return Diagnostic(file, line, col, path, text)
    if fallback is not None:
        return Diagnostic(fallback.file, fallback.line, fallback.col, fallback.path, text)
    return Diagnostic(who, 0, 0, "$", text)


def last_verifier_line(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.startswith(("libbpf:", ";"))]
    for ln in reversed(lines):
        if not ln.startswith(("processed ", "-- END PROG LOAD LOG --", "verification time")):
            return ln[-200:]
    return ""


def marker_for_log(log: str, source: str) -> tuple[str, int, int, str] | None:
    """The policy rule behind the last source line the verifier quoted."""
    src_lines = source.splitlines()
    quoted = [m for m in (_LOG_SOURCE.match(ln.strip()) for ln in log.splitlines()) if m]
    if not quoted or not src_lines:
        return None
    code, line_no = quoted[-1].group(1).strip(), quoted[-1].group(2)
    index = int(line_no) - 1 if line_no else next(
        (i for i in range(len(src_lines) - 1, -1, -1) if src_lines[i].strip() == code), -1)
    if index < 0:
        return None
    m = find_marker(source, index)
    return (m.file, m.line, m.col, m.path) if m else None
