"""A fleet on one machine: N real `bpfpolicy watch` controllers, each with its own state
dir, bpffs root, network namespace (its endpoint's veth) and metrics port, all pulling
ONE bare git repository served by `git daemon` on 127.0.0.1, scraped by a real
Prometheus (scrape_interval 1s, storage in tmp). A commit must reach every host, and
the fleet's convergence is read where an operator would read it: Prometheus' HTTP API
(`bpfpolicy_applied_revision_info` by host). One host reads a per-host path holding a
broken policy; it must show up in Prometheus as Stalled, never with the new revision.

Loopback only. Opt out with BPFPOLICY_FLEET=0; BPFPOLICY_FLEET_N sets N (default 10).
The numbers (N, commit → all converged) are printed: run with -s to see them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BPFPOLICY, REPO, _need_root

pytestmark = [pytest.mark.kernel, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("BPFPOLICY_FLEET") == "0", reason="BPFPOLICY_FLEET=0")]

FLEET_N = int(os.environ.get("BPFPOLICY_FLEET_N", "10"))
SCRAPE_INTERVAL = 1.0
COMMITS = 3

POLICY = """apiVersion: bpfpolicy.io/v1
kind: NetworkPolicy
metadata: {{name: web}}
spec:
  endpointSelector:
    matchLabels: {{app: web}}
  ingress:
    - fromCIDR: [10.0.0.0/8]
      toPorts:
        - ports: [{{port: "{port}", protocol: TCP}}]
