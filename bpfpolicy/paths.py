"""Where the project's data lives (schemas, C templates), found relative to the package
so an editable install and a source checkout behave the same."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
SCHEMAS_DIR = ROOT / "schemas"
CODEGEN_DIR = ROOT / "codegen"


def cache_dir() -> Path:
    """Build cache: $BPFPOLICY_CACHE, else ~/.cache/bpfpolicy."""
    base = os.environ.get("BPFPOLICY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bpfpolicy"
    )
    return Path(base)
