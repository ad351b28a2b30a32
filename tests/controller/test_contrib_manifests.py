"""contrib/kubernetes and contrib/grafana, checked offline: every built-in resource against
the Kubernetes OpenAPI schemas `kubernetes-validate` ships (strict: unknown fields fail),
with the network cut off; the ServiceMonitor (a CRD, no schema shipped) by structure; the
manifests agree with the systemd unit and the config loader; the dashboard names only
metrics the controller's registry really exports (collected, not grepped).

No cluster runs here: this proves the manifests are well-formed and consistent, not that
the DaemonSet works on a node (docs/operations.md says so).
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "contrib" / "kubernetes"
DASHBOARD = ROOT / "contrib" / "grafana" / "bpfpolicy-fleet.json"
UNIT = ROOT / "bpfpolicy" / "cli" / "bpfpolicy.service"
K8S_VERSION = "1.30.0"  # appArmorProfile in securityContext is GA from 1.30
HOST_MOUNTS = {"/sys/fs/bpf", "/sys/kernel/tracing", "/sys/fs/cgroup", "/var/lib/bpfpolicy"}


def _docs() -> dict[str, dict[str, Any]]:
    """kind -> resource, for every manifest the kustomization lists."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for name in kust["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            out[doc["kind"]] = doc
    return out


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("schema validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _validate(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --------------------------------------------------------------------------- schemas


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("kind", ["Namespace", "ConfigMap", "DaemonSet", "Service"])
def test_builtin_resources_match_the_kubernetes_openapi_schema(kind: str, offline: None) -> None:
    pytest.importorskip("kubernetes_validate")
    _validate(_docs()[kind])


# Each row: a mutation of the DaemonSet the schema must reject (proves the check is real).
BROKEN = [
    ("unknown field", lambda d: d["spec"]["template"]["spec"].update(hostNetwrok=True)),
    ("wrong type", lambda d: d["spec"]["template"]["spec"].update(hostPID="yes")),
    ("missing selector", lambda d: d["spec"].pop("selector")),
]


@pytest.mark.parametrize("mutate", [m for _, m in BROKEN], ids=[n for n, _ in BROKEN])
def test_the_schema_check_rejects_broken_daemonsets(mutate: Any, offline: None) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    doc = _docs()["DaemonSet"]
    mutate(doc)
    with pytest.raises(kv.ValidationError):
        _validate(doc)


def test_servicemonitor_scrapes_the_metrics_service() -> None:
    """No schema ships for the prometheus-operator CRD: its selector must match the
    Service's labels and its endpoint name a Service port."""
    docs = _docs()
    sm, svc = docs["ServiceMonitor"], docs["Service"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["metadata"]["namespace"] in sm["spec"]["namespaceSelector"]["matchNames"]
    ports = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports


# --------------------------------------------------------------------------- consistency


def _agent(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return docs["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]


def test_daemonset_capabilities_are_the_systemd_units() -> None:
    unit = re.search(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M)
    assert unit is not None
    want = {c.removeprefix("CAP_") for c in unit.group(1).split()}
    caps = _agent(_docs())["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and set(caps["add"]) == want


def test_daemonset_mounts_the_host_paths_it_needs() -> None:
    docs = _docs()
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounted = {host[m["name"]]: m["mountPath"] for m in _agent(docs)["volumeMounts"] if m["name"] in host}
    assert mounted.keys() >= HOST_MOUNTS
    assert all(mounted[p] == p for p in HOST_MOUNTS), "host paths appear at the same path inside"


def test_configmap_is_a_valid_host_config_matching_the_ports(tmp_path: Path) -> None:
    """The ConfigMap's config.yaml goes through the controller's own loader; its bpffs
    root and state dir lie on the mounted host paths; the metrics port is the
    container's and the Service's."""
    from bpfpolicy.controller.config import parse_config

    docs = _docs()
    (tmp_path / "config.yaml").write_text(docs["ConfigMap"]["data"]["config.yaml"])
    cfg = parse_config(tmp_path / "config.yaml")
    assert cfg.git is not None, "the built-in git source"
    assert str(cfg.bpffs_root).startswith("/sys/fs/bpf/") and str(cfg.state_dir) == "/var/lib/bpfpolicy"
    port = int(str(cfg.metrics_address).rpartition(":")[2])
    container = {p["name"]: p["containerPort"] for p in _agent(docs)["ports"]}
    assert container["metrics"] == port
    assert [p["port"] for p in docs["Service"]["spec"]["ports"]] == [port]
    args = _agent(docs)["args"]
    mount = next(m["mountPath"] for m in _agent(docs)["volumeMounts"] if m["name"] == "config")
    assert args[args.index("--config") + 1] == f"{mount}/config.yaml"


def test_the_image_installs_every_host_requirement() -> None:
    from bpfpolicy.hostreqs import apt_packages

    text = (K8S / "Containerfile").read_text()
    installed = set(re.search(r"apt-get install -y --no-install-recommends ([^\\\n]+)", text).group(1).split())
    assert set(apt_packages()) <= installed


# --------------------------------------------------------------------------- dashboard


def exported_metric_names() -> set[str]:
    """Every sample name the controller's registry exposes, from its collectors' own
    families (a counter `x` is scraped as `x_total`, a histogram as `_bucket/_sum/_count`)."""
    from bpfpolicy.controller.metrics import REGISTRY

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "info": ("_info",), "gaugehistogram": ("_gsum", "_gcount")}
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return out


def test_dashboard_names_only_metrics_the_controller_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_metric_names()
    used = {m for e in _exprs(dashboard) for m in re.findall(r"\bbpfpolicy_[a-z0-9_]+", e)}
    assert "bpfpolicy_applied_revision_info" in used and "bpfpolicy_reconcile_duration_seconds_bucket" in used
    assert used <= exported, f"not exported by bpfpolicy/controller/metrics.py: {sorted(used - exported)}"


def test_dashboard_panels_have_unique_ids_and_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(p.get("targets") for p in dashboard["panels"])
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