"""
BROKEN = "apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {name: broken}\nspec: {deny: 3}\n"


@dataclass
class Host:
    name: str
    config: Path
    metrics_port: int
    bpffs_root: str
    process: subprocess.Popen[str] | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "fleet", "GIT_AUTHOR_EMAIL": "f@e",
           "GIT_COMMITTER_NAME": "fleet", "GIT_COMMITTER_EMAIL": "f@e"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


def _wait_tcp(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port}")


@contextlib.contextmanager
def _process(args: list[str], log: Path, **kw) -> Iterator[subprocess.Popen[str]]:  # noqa: ANN003
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1/query"

    def query(self, expr: str) -> list[dict]:
        url = self.base + "?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def hosts_at(self, revision: str) -> set[str]:
        rows = self.query(f'bpfpolicy_applied_revision_info{{revision="{revision}"}} == 1')
        return {r["metric"]["host"] for r in rows}

    def wait_for(self, expr: str, predicate, timeout: float) -> list[dict]:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = self.query(expr)
            if predicate(rows):
                return rows
            time.sleep(0.2)
        raise AssertionError(f"timed out on {expr}: {rows}")


def _need_tools() -> None:
    _need_root()
    for tool in ("prometheus", "git", "clang"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (scripts/setup.sh installs it)")


def _write_prometheus_config(path: Path, hosts: list[Host]) -> None:
    jobs = [{"targets": [f"127.0.0.1:{h.metrics_port}"], "labels": {"host": h.name}} for h in hosts]
    config = {"global": {"scrape_interval": f"{SCRAPE_INTERVAL:g}s", "scrape_timeout": "900ms"},
              "scrape_configs": [{"job_name": "bpfpolicy", "static_configs": jobs}]}
    path.write_text(json.dumps(config))  # JSON is YAML


def _host_config(h: Host, tmp: Path, git_url: str, path: str, pair) -> str:  # noqa: ANN001
    return json.dumps({
        "source": {"git": {"repo": git_url, "ref": "main", "pollInterval": "1s", "path": path}},
        "endpoints": [{"name": "web", "labels": {"app": "web"},
                       "interfaces": [{"name": pair.if_a, "netns": pair.ns_a}],
                       "addresses": [pair.ip4_a]}],
        "bpffsRoot": h.bpffs_root, "stateDir": str(tmp / h.name / "state"),
        "interval": "60s", "metricsAddress": f"127.0.0.1:{h.metrics_port}"})


def test_fleet_converges_and_a_failing_host_shows(tmp_path: Path) -> None:
    _need_tools()
    from bpfpolicy.kernel.netns import VethPair

    work, bare = tmp_path / "work", tmp_path / "srv" / "fleet.git"
    bare.parent.mkdir()
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    (work / "fleet").mkdir(parents=True)
    (work / "bad").mkdir()
    _git(work, "init", "-q", "-b", "main")
    (work / "fleet/web.yaml").write_text(POLICY.format(port=80))
    (work / "bad/web.yaml").write_text(POLICY.format(port=80))
    (work / "bad/broken.yaml").write_text(BROKEN)
    _git(work, "add", ".")
    _git(work, "commit", "-qm", "fleet: web allows 80")
    _git(work, "push", "-q", str(bare), "main")

    token = secrets.token_hex(3)
    hosts = [Host(name=f"h{i:02d}", config=tmp_path / f"h{i:02d}" / "config.yaml",
                  metrics_port=_free_port(), bpffs_root=f"/sys/fs/bpf/bpfpolicy-fleet-{token}-{i}")
             for i in range(FLEET_N)]
    bad = hosts[-1]
    git_port, prom_port = _free_port(), _free_port()
    git_url = f"git://127.0.0.1:{git_port}/fleet.git"
    _write_prometheus_config(tmp_path / "prometheus.yml", hosts)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_process(
            ["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
             f"--port={git_port}", f"--base-path={bare.parent}", str(bare.parent)],
            tmp_path / "git-daemon.log"))
        stack.enter_context(_process(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'prom'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            tmp_path / "prometheus.log"))
        _wait_tcp(git_port, 15)
        _wait_tcp(prom_port, 30)
        prom = Prometheus(prom_port)

        for h in hosts:
            pair = VethPair().create()
            stack.callback(pair.destroy)
            h.config.parent.mkdir()
            h.config.write_text(_host_config(h, tmp_path, git_url, "bad" if h is bad else "fleet", pair))
            env = {**os.environ, "BPFPOLICY_CACHE": str(tmp_path / h.name / "cache")}
            stack.callback(_destroy, h, env)
            h.process = stack.enter_context(_process(
                [*BPFPOLICY, "watch", "--config", str(h.config)], tmp_path / h.name / "watch.log",
                env=env, cwd=REPO))

        good = {h.name for h in hosts if h is not bad}
        first = f"main@sha1:{_git(work, 'rev-parse', 'HEAD')}"
        prom.wait_for(f'bpfpolicy_applied_revision_info{{revision="{first}"}} == 1',
                      lambda rows: {r["metric"]["host"] for r in rows} == good, timeout=240)

        # the failing host: Stalled (BuildFailed) in Prometheus, and never at a revision
        stalled = prom.wait_for(f'bpfpolicy_source_stalled{{host="{bad.name}"}} == 1', bool, timeout=30)
        assert stalled[0]["metric"]["reason"] == "BuildFailed", stalled
        assert bad.name not in prom.hosts_at(first)

        seconds: list[float] = []
        for k in range(COMMITS):
            (work / "fleet/web.yaml").write_text(POLICY.format(port=8080 + k))
            _git(work, "commit", "-qam", f"fleet: web allows {8080 + k}")
            revision = f"main@sha1:{_git(work, 'rev-parse', 'HEAD')}"
            pushed = time.monotonic()
            _git(work, "push", "-q", str(bare), "main")
            prom.wait_for(f'bpfpolicy_applied_revision_info{{revision="{revision}"}} == 1',
                          lambda rows: {r["metric"]["host"] for r in rows} == good, timeout=120)
            seconds.append(time.monotonic() - pushed)

        by_host = {r["metric"]["host"]: r["metric"]["revision"]
                   for r in prom.query("bpfpolicy_applied_revision_info == 1")}
        assert {by_host[name] for name in good} == {revision}, by_host
        assert by_host.get(bad.name) != revision
        assert all(h.process is not None and h.process.poll() is None for h in hosts)
        print(f"\nfleet: N={FLEET_N} (1 failing), scrape_interval={SCRAPE_INTERVAL:g}s, git poll 1s; "
              f"commit -> all converged (Prometheus): median {statistics.median(seconds):.1f}s "
              f"({', '.join(f'{s:.1f}' for s in seconds)})")
        for h in hosts:
            assert h.process is not None
            h.process.send_signal(signal.SIGTERM)


def _destroy(h: Host, env: dict[str, str]) -> None:
    """Unload what the host's controller applied (it leaves enforcement in place on stop)."""
    if h.process is not None and h.process.poll() is None:
        h.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            h.process.wait(timeout=30)
    subprocess.run([*BPFPOLICY, "destroy", "--yes", "--config", str(h.config)], env=env,
                   capture_output=True, cwd=REPO, timeout=120)
    with contextlib.suppress(OSError):
        shutil.rmtree(h.bpffs_root)
