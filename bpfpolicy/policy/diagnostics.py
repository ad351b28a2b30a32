"""Diagnostics: every user-facing problem is a `file:line:col: path: message` line.

Validation collects all diagnostics instead of stopping at the first, so a CI run shows
every mistake in a policy tree at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "note"]  # a note informs; only errors fail


def format_path(path: tuple[str | int, ...] | list[str | int]) -> str:
    """Render a JSON path the way users read it: `spec.egress[0].toPorts`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "$"


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    col: int
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = f"{self.severity}: " if self.severity != "error" else ""
        return f"{self.file}:{self.line}:{self.col}: {self.path}: {prefix}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "message": self.message,
            "severity": self.severity,
        }


@dataclass
class PolicyError(Exception):
    """Raised when input is invalid; carries every diagnostic found."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)


class BuildError(Exception):
    """A generated program failed to compile or load; message is already user-facing."""


def did_you_mean(word: str, choices: object, cutoff: float = 0.75) -> str:
    """A ` (did you mean "x"?)` suffix, or "" when nothing is close enough."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)  # type: ignore[arg-type]
    return f' (did you mean "{close[0]}"?)' if close else ""
