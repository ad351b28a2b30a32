"""`bpfpolicy doctor` reports what the host really accepts."""

from __future__ import annotations

import json

import pytest


@pytest.mark.kernel
def test_doctor_loads_programs_for_real(cli, root_required: None, clang_required: None) -> None:
    code, out = cli("doctor", "--format", "json")
    report = json.loads(out)
    checks = {(c["area"], c["name"]): c for c in report["checks"]}
    # This host (and any CI host) runs XDP, tc, cgroup_skb and seccomp.
    for key in [("load", "xdp"), ("load", "tc (sched_cls)"), ("load", "cgroup_skb"),
                ("attach", "xdp (generic)"), ("attach", "cgroup_skb"), ("attach", "seccomp")]:
        assert checks[key]["ok"] is True, checks[key]
    assert code == 0 and report["ok"] is True
    # Whatever the kernel refuses is explained, never just "no".
    for c in report["checks"]:
        if c["ok"] is False:
            assert c["detail"] and c["detail"] != "load failed"
    # fentry/LSM answers agree with lockdown: under lockdown they are refused with the reason.
    lockdown = checks[("kernel", "lockdown")]["detail"]
    if lockdown in ("integrity", "confidentiality"):
        assert checks[("load", "lsm")]["ok"] is False
        assert "lockdown" in checks[("load", "lsm")]["detail"]
