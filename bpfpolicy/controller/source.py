"""Where desired state comes from: a directory, or a git repository polled at a ref.

A git source is cloned once into `<state_dir>/git/` and moved to the fetched commit
with `git checkout --force --detach`; the revision is reported Flux-style as
`<ref>@sha1:<40 hex>`. A directory source has no commit, so its revision is
`dir@sha256:<hash of file names, sizes and mtimes>`, cheap enough to compute every
cycle and good enough to tell "something changed" in status.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .config import GitSource, HostConfig


class SourceError(Exception):
    """The source could not be fetched (network, bad ref); previous enforcement stays."""


@dataclass
class Snapshot:
    paths: list[Path]
    revision: str


def directory_revision(paths: list[Path]) -> str:
    """A fingerprint of a tree of policy files: names, sizes, mtimes and inodes (an
    artifact tree replaced by rename changes its manifest's inode). Hidden entries are
    skipped, like the loader does; os.scandir keeps this ~1 ms for 100 files."""
    from ..load import POLICY_SUFFIXES

    h = hashlib.sha256()

    def walk(d: str) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=True):
                walk(e.path)
            elif e.name.lower().endswith(POLICY_SUFFIXES):
                _add(e.path)

    def _add(path: str) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())

    for p in paths:
        if p.is_dir():
            walk(str(p))
        else:
            _add(str(p))
    return f"dir@sha256:{h.hexdigest()[:16]}"


def _git(args: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin",
                               "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"})
    if proc.returncode != 0:
        raise SourceError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def git_fetch(src: GitSource, workdir: Path) -> Snapshot:
    """Fetch `src.ref` and check it out; returns the tree path and `ref@sha1:…`."""
    if not (workdir / ".git").is_dir():
        workdir.mkdir(parents=True, exist_ok=True)
        _git(["init", "-q", str(workdir)])
        _git(["remote", "add", "origin", src.repo], cwd=workdir)
    else:
        _git(["remote", "set-url", "origin", src.repo], cwd=workdir)
    _git(["fetch", "-q", "--depth", "1", "origin", src.ref], cwd=workdir)
    sha = _git(["rev-parse", "FETCH_HEAD^{commit}"], cwd=workdir)
    try:
        head = _git(["rev-parse", "HEAD"], cwd=workdir)
    except SourceError:
        head = ""
    if head != sha:
        _git(["-c", "advice.detachedHead=false", "checkout", "-q", "--force", "--detach", sha], cwd=workdir)
        _git(["clean", "-q", "-fdx"], cwd=workdir)
    return Snapshot([workdir / src.path], f"{src.ref}@sha1:{sha}")


def snapshot(cfg: HostConfig, paths: list[Path] | None = None) -> Snapshot:
    """Explicit PATHs win; else the configured git or directory source."""
    if paths:
        return Snapshot(list(paths), directory_revision(list(paths)))
    if cfg.git is not None:
        return git_fetch(cfg.git, cfg.state_dir / "git")
    if cfg.source_dir is not None:
        return Snapshot([cfg.source_dir], directory_revision([cfg.source_dir]))
    raise SourceError("no policy source: pass PATH… or set `source` in the config file")
