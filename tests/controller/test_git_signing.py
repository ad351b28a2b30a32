"""Signed revisions end to end: a bare git remote, commits signed with real gpg and
ssh-keygen keys made here, a controller whose config trusts one OpenPGP key and one SSH
key. Trusted commits are applied; unsigned and untrusted ones are refused with
Stalled/UntrustedRevision naming the commit (and signer) while the enforcement stays."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ping, run_cli

pytestmark = pytest.mark.kernel

POLICY = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: edge}}
spec:
  interfaces: [{{name: {ifname}, netns: {netns}}}]
  deny:
    - name: listed
      sources: [{sources}]
"""

# (commit signed by, block b's address?, applied?)
STEPS = [
    ("gpg-trusted", False, True),
    ("unsigned", True, False),
    ("gpg-untrusted", True, False),
    ("ssh-trusted", True, True),
    ("ssh-untrusted", False, False),
    ("gpg-trusted", False, True),
]


def _run(*cmd: str, env: dict[str, str] | None = None, cwd: Path | None = None, inp: str | None = None) -> str:
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, cwd=cwd, input=inp, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
    return proc.stdout.strip()


def _gpg_key(home: Path, name: str) -> str:
    """A passphrase-less ed25519 signing key; returns its fingerprint."""
    _run("gpg", "--batch", "--gen-key", env={"GNUPGHOME": str(home)},
         inp=f"Key-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\nName-Real: {name}\n"
             f"Name-Email: {name}@example.test\nExpire-Date: 0\n%no-protection\n%commit\n")
    out = _run("gpg", "--batch", "--with-colons", "--fingerprint", f"{name}@example.test",
               env={"GNUPGHOME": str(home)})
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))


def _need_tools() -> None:
    from bpfpolicy.kinds import KINDS

    if "XDPBlocklist" not in KINDS:
        pytest.skip("XDPBlocklist kind not registered yet")
    for tool in ("git", "gpg", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


@pytest.fixture
def gnupg(tmp_path: Path):
    """A throwaway GNUPGHOME; its gpg-agent (started for signing) is stopped afterwards."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    try:
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)


def test_signed_revisions(ctl, veth, gnupg: Path, tmp_path: Path) -> None:
    _need_tools()
    from bpfpolicy.controller.config import load_config
    from bpfpolicy.controller.reconcile import Reconciler
    from bpfpolicy.kernel import xdp

    trusted_fpr, untrusted_fpr = _gpg_key(gnupg, "trusted"), _gpg_key(gnupg, "untrusted")
    armored = _run("gpg", "--batch", "--armor", "--export", trusted_fpr, env={"GNUPGHOME": str(gnupg)})
    for name in ("ssh_trusted", "ssh_untrusted"):
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp_path / name))
    ssh_pub = (tmp_path / "ssh_trusted.pub").read_text().split()
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    _run("git", "init", "-q", "--bare", "-b", "main", str(remote))
    _run("git", "init", "-q", "-b", "main", str(work))
    (work / "policies").mkdir()
    genv = {"GNUPGHOME": str(gnupg), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test", "GIT_CONFIG_GLOBAL": "/dev/null"}
    sign = {"gpg-trusted": ["-c", f"user.signingkey={trusted_fpr}"],
            "gpg-untrusted": ["-c", f"user.signingkey={untrusted_fpr}"],
            "ssh-trusted": ["-c", "gpg.format=ssh", "-c", f"user.signingkey={tmp_path / 'ssh_trusted.pub'}"],
            "ssh-untrusted": ["-c", "gpg.format=ssh", "-c", f"user.signingkey={tmp_path / 'ssh_untrusted.pub'}"]}

    key_block = "\n".join("      " + line for line in armored.splitlines())
    (tmp_path / "config.yaml").write_text(f"""selfHeal: true
interval: 1
source:
  git:
    repo: {remote}
    ref: main
    pollInterval: 1
    path: policies
    trustedKeys:
    - |
{key_block}
    - 'ci@example.test namespaces="git" {ssh_pub[0]} {ssh_pub[1]}'
""")
    cfg = load_config(env=ctl.env)
    assert cfg.git and [k.kind for k in cfg.git.trusted_keys] == ["openpgp", "ssh"]
    rec = Reconciler(cfg)
    applied_rev, prog_id = None, None
    for i, (signer, block_b, applied) in enumerate(STEPS):
        sources = ["192.0.2.1", veth.ip4_b] if block_b else ["192.0.2.1"]
        (work / "policies" / "edge.yaml").write_text(POLICY.format(ifname=veth.if_a, netns=veth.ns_a,
                                                                   sources=", ".join(sources)))
        _run("git", "add", ".", cwd=work, env=genv)
        _run("git", *sign.get(signer, []), "commit", "-q", "--allow-empty", *(["-S"] if signer in sign else []), "-m", f"step {i}",
             cwd=work, env=genv)
        _run("git", "push", "-q", str(remote), "main", cwd=work, env=genv)
        sha = _run("git", "rev-parse", "HEAD", cwd=work)
        res = rec.cycle()
        st = json.loads(run_cli(ctl, "status", "--format", "json").stdout)
        src = st["source"]
        assert src["last_attempted_revision"] == f"main@sha1:{sha}", signer
        if applied:
            assert res.ok and src["condition"] == "Ready", f"{signer}: {res.error}"
            applied_rev, prog_id = f"main@sha1:{sha}", xdp.query(veth.if_a, veth.ns_a).prog_id
        else:
            assert src["condition"] == "Stalled" and src["reason"] == "UntrustedRevision", f"{signer}: {src}"
            assert sha in src["message"], signer
            if signer == "unsigned":
                assert "not signed" in src["message"]
            elif signer == "gpg-untrusted":
                assert untrusted_fpr[-16:] in src["message"] and "not a trusted key" in src["message"]
            else:
                assert "ED25519 key SHA256:" in src["message"] and "not a trusted key" in src["message"]
            evs = [json.loads(x) for x in run_cli(ctl, "events").stdout.splitlines()]
            assert any(e["reason"] == "UntrustedRevision" and sha in e["message"] for e in evs), signer
            assert xdp.query(veth.if_a, veth.ns_a).prog_id == prog_id, signer  # nothing reloaded
        assert src["last_applied_revision"] == applied_rev, signer
        # the enforcing blocklist is the last *trusted* commit's
        last_trusted = next(b for s, b, a in reversed(STEPS[: i + 1]) if a)
        assert ping(veth) == (not last_trusted), signer
    # the checkout never held an untrusted tree: the files on disk are the last applied commit's
    assert veth.ip4_b not in (cfg.state_dir / "git" / "policies" / "edge.yaml").read_text()
