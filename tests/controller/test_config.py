"""Host config parsing and validation (no kernel needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bpfpolicy.controller.config import load_config
from bpfpolicy.policy.diagnostics import PolicyError

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


# (config text, the located error it must produce)
BAD_PATHS = [
    ("bpffsRoot: /sys/fs/bpf/../../etc\n", '1:1: bpffsRoot: must not contain ".." components'),
    ("bpffsRoot: /tmp/pins\n", "1:1: bpffsRoot: must be on a bpf filesystem (statfs magic 0xcafe4a11)"),
    ("bpffsRoot: /sys/fs/bpf\n", "1:1: bpffsRoot: must be a directory below the bpffs mount"),
    ("bpffsRoot: sys/fs/bpf/x\n", "1:1: bpffsRoot: must be an absolute path"),
    ("stateDir: /var/lib/../../etc\n", '1:1: stateDir: must not contain ".." components'),
    ("source: /srv/../etc/policies\n", '1:1: source: must not contain ".." components'),
    ("source: {directory: relative/dir}\n", "source.directory: must be an absolute path"),
    ("source: {git: {repo: /r, trustedKeys: []}}\n", "source.git.trustedKeys: must be a non-empty list"),
    ("source: {git: {repo: /r, trustedKeys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA]}}\n",
     "source.git.trustedKeys[0]: SSH allowed-signers line needs a principal"),
    ("source: {git: {repo: /r, trustedKeys: [../keys/ci.asc]}}\n",
     'source.git.trustedKeys[0]: key file path must not contain ".." components'),
    ("source: {git: {repo: /r, trustedKeys: [/etc/hostname]}}\n", "source.git.trustedKeys[0]: key file /etc/hostname must be inside"),
    ("source: {git: {repo: /r, trustedKeys: [missing.asc]}}\n", "source.git.trustedKeys[0]: cannot read key file"),
]


@pytest.mark.parametrize(("text", "error"), BAD_PATHS, ids=[t for t, _ in BAD_PATHS])
def test_bad_paths_and_keys_are_located(tmp_path: Path, text: str, error: str) -> None:
    if not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("bpffs not mounted at /sys/fs/bpf")
    f = tmp_path / "config.yaml"
    f.write_text(text)
    with pytest.raises(PolicyError) as e:
        load_config(f, env={})
    assert error in str(e.value) and str(f) in str(e.value)


def test_paths_normalised_and_env_root_checked(tmp_path: Path) -> None:
    if not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("bpffs not mounted at /sys/fs/bpf")
    f = tmp_path / "config.yaml"
    f.write_text("bpffsRoot: /sys/fs/bpf//bpfpolicy/./x/\nstateDir: /var/lib//bp/\nsource: /srv//p/\n")
    cfg = load_config(f, env={})
    assert (cfg.bpffs_root, cfg.state_dir, cfg.source_dir) == (Path("/sys/fs/bpf/bpfpolicy/x"), Path("/var/lib/bp"),
                                                               Path("/srv/p"))
    with pytest.raises(PolicyError, match=r"\$BPFPOLICY_BPFFS_ROOT:1:1: \$: must not contain"):
        load_config(f, env={"BPFPOLICY_BPFFS_ROOT": "/sys/fs/bpf/x/../../.."})


def test_trusted_key_file_inside_config_dir(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    line = ('ci@example.test namespaces="git" ssh-ed25519 '
            "AAAAC3NzaC1lZDI1NTE5AAAAIOh3aLHx5vXc4Jm4v3G9XjTq8mVtX9zGkGQfS9k2v9cL")
    (tmp_path / "keys" / "allowed_signers").write_text(f"# CI\n{line}\n")
    f = tmp_path / "config.yaml"
    f.write_text("source: {git: {repo: /r, trustedKeys: [keys/allowed_signers]}}\n")
    cfg = load_config(f, env={})
    assert cfg.git and [(k.kind, k.text) for k in cfg.git.trusted_keys] == [("ssh", line)]
