"""Host configuration: where policies come from, where state lives, how often to reconcile.

`/etc/bpfpolicy/config.yaml` (or `--config FILE`). Every field is optional; a missing
file means "all defaults" so `bpfpolicy apply PATH` works on a bare host. Errors are
reported as `file:line:col: path: message` (the same loader as policies), because a
typo in the config of a fleet's controller should read like a typo in a policy.

Environment overrides exist so tests and benchmarks point the controller at throwaway
directories without writing a config file: BPFPOLICY_CONFIG, BPFPOLICY_BPFFS_ROOT,
BPFPOLICY_STATE_DIR, BPFPOLICY_INTERVAL, BPFPOLICY_SELF_HEAL, BPFPOLICY_METRICS_ADDR.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, PolicyError

DEFAULT_CONFIG = Path("/etc/bpfpolicy/config.yaml")
DEFAULT_BPFFS_ROOT = Path("/sys/fs/bpf/bpfpolicy")
DEFAULT_STATE_DIR = Path("/var/lib/bpfpolicy")
MIN_INTERVAL = 1.0
_ADDR = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]*):(\d{1,5})$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass
class GitSource:
    """A git repository the controller polls; `path` selects a subdirectory of it."""

    repo: str
    ref: str = "main"
    poll_interval: float = 60.0
    path: str = "."


@dataclass
class Endpoint:
    """One local workload NetworkPolicy selects by labels. The raw entries go to the
    compiler as `CompileContext.options["inventory"]`; the kind checks its own fields
    (`ports`, `host`)."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    cgroup: str | None = None
    interfaces: list[dict[str, Any]] = field(default_factory=list)  # [{name, netns}]
    addresses: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": dict(self.labels), "cgroup": self.cgroup,
                "interfaces": [dict(i) for i in self.interfaces], "addresses": list(self.addresses)}


@dataclass
class HostConfig:
    source_dir: Path | None = None
    git: GitSource | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    endpoints_raw: list[dict[str, Any]] | None = None  # as written: the kind validates the rest
    bpffs_root: Path = DEFAULT_BPFFS_ROOT
    state_dir: Path = DEFAULT_STATE_DIR
    interval: float = 30.0
    self_heal: bool = True
    metrics_address: str | None = None  # "host:port"; None = no metrics server
    suspend: bool = False
    file: str | None = None

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "inventory.json"

    @property
    def events_path(self) -> Path:
        return self.state_dir / "events.jsonl"

    @property
    def suspend_flag(self) -> Path:
        return self.state_dir / "suspended"

    @property
    def suspended(self) -> bool:
        """Suspended by config or by `bpfpolicy suspend` (a flag file, survives restarts)."""
        return self.suspend or self.suspend_flag.exists()


_FIELDS = {"source", "endpoints", "bpffsRoot", "stateDir", "interval", "selfHeal",
           "metricsAddress", "suspend"}
_SNAKE = {"bpffs_root": "bpffsRoot", "state_dir": "stateDir", "self_heal": "selfHeal",
          "metrics_address": "metricsAddress", "reconcile_interval": "interval"}


def load_config(path: str | Path | None = None, *, env: dict[str, str] | None = None) -> HostConfig:
    """Read, validate and apply env overrides. Raises PolicyError with every problem."""
    env = dict(os.environ) if env is None else env
    explicit = path is not None or bool(env.get("BPFPOLICY_CONFIG"))
    cfg_path = Path(path or env.get("BPFPOLICY_CONFIG") or DEFAULT_CONFIG)
    cfg = HostConfig()
    if cfg_path.exists():
        cfg = parse_config(cfg_path)
    elif explicit:
        raise PolicyError([Diagnostic(str(cfg_path), 1, 1, "$", "config file not found")])
    _apply_env(cfg, env)
    return cfg


def parse_config(cfg_path: Path) -> HostConfig:
    from ..load import LoadError, load_file

    try:
        docs = [d for d in load_file(cfg_path) if d.data is not None]
    except LoadError as e:
        if "empty" in e.diagnostic.message:
            return HostConfig(file=str(cfg_path))
        raise PolicyError([e.diagnostic]) from None
    if not docs:
        return HostConfig(file=str(cfg_path))
    doc = docs[0]
    errors: list[Diagnostic] = []
    cfg = _from_data(doc, errors)
    if errors:
        raise PolicyError(sorted(errors))
    cfg.file = str(cfg_path)
    return cfg


