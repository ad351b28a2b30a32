"""Every schema is valid draft 2020-12 and documented well enough for editors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from bpfpolicy.kinds import KINDS
from bpfpolicy.resources import SCHEMAS_DIR

SCHEMAS = sorted(SCHEMAS_DIR.glob("*.json"))


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.name for p in SCHEMAS])
def test_schema_is_valid_and_described(path: Path) -> None:
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema"
    assert schema.get("title") or schema.get("description")


def test_every_kind_and_format_has_its_schema() -> None:
    names = {k.schema_file for k in KINDS.values()} | {f.schema_file for k in KINDS.values() for f in k.formats}
    assert {"xdpblocklist.json", "seccompprofile.json", "networkpolicy.json", "tracingpolicy.json"} <= names
    missing = sorted(n for n in names if not (SCHEMAS_DIR / n).exists())
    assert missing == []
