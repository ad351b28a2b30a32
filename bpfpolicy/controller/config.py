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

from ..kernel.bpffs import BPF_FS_MAGIC, statfs_magic
from ..policy.diagnostics import Diagnostic, PolicyError

DEFAULT_CONFIG = Path("/etc/bpfpolicy/config.yaml")
DEFAULT_BPFFS_ROOT = Path("/sys/fs/bpf/bpfpolicy")
DEFAULT_STATE_DIR = Path("/var/lib/bpfpolicy")
MIN_INTERVAL = 1.0
_ADDR = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]*):(\d{1,5})$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


_SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                  "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


@dataclass
class TrustedKey:
    """One key a git revision may be signed by: an OpenPGP public key (armored or binary)
    or one SSH allowed-signers line (`principal[,…] [options] keytype base64`)."""

    kind: str  # "openpgp" | "ssh"
    text: str
    origin: str  # where it was configured (for messages)
    raw: bytes | None = None  # a key file's bytes (what `gpg --import` reads)

    @property
    def data(self) -> bytes:
        return self.raw if self.raw is not None else self.text.encode()


@dataclass
class GitSource:
    """A git repository the controller polls; `path` selects a subdirectory of it."""

    repo: str
    ref: str = "main"
    poll_interval: float = 60.0
    path: str = "."
    trusted_keys: list[TrustedKey] = field(default_factory=list)  # empty: no signature check


@dataclass
class Endpoint:
    """One local workload (endpoint) a policy selects by labels. The raw entries go to the
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
    export: dict[str, Any] = field(default_factory=dict)  # exportFile/MaxBytes/Keep/Format (controller/export.py)

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
           "metricsAddress", "suspend", "exportFile", "exportMaxBytes", "exportKeep", "exportFormat"}
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
    from ..policy.load import LoadError, load_file

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
    cfg = _from_data(doc, errors, cfg_path.parent)
    if errors:
        raise PolicyError(sorted(errors))
    cfg.file = str(cfg_path)
    return cfg


def _from_data(doc: Any, errors: list[Diagnostic], cfg_dir: Path | None = None) -> HostConfig:
    from ..policy.diagnostics import did_you_mean

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

    for key, attr in (("bpffsRoot", "bpffs_root"), ("stateDir", "state_dir")):
        if key in get:
            value = get[key][1]
            problem = path_problem(value)
            if problem is None and key == "bpffsRoot":
                problem = bpffs_problem(Path(os.path.normpath(value)))
            if problem:
                err(key, problem)
            else:
                setattr(cfg, attr, Path(os.path.normpath(value)))
    if "source" in get:
        _source(get["source"][1], cfg, lambda m, sub=(): err("source", m, sub),
                [d for d in (cfg_dir, cfg.state_dir) if d is not None])
    if "endpoints" in get:
        cfg.endpoints = _endpoints(get["endpoints"][1], lambda m, sub=(): err("endpoints", m, sub))
        if isinstance(get["endpoints"][1], list):
            cfg.endpoints_raw = get["endpoints"][1]
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
    from .export import check_config as check_export

    cfg.export = check_export(get, err)
    return cfg


def path_problem(value: Any) -> str | None:
    """Configured paths are absolute and free of `..` (normalised before use: `//` and `.`
    collapse); None when fine."""
    if not isinstance(value, str) or not value.startswith("/"):
        return "must be an absolute path"
    if "\0" in value:
        return "must not contain a NUL byte"
    if ".." in value.split("/"):
        return 'must not contain ".." components'
    return None


def bpffs_problem(root: Path) -> str | None:
    """bpffsRoot must lie on a bpf filesystem (statfs magic 0xcafe4a11) and be a directory
    below its mount, never the mount itself (prune and GC remove what is under the root).
    A root that does not exist yet is judged by its nearest existing ancestor."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{probe} is not a directory"
    if statfs_magic(probe) != BPF_FS_MAGIC:
        return f"must be on a bpf filesystem (statfs magic 0x{BPF_FS_MAGIC:x}); {probe} is not (mount bpffs at /sys/fs/bpf)"
    if probe == root and statfs_magic(root.parent) != BPF_FS_MAGIC:  # an existing root is not the mount
        return "must be a directory below the bpffs mount, not the mount point itself"
    return None


def _source(value: Any, cfg: HostConfig, err: Any, key_dirs: list[Path] | None = None) -> None:
    if isinstance(value, str):
        problem = path_problem(value)
        if problem:
            err(problem)
        else:
            cfg.source_dir = Path(os.path.normpath(value))
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
        problem = path_problem(value["directory"])
        if problem:
            err(problem, ("directory",))
        else:
            cfg.source_dir = Path(os.path.normpath(value["directory"]))
        return
    g = value["git"]
    if not isinstance(g, dict):
        err("must be a mapping with repo, ref, pollInterval, path", ("git",))
        return
    for k in set(g) - {"repo", "ref", "pollInterval", "path", "trustedKeys"}:
        err(f'unknown field "{k}" (expected repo, ref, pollInterval, path, trustedKeys)', ("git", k))
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
    if "trustedKeys" in g:
        src.trusted_keys = _trusted_keys(g["trustedKeys"], lambda m, sub=(): err(m, ("git", "trustedKeys", *sub)),
                                         key_dirs or [])
    cfg.git = src


