"""`bpfpolicy status` as an operator reads it: 80 columns with long names kept whole,
details with `-o wide` / `status NAME`, exit 0 only when every policy is Ready, and the
`--format json` shape unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import helpers.controller_artifacts as artifacts
from conftest import run_cli

pytestmark = pytest.mark.kernel

LONG = "edge-blocklist-for-the-frontend-load-balancers-eu-west"  # 54 characters


def _status(cfg, *args: str):  # noqa: ANN001, ANN202
    cfg.env["COLUMNS"] = "80"
    return run_cli(cfg, "status", *args)


def test_status_fits_80_columns_and_exit_code_follows_readiness(ctl, veth, tmp_path: Path) -> None:
    src = tmp_path / "src"
    artifacts.write(src, LONG, [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    assert run_cli(ctl, "apply", "--prebuilt", str(src)).returncode == 0

    ok = _status(ctl)
    assert ok.returncode == 0, ok.stdout + ok.stderr  # every policy Ready
    lines = ok.stdout.splitlines()
    assert max(len(x) for x in lines) <= 80, ok.stdout
    assert any(f"XDPBlocklist/{LONG}" in x for x in lines), ok.stdout  # the name whole, on one line
    assert "True" in ok.stdout and "deny_v4" not in ok.stdout  # details only with -o wide

    wide = _status(ctl, "-o", "wide")
    assert wide.returncode == 0 and "xdp" in wide.stdout.lower()
    one = _status(ctl, LONG)
    assert one.returncode == 0 and f"XDPBlocklist/{LONG}" in one.stdout.replace("\n", "")

    # a second policy the verifier rejects: Stalled → exit 1, the Ready one still listed
    broken = tmp_path / "broken"
    artifacts.write(broken, LONG, [veth.ip4_b], interface=veth.if_a, netns=veth.ns_a)
    artifacts.write(broken, "bad", ["192.0.2.1"], interface=None, netns=None, broken=True)
    assert run_cli(ctl, "apply", "--prebuilt", str(broken)).returncode == 1
    bad = _status(ctl)
    assert bad.returncode == 1, bad.stdout
    assert max(len(x) for x in bad.stdout.splitlines()) <= 80, bad.stdout
    assert "XDPBlocklist/bad" in bad.stdout and "False" in bad.stdout

    js = _status(ctl, "--format", "json")
    assert js.returncode == 1
    data = json.loads(js.stdout)
    assert set(data) >= {"source", "policies"}
    row = next(p for p in data["policies"] if p["policy"] == "XDPBlocklist/bad")
    assert {"condition", "reason", "message", "programs", "attachments", "counters",
            "last_applied_revision"} <= set(row)
    assert row["condition"] == "Stalled"