def _from_data(doc: Any, errors: list[Diagnostic]) -> HostConfig:
    from ..errors import did_you_mean

    data = doc.data
    cfg = HostConfig()
    if not isinstance(data, dict):
        errors.append(doc.diag((), "config must be a mapping"))
        return cfg
    for key in data:
        canon = _SNAKE.get(key, key)
        if canon not in _FIELDS:
            errors.append(doc.diag((key,), f'unknown field "{key}"{did_you_mean(str(key), _FIELDS)}'))
    get = {(_SNAKE.get(k, k)): (k, v) for k, v in data.items()}

    def err(key: str, msg: str, sub: tuple[str | int, ...] = ()) -> None:
        errors.append(doc.diag((get[key][0], *sub), msg))

    if "source" in get:
        _source(get["source"][1], cfg, lambda m, sub=(): err("source", m, sub))
    if "endpoints" in get:
        cfg.endpoints = _endpoints(get["endpoints"][1], lambda m, sub=(): err("endpoints", m, sub))
        if isinstance(get["endpoints"][1], list):
            cfg.endpoints_raw = get["endpoints"][1]
    for key, attr in (("bpffsRoot", "bpffs_root"), ("stateDir", "state_dir")):
        if key in get:
            value = get[key][1]
            if not isinstance(value, str) or not value.startswith("/"):
                err(key, "must be an absolute path")
            else:
                setattr(cfg, attr, Path(value))
    if "bpffsRoot" in get and isinstance(get["bpffsRoot"][1], str) and not get["bpffsRoot"][1].startswith("/sys/fs/bpf"):
        err("bpffsRoot", "must be under a bpffs mount (/sys/fs/bpf)")
    if "interval" in get:
        v = _duration(get["interval"][1])
        if v is None or v < MIN_INTERVAL:
            err("interval", f"must be a duration ≥ {MIN_INTERVAL:g}s (e.g. 30, \"30s\", \"5m\")")
        else:
            cfg.interval = v
    for key, attr in (("selfHeal", "self_heal"), ("suspend", "suspend")):
        if key in get:
            if not isinstance(get[key][1], bool):
                err(key, "must be true or false")
            else:
                setattr(cfg, attr, get[key][1])
    if "metricsAddress" in get:
        v = get["metricsAddress"][1]
        if v is not None and (not isinstance(v, str) or not _valid_addr(v)):
            err("metricsAddress", 'must be "host:port" (e.g. "127.0.0.1:9469") or null')
        else:
            cfg.metrics_address = v
    return cfg


def _source(value: Any, cfg: HostConfig, err: Any) -> None:
    if isinstance(value, str):
        cfg.source_dir = Path(value)
        return
    if not isinstance(value, dict):
        err("must be a directory path or a mapping with `directory` or `git`")
        return
    unknown = set(value) - {"directory", "git"}
    for k in unknown:
        err(f'unknown field "{k}" (expected "directory" or "git")', (k,))
    if ("directory" in value) == ("git" in value):
        err('exactly one of "directory" or "git" is required')
        return
    if "directory" in value:
        if not isinstance(value["directory"], str):
            err("must be a path", ("directory",))
        else:
            cfg.source_dir = Path(value["directory"])
        return
    g = value["git"]
    if not isinstance(g, dict):
        err("must be a mapping with repo, ref, pollInterval, path", ("git",))
        return
    for k in set(g) - {"repo", "ref", "pollInterval", "path"}:
        err(f'unknown field "{k}" (expected repo, ref, pollInterval, path)', ("git", k))
    if not isinstance(g.get("repo"), str) or not g.get("repo"):
        err('missing required field "repo"' if "repo" not in g else "must be a URL or path", ("git",) if "repo" not in g else ("git", "repo"))
        return
    src = GitSource(repo=g["repo"])
    if "ref" in g:
        if not isinstance(g["ref"], str) or not g["ref"] or " " in g["ref"]:
            err("must be a branch, tag or commit", ("git", "ref"))
        else:
            src.ref = g["ref"]
    if "pollInterval" in g:
        poll = _duration(g["pollInterval"])
        if poll is None or poll < MIN_INTERVAL:
            err(f"must be a duration ≥ {MIN_INTERVAL:g}s", ("git", "pollInterval"))
        else:
            src.poll_interval = poll
    if "path" in g:
        if not isinstance(g["path"], str) or g["path"].startswith("/") or ".." in Path(g["path"]).parts:
            err("must be a relative path inside the repository", ("git", "path"))
        else:
            src.path = g["path"]
    cfg.git = src


