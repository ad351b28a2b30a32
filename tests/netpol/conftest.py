"""NetworkPolicy test fixtures (helpers live in npplan.py / nphelpers.py beside this file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from npplan import Planner  # noqa: E402


@pytest.fixture
def planner(tmp_path: Path) -> Planner:
    return Planner(tmp_path)
