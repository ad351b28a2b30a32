"""Host config parsing and validation (no kernel needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfpolicy.controller.config import load_config
from bpfpolicy.errors import PolicyError

GOOD = """source:
  git: {repo: https://example.com/policies.git, ref: main, pollInterval: 2m, path: hosts/web}
endpoints:
  - name: web
    labels: {app: web}
    cgroup: /sys/fs/cgroup/unified/web
    interfaces: [{name: eth0, netns: null}, veth1]
    addresses: [10.0.0.5, "fd00::5"]
bpffsRoot: /sys/fs/bpf/custom
stateDir: /var/lib/custom
interval: 45s
selfHeal: false
metricsAddress: 127.0.0.1:9469
"""


def test_full_config(tmp_path: Path) -> None:
    f = tmp_path / "config.yaml"
    f.write_text(GOOD)
    cfg = load_config(f, env={})
    assert cfg.git and cfg.git.poll_interval == 120 and cfg.git.path == "hosts/web"
    assert cfg.endpoints[0].interfaces == [{"name": "eth0", "netns": None}, {"name": "veth1", "netns": None}]
    assert cfg.bpffs_root == Path("/sys/fs/bpf/custom") and cfg.interval == 45
    assert cfg.self_heal is False and cfg.metrics_address == "127.0.0.1:9469"


def test_defaults_and_env_overrides(tmp_path: Path) -> None:
    cfg = load_config(env={"BPFPOLICY_CONFIG": "", "BPFPOLICY_BPFFS_ROOT": "/sys/fs/bpf/t",
                           "BPFPOLICY_STATE_DIR": str(tmp_path), "BPFPOLICY_SELF_HEAL": "off"})
    assert cfg.bpffs_root == Path("/sys/fs/bpf/t") and cfg.state_dir == tmp_path
    assert cfg.self_heal is False and cfg.interval == 30 and not cfg.suspended


def test_every_error_is_located(tmp_path: Path) -> None:
    f = tmp_path / "config.yaml"
    f.write_text("""source: {directory: /p, git: {repo: x}}
bpffsroot: /x
interval: 0.1
selfHeal: "yes"
metricsAddress: nine
endpoints:
  - name: Web_1
  - name: db
    addresses: [300.1.1.1]
""")
    with pytest.raises(PolicyError) as e:
        load_config(f, env={})
    text = str(e.value)
    assert f"{f}:1:1: source: exactly one of \"directory\" or \"git\" is required" in text
    assert 'unknown field "bpffsroot" (did you mean "bpffsRoot"?)' in text
    assert f"{f}:3:1: interval: must be a duration" in text
    assert "selfHeal: must be true or false" in text
    assert "metricsAddress: must be \"host:port\"" in text
    assert "endpoints[0].name: must be a DNS-1123 label" in text
    assert '"300.1.1.1" is not an IP address' in text


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", env={})