def _endpoints(value: Any, err: Any) -> list[Endpoint]:
    out: list[Endpoint] = []
    if not isinstance(value, list):
        err("must be a list of endpoints")
        return out
    seen: set[str] = set()
    for i, ep in enumerate(value):
        if not isinstance(ep, dict):
            err("must be a mapping", (i,))
            continue
        for k in set(ep) - {"name", "labels", "cgroup", "interfaces", "addresses", "ports", "host"}:
            err(f'unknown field "{k}"', (i, k))
        name = ep.get("name")
        if not isinstance(name, str) or not _DNS1123.match(name):
            err("must be a DNS-1123 label", (i, "name") if "name" in ep else (i,))
            continue
        if name in seen:
            err(f'duplicate endpoint "{name}"', (i, "name"))
        seen.add(name)
        labels = ep.get("labels", {})
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            err("must map strings to strings", (i, "labels"))
            labels = {}
        cgroup = ep.get("cgroup")
        if cgroup is not None and (not isinstance(cgroup, str) or not cgroup.startswith("/")):
            err("must be an absolute cgroup v2 path", (i, "cgroup"))
            cgroup = None
        ifaces = ep.get("interfaces", [])
        clean: list[dict[str, Any]] = []
        if not isinstance(ifaces, list):
            err("must be a list of {name, netns}", (i, "interfaces"))
            ifaces = []
        for j, itf in enumerate(ifaces):
            if isinstance(itf, str):
                itf = {"name": itf}
            if not isinstance(itf, dict) or not isinstance(itf.get("name"), str) or len(itf["name"]) > 15:
                err("must be {name: <ifname ≤ 15 chars>, netns: <name or null>}", (i, "interfaces", j))
                continue
            clean.append({"name": itf["name"], "netns": itf.get("netns")})
        addrs = ep.get("addresses", [])
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            err("must be a list of IP addresses", (i, "addresses"))
            addrs = []
        else:
            import ipaddress

            for j, a in enumerate(addrs):
                try:
                    ipaddress.ip_address(a)
                except ValueError:
                    err(f'"{a}" is not an IP address', (i, "addresses", j))
        out.append(Endpoint(name, labels, cgroup, clean, list(addrs)))
    return out


def _duration(value: Any) -> float | None:
    """30, 30.5, "30s", "5m", "1h", "250ms" → seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value)
        if m:
            scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
            return float(m.group(1)) * scale
    return None


def _valid_addr(v: str) -> bool:
    m = _ADDR.match(v)
    return bool(m) and 0 < int(m.group(2)) < 65536


def _apply_env(cfg: HostConfig, env: dict[str, str]) -> None:
    if env.get("BPFPOLICY_BPFFS_ROOT"):
        cfg.bpffs_root = Path(env["BPFPOLICY_BPFFS_ROOT"])
    if env.get("BPFPOLICY_STATE_DIR"):
        cfg.state_dir = Path(env["BPFPOLICY_STATE_DIR"])
    if env.get("BPFPOLICY_INTERVAL"):
        v = _duration(env["BPFPOLICY_INTERVAL"])
        if v is None or v <= 0:
            raise PolicyError([Diagnostic("$BPFPOLICY_INTERVAL", 1, 1, "$", "must be a duration")])
        cfg.interval = v
    if env.get("BPFPOLICY_SELF_HEAL"):
        cfg.self_heal = env["BPFPOLICY_SELF_HEAL"].lower() not in ("0", "false", "no", "off")
    if "BPFPOLICY_METRICS_ADDR" in env:
        cfg.metrics_address = env["BPFPOLICY_METRICS_ADDR"] or None
