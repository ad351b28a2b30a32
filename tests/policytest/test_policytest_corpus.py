"""The harness on the corpus (../shared/corpus beside the repo; skipped without it): every
Tetragon example that validates gets TracingPolicy `--init` cases (selector model; the host
runner where it drives the hook), and every
Cilium example that compiles — against examples/host-config.yaml, else an inventory
synthesised from its selectors — and every seccomp profile gets `test --init` cases, run
both ways (reference model; compiled program in the kernel as root, the seccomp emulator
always). Prints the counts and the time; any model/compiled disagreement fails the test
with both answers (a compiler bug)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bpfpolicy.policy.validate import validate_paths
from bpfpolicy.policytest import runner
from bpfpolicy.policytest.init import default_output, generate

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
HOST_CONFIG = ROOT / "examples" / "host-config.yaml"
PREFIXES = ("k8s:", "any:")
NS_LABEL = "io.kubernetes.pod.namespace"


def _selectors(node: Any, key: str = "") -> list[tuple[str, dict[str, str]]]:
    """(field name, matchLabels) of every selector in a policy document."""
    out: list[tuple[str, dict[str, str]]] = []
    if isinstance(node, dict):
        if isinstance(node.get("matchLabels"), dict):
            out.append((key, {str(k): str(v) for k, v in node["matchLabels"].items()}))
        for k, v in node.items():
            out += _selectors(v, str(k))
    elif isinstance(node, list):
        for v in node:
            out += _selectors(v, key)
    return out


def synthesised_inventory(policy: Path, out: Path) -> Path:
    """One endpoint per distinct selector of the policy (labels without k8s:/any:, in the
    policy's namespace unless the selector names one); nodeSelector gives the host."""
    endpoints: list[dict[str, Any]] = []
    for n, doc in enumerate(d for d in yaml.safe_load_all(policy.read_text()) if d):
        ns = (doc.get("metadata") or {}).get("namespace", "default")
        for i, (field, labels) in enumerate(_selectors(doc.get("spec") or doc.get("specs") or {})):
            clean = {k.split(":", 1)[1] if k.startswith(PREFIXES) else k: v for k, v in labels.items()}
            ep: dict[str, Any] = {"name": f"ep{n}x{i}", "namespace": clean.pop(NS_LABEL, ns), "labels": clean,
                                  "addresses": [f"10.200.{n}.{i + 1}", f"fd00:200::{n}:{i + 1}"]}
            if field == "nodeSelector":
                ep.update(host=True, interfaces=[{"name": "eth0"}])
                del ep["namespace"]
            else:
                ep["cgroup"] = f"/sys/fs/cgroup/ep{n}x{i}"
            endpoints.append(ep)
    out.write_text(json.dumps({"endpoints": endpoints}))
    return out


def _init_corpus(tmp: Path) -> tuple[list[Path], dict[str, str]]:
    """Generated test files in `tmp`, and the inventory each Cilium file used."""
    files, used = [], {}
    for f in sorted((CORPUS / "seccomp").glob("*.json")) + sorted((CORPUS / "cilium").glob("*.yaml")):
        if not validate_paths([f]).ok:
            continue
        out = default_output(tmp / f.name)
        inventories = [None] if f.suffix == ".json" else [HOST_CONFIG, None]
        for inv in inventories:
            if inv is None and f.suffix != ".json":
                inv = synthesised_inventory(f, tmp / f"{f.stem}.inventory.json")
            gen, diags = generate(f, out, inv)
            if gen is not None and gen.cases:
                out.write_text(gen.text)
                files.append(out)
                used[f.name] = "host-config" if inv == HOST_CONFIG else ("synthesised" if inv else "-")
                break
    return files, used


def test_corpus_generated_cases_agree_both_ways(tmp_path: Path) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not found: {CORPUS} (../shared/corpus beside the repo)")
    start = time.monotonic()
    files, used = _init_corpus(tmp_path)
    generated = time.monotonic() - start
    report = runner.run([str(f) for f in files])
    by_file: dict[str, dict[str, int]] = {}
    for r in report.results:
        row = by_file.setdefault(Path(r.case.file).name, {"cases": 0, "kernel": 0, "emulator": 0})
        row["cases"] += 1
        row["kernel"] += r.compiled_by.startswith("kernel") and "skipped" not in r.compiled_by
        row["emulator"] += r.compiled_by == "emulator"
    print(json.dumps({"files": len(files), "cases": len(report.results),
                      "kernel": sum(r["kernel"] for r in by_file.values()),
                      "emulator": sum(r["emulator"] for r in by_file.values()),
                      "generate_s": round(generated, 1), "run_s": round(report.seconds, 1),
                      "inventory": used, "per_file": by_file, "notes": report.kernel_notes}, indent=1))
    assert report.diagnostics == []
    bad = [(r.case.label, r.message) for r in report.results if r.status != "pass"]
    assert not bad, bad
    assert len(files) >= 15 and len(report.results) > 250
    if os.geteuid() == 0:
        assert sum(r["kernel"] for r in by_file.values()) > len(report.results) // 2


def test_tetragon_corpus_generated_cases_agree_both_ways(tmp_path: Path) -> None:
    """Every Tetragon example that validates gets `--init` cases: run on the model, and on the
    attached program where the host runner drives the hook with the case's binary. Printed:
    files, cases, how many ran on the kernel, cases left out (with the matcher the model
    cannot evaluate), time."""
    if not (CORPUS / "tetragon").is_dir():
        pytest.skip(f"corpus not found: {CORPUS / 'tetragon'}")
    start = time.monotonic()
    files, left_out, per_file = [], {}, {}
    for f in sorted((CORPUS / "tetragon").glob("*.yaml")):
        if not validate_paths([f]).ok:
            continue
        out = default_output(tmp_path / f.name)
        gen, diags = generate(f, out)
        assert gen is not None, (f.name, diags)
        per_file[f.name] = gen.cases
        left_out[f.name] = sorted({n.split(": ", 2)[-1] for n in gen.notes})
        if gen.cases:
            out.write_text(gen.text)
            files.append(str(out))
    generated = time.monotonic() - start
    report = runner.run(files)
    kernel = sum(r.compiled_by.startswith("kernel") for r in report.results)
    print(json.dumps({"validating": len(per_file), "files_with_cases": len(files), "cases": len(report.results),
                      "kernel": kernel, "model_only": len(report.results) - kernel,
                      "generate_s": round(generated, 2), "run_s": round(report.seconds, 2),
                      "per_file": per_file, "left_out": {k: v for k, v in left_out.items() if v},
                      "notes": report.kernel_notes}, indent=1))
    assert report.diagnostics == []
    bad = [(r.case.label, r.message) for r in report.results if r.status != "pass"]
    assert not bad, bad  # a compiler bug names both answers: the model's and the program's
    assert len(per_file) >= 25 and len(report.results) >= 30
