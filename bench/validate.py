"""How long `bpfpolicy validate` takes on 1,000 policy files (target: < 2 s here).

Generates a tree of 1,000 small policies of every kind in a temp dir, then times the
real CLI as a subprocess (interpreter start-up included), median of 5 runs. Anchor: the
target from issue #2. Last line: JSON.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BPFPOLICY = [sys.executable, "-m", "bpfpolicy"]

TEMPLATES = [
    "apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {{name: xdp-{i}}}\nspec:\n"
    "  interfaces: [eth0]\n  deny:\n    - name: r{i}\n      sources: [10.{a}.{b}.0/24, 192.0.2.{b}/32]\n"
    "      protocols: [tcp]\n      ports: [22, \"8000-8100\"]\n",
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: np-{i}}}\nspec:\n"
    "  endpointSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n    - fromCIDR: [10.{a}.0.0/16]\n"
    "      toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}]}}]\n",
    "apiVersion: bpfpolicy.io/v1\nkind: SeccompProfile\nmetadata: {{name: sc-{i}}}\nspec:\n"
    "  defaultAction: SCMP_ACT_ERRNO\n  syscalls:\n    - names: [read, write, exit_group, getppid]\n"
    "      action: SCMP_ACT_ALLOW\n",
    "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {{name: tp-{i}}}\nspec:\n"
    "  tracepoints:\n    - subsystem: syscalls\n      event: sys_enter_openat\n"
    "      args: [{{index: 6, type: string}}]\n",
]


def make_tree(root: Path, n: int = 1000) -> None:
    for i in range(n):
        text = TEMPLATES[i % len(TEMPLATES)].format(i=i, a=i % 250, b=i % 200)
        (root / f"p{i:04d}.yaml").write_text(text)


def time_validate(root: Path) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run([*BPFPOLICY, "validate", "--format", "json", str(root)], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    valid = len(json.loads(proc.stdout)["policies"]) if proc.stdout.strip().startswith("{") else -1
    return elapsed, valid


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tree(root)
        runs = [time_validate(root) for _ in range(5)]
    seconds = statistics.median(r[0] for r in runs)
    row = {"impl": "bpfpolicy", "case": "validate-1000-files", "seconds": round(seconds, 3), "valid_policies": runs[0][1]}
    target = {"impl": "target", "case": "validate-1000-files", "seconds": 2.0}
    print(json.dumps({"bench": "validate", "kernel": platform.release(), "rows": [row, target],
                      "ratios": {"seconds@validate-1000-files": round(seconds / 2.0, 3)}}))


if __name__ == "__main__":
    main()
