"""GitOps semantics with real applies: `apply PATH` prunes only with `--prune` (or when
PATH is the configured source); `plan` speaks in rules (each kind's `describe_change`
over the policy document kept at apply), `--diff` prints the object's unified diff, and
hashes appear only in `-o json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_cli

SECCOMP = """apiVersion: bpfpolicy.io/v1
kind: SeccompProfile
metadata: {{name: {name}}}
spec:
  defaultAction: SCMP_ACT_ERRNO
  syscalls:
    - names: [exit_group]
      action: SCMP_ACT_ALLOW
    - names: [{names}]
      action: SCMP_ACT_ALLOW
"""

XDP = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: edge}}
spec:
  interfaces: [{{name: {ifname}, netns: {netns}}}]
  deny:
    - name: bogons
      sources: [{sources}]
"""

NETPOL = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: web}}
spec:
  endpointSelector: {{matchLabels: {{app: ex}}}}
  ingress:
    - fromCIDR: [10.0.0.0/8]
    - fromCIDR: [10.1.0.0/16]
{extra}"""

TRACING = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata: {{name: mkdirs}}
spec:
  kprobes:
  - call: sys_mkdir
    syscall: true
    args: [{{index: 0, type: string}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["/tmp/gitops-a"]}}]
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{second}"]}}]
"""


def _seccomp_tree(root: Path, name: str, names: str = "read, write") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.yaml").write_text(SECCOMP.format(name=name, names=names))
    return root


def _inventory(ctl) -> set[str]:  # noqa: ANN001
    from bpfpolicy.controller.state import Store

    return set(Store(ctl.state_dir).inventory())


def _config(ctl, extra: str) -> None:  # noqa: ANN001
    Path(ctl.env["BPFPOLICY_CONFIG"]).write_text("selfHeal: true\ninterval: 1\n" + extra)


def test_apply_path_prunes_only_with_prune(ctl, tmp_path: Path) -> None:
    a, b = _seccomp_tree(tmp_path / "a", "alpha"), _seccomp_tree(tmp_path / "b", "beta")
    assert run_cli(ctl, "apply", str(a)).returncode == 0
    kept = run_cli(ctl, "apply", str(b))
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "SeccompProfile/alpha: not in PATH (use --prune to remove)" in kept.stdout
    assert _inventory(ctl) == {"SeccompProfile/alpha", "SeccompProfile/beta"}
    plan = run_cli(ctl, "plan", str(b), "-o", "json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["kept"] == ["SeccompProfile/alpha"]
    pruned = run_cli(ctl, "apply", str(b), "--prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert _inventory(ctl) == {"SeccompProfile/beta"}
    assert not (ctl.state_dir / "applied" / "SeccompProfile" / "alpha").exists()


def test_apply_of_the_configured_source_prunes(ctl, tmp_path: Path) -> None:
    a, b = _seccomp_tree(tmp_path / "a", "alpha"), _seccomp_tree(tmp_path / "b", "beta")
    assert run_cli(ctl, "apply", str(a), str(b)).returncode == 0
    _config(ctl, f"source: {b}\n")
    res = run_cli(ctl, "apply", str(tmp_path / "a" / ".." / "b"))  # spelled differently
    assert res.returncode == 0, res.stdout + res.stderr
    assert _inventory(ctl) == {"SeccompProfile/beta"}


@pytest.mark.kernel
def test_plan_speaks_in_rules_per_kind(ctl, veth, tmp_path: Path) -> None:
    ep = (f"endpoints:\n  - name: ep\n    labels: {{app: ex}}\n"
          f"    interfaces: [{{name: {veth.if_a}, netns: {veth.ns_a}}}]\n    addresses: [{veth.ip4_a}]\n")
    _config(ctl, ep)
    root = _seccomp_tree(tmp_path / "pol", "web-api")
    docs = {"edge.yaml": (XDP, {"ifname": veth.if_a, "netns": veth.ns_a}, "sources", "192.0.2.0/24"),
            "web.yaml": (NETPOL, {}, "extra", ""),
            "mkdirs.yaml": (TRACING, {}, "second", "/tmp/gitops-b")}
    for fname, (text, fmt, key, val) in docs.items():
        (root / fname).write_text(text.format(**fmt, **{key: val}))
    first = run_cli(ctl, "apply", str(root))
    assert first.returncode == 0, first.stdout + first.stderr
    doc = ctl.state_dir / "applied" / "XDPBlocklist" / "edge" / "policy.yaml"
    assert doc.stat().st_mode & 0o777 == 0o600 and "192.0.2.0/24" in doc.read_text()

    edits = {"edge.yaml": "192.0.2.0/24, 203.0.113.7/32", "web.yaml": "    - fromCIDR: [10.2.0.0/16]\n",
             "mkdirs.yaml": "/tmp/gitops-c"}
    for fname, val in edits.items():
        text, fmt, key, _ = docs[fname]
        (root / fname).write_text(text.format(**fmt, **{key: val}))
    _seccomp_tree(root, "web-api", "read, write, openat2, fsync")

    plan = run_cli(ctl, "plan", str(root))
    assert plan.returncode == 1, plan.stdout + plan.stderr
    for line in ("XDPBlocklist/edge: deny[bogons] +1 source (203.0.113.7/32)",
                 "NetworkPolicy/web: ingress[2] added",
                 "SeccompProfile/web-api: syscalls[1] +2 names (fsync, openat2)",
                 "TracingPolicy/mkdirs: kprobes[0].selectors[1] changed"):
        assert line in plan.stdout, plan.stdout
    as_json = json.loads(run_cli(ctl, "plan", str(root), "-o", "json").stdout)
    hashes = [h for p in as_json["policies"] for a in p["actions"] for h in a.get("hashes", {}).values()]
    assert hashes and not any(h[:12] in plan.stdout for h in hashes)  # hashes only in JSON
    assert not re.search(r"\b[0-9a-f]{12}\b", plan.stdout)

    diff = run_cli(ctl, "plan", str(root), "--diff").stdout
    assert "--- applied/XDPBlocklist/edge\n+++ desired/XDPBlocklist/edge\n" in diff
    for changed in (r"^\+\s+- 203\.0\.113\.7/32$", r"^-\s+- /tmp/gitops-b$", r"^\+\s+- /tmp/gitops-c$",
                    r"^\+\s+- 10\.2\.0\.0/16$", r"^\+\s+- fsync$"):
        assert re.search(changed, diff, re.M), (changed, diff)
