"""Package data: the JSON Schemas and the C templates ship inside the package (wheel
included), found through importlib.resources; plus the build cache location."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

SCHEMAS_DIR = Path(str(files("bpfpolicy").joinpath("schemas")))
CODEGEN_DIR = Path(str(files("bpfpolicy").joinpath("codegen", "templates")))
MATRIX_DATA_DIR = Path(str(files("bpfpolicy").joinpath("matrix", "data")))  # guest runner source, init


class MissingPackageData(RuntimeError):
    """The installed package lacks its schemas or templates (a broken build)."""


def require(directory: Path, what: str) -> Path:
    """Refuse to run without package data rather than silently skip checks."""
    if not directory.is_dir() or not any(directory.iterdir()):
        raise MissingPackageData(
            f"bpfpolicy is installed without its {what}: {directory} is missing or empty; "
            "reinstall the package")
    return directory


def cache_dir() -> Path:
    """Build cache: $BPFPOLICY_CACHE, else $XDG_CACHE_HOME/bpfpolicy or ~/.cache/bpfpolicy."""
    base = os.environ.get("BPFPOLICY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bpfpolicy"
    )
    return Path(base)