def _trusted_keys(value: Any, err: Any, key_dirs: list[Path]) -> list[TrustedKey]:
    """Each entry: an armored OpenPGP public key, an SSH allowed-signers line, or a file
    path (relative to the config file's directory, or absolute) inside the config or state
    directory holding either (binary OpenPGP keyrings too)."""
    out: list[TrustedKey] = []
    if not isinstance(value, list) or not value:
        err("must be a non-empty list of OpenPGP public keys, SSH allowed-signers lines or key files")
        return out
    for i, entry in enumerate(value):
        if not isinstance(entry, str) or not entry.strip():
            err("must be a string", (i,))
            continue
        origin = f"trustedKeys[{i}]"
        text = entry.strip()
        if "-----BEGIN PGP PUBLIC KEY BLOCK-----" in text:
            out.append(TrustedKey("openpgp", text + "\n", origin))
            continue
        if "\n" not in text and _ssh_line_problem(text) is None:
            out.append(TrustedKey("ssh", text, origin))
            continue
        if "\n" in text or any(t in text.split() for t in _SSH_KEY_TYPES):
            err(_ssh_line_problem(text) if "\n" not in text else
                "not an armored OpenPGP public key (-----BEGIN PGP PUBLIC KEY BLOCK-----)", (i,))
            continue
        path = Path(text) if text.startswith("/") else (key_dirs[0] / text if key_dirs else Path(text))
        if ".." in Path(text).parts:
            err('key file path must not contain ".." components', (i,))
            continue
        path = Path(os.path.normpath(path))
        if key_dirs and not any(path.is_relative_to(d) for d in key_dirs):
            err(f"key file {path} must be inside {' or '.join(map(str, key_dirs))}", (i,))
            continue
        try:
            data = path.read_bytes()
        except OSError as e:
            err(f"cannot read key file {path}: {e.strerror or e}", (i,))
            continue
        kind = _key_file_kind(data)
        if kind == "openpgp":
            out.append(TrustedKey("openpgp", data.hex(), f"{origin} ({path})", data))
            continue
        lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()
                 if ln.strip() and not ln.strip().startswith("#")]
        bad = [(n, _ssh_line_problem(ln)) for n, ln in enumerate(lines, 1) if _ssh_line_problem(ln)]
        if not lines or bad:
            err(f"key file {path}: " + (f"line {bad[0][0]}: {bad[0][1]}" if bad else "empty"), (i,))
            continue
        out.extend(TrustedKey("ssh", ln, f"{origin} ({path})") for ln in lines)
    return out


def _key_file_kind(data: bytes) -> str:
    if b"-----BEGIN PGP PUBLIC KEY BLOCK-----" in data or (data[:1] and data[0] & 0x80):
        return "openpgp"
    return "ssh"


def _ssh_line_problem(line: str) -> str | None:
    """An allowed-signers line: `principals [options] keytype base64 [comment]`."""
    import base64
    import binascii

    toks = line.split()
    idx = next((n for n, t in enumerate(toks) if t in _SSH_KEY_TYPES), None)
    if idx is None:
        return "not an SSH allowed-signers line (principal [options] ssh-ed25519 AAAA…)"
    if idx == 0:
        return "SSH allowed-signers line needs a principal before the key type (e.g. \"ci@example.com ssh-ed25519 AAAA…\")"
    if idx + 1 >= len(toks):
        return "SSH allowed-signers line has no key after the key type"
    try:
        blob = base64.b64decode(toks[idx + 1], validate=True)
    except (binascii.Error, ValueError):
        return "SSH allowed-signers line: the key is not base64"
    if toks[idx].encode() not in blob[:64]:
        return "SSH allowed-signers line: the key does not match its key type"
    return None


def _endpoints(value: Any, err: Any) -> list[Endpoint]:
    out: list[Endpoint] = []
    if not isinstance(value, list):
        err("must be a list of endpoints")
        return out
    seen: set[tuple[str, str]] = set()
    for i, ep in enumerate(value):
        if not isinstance(ep, dict):
            err("must be a mapping", (i,))
            continue
        for k in set(ep) - {"name", "namespace", "labels", "cgroup", "interfaces", "addresses", "ports",
                            "host", "allowLocalhost"}:
            err(f'unknown field "{k}"', (i, k))
        name = ep.get("name")
        if not isinstance(name, str) or not _DNS1123.match(name):
            err("must be a DNS-1123 label", (i, "name") if "name" in ep else (i,))
            continue
        ns = ep.get("namespace", "default")  # endpoints are unique per namespace, as pods are
        if not isinstance(ns, str) or not _DNS1123.match(ns):
            err("must be a DNS-1123 label", (i, "namespace"))
            continue
        if (ns, name) in seen:
            err(f'duplicate endpoint "{name}"' + (f' in namespace "{ns}"' if ns != "default" else ""), (i, "name"))
        seen.add((ns, name))
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
    for var, attr in (("BPFPOLICY_BPFFS_ROOT", "bpffs_root"), ("BPFPOLICY_STATE_DIR", "state_dir")):
        if env.get(var):
            problem = path_problem(env[var])
            if problem is None and attr == "bpffs_root":
                problem = bpffs_problem(Path(os.path.normpath(env[var])))
            if problem:
                raise PolicyError([Diagnostic(f"${var}", 1, 1, "$", problem)])
            setattr(cfg, attr, Path(os.path.normpath(env[var])))
    if env.get("BPFPOLICY_INTERVAL"):
        v = _duration(env["BPFPOLICY_INTERVAL"])
        if v is None or v <= 0:
            raise PolicyError([Diagnostic("$BPFPOLICY_INTERVAL", 1, 1, "$", "must be a duration")])
        cfg.interval = v
    if env.get("BPFPOLICY_SELF_HEAL"):
        cfg.self_heal = env["BPFPOLICY_SELF_HEAL"].lower() not in ("0", "false", "no", "off")
    if "BPFPOLICY_METRICS_ADDR" in env:
        cfg.metrics_address = env["BPFPOLICY_METRICS_ADDR"] or None
