"""Where desired state comes from: a directory, or a git repository polled at a ref.

A git source is cloned once into `<state_dir>/git/` and moved to the fetched commit
with `git checkout --force --detach`; the revision is reported Flux-style as
`<ref>@sha1:<40 hex>`. A directory source has no commit, so its revision is
`dir@sha256:<hash of file names, sizes and mtimes>`, cheap enough to compute every
cycle and good enough to tell "something changed" in status.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .config import GitSource, HostConfig

MAX_TREE_DEPTH = 64
"""Directory nesting below a source root that is walked; a deeper tree is reported as a
problem (the revision is refused) rather than silently partially read."""


class SourceError(Exception):
    """The source could not be fetched (network, bad ref); previous enforcement stays."""

    reason = "ArtifactFailed"
    revision: str | None = None


class SourceProblem(SourceError):
    """The fetched tree cannot be read as a whole (symlink loop, unreadable directory,
    a policy file that is not a regular file): the revision is refused like a build
    failure — nothing of it is applied."""

    reason = "BuildFailed"

    def __init__(self, problems: list[str], revision: str | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.revision = revision


class UntrustedRevision(SourceError):
    """A git revision whose commit signature is missing or not by a trusted key."""

    reason = "UntrustedRevision"

    def __init__(self, message: str, revision: str) -> None:
        super().__init__(message)
        self.revision = revision


@dataclass
class Snapshot:
    paths: list[Path]
    revision: str
    files: list[Path] = field(default_factory=list)  # policy files found by the walk


@dataclass
class Tree:
    """What a walk of the source found: policy files, a fingerprint, and problems."""

    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    digest: str = ""


def scan(paths: list[Path], extra: str = "") -> Tree:
    """Walk the source paths without ever raising: names, sizes, mtimes and inodes of
    every regular file in the tree go into a fingerprint — policy files and the files
    policies read (XDPBlocklist `sourceFiles` lists, which must live inside the tree), so
    appending a CIDR to a list is a new revision; an artifact tree replaced by rename
    changes its manifest's inode. Names are hashed relative to their root, so `pol` and
    `/abs/pol` are the same revision. `extra` folds in what the host config adds (the
    endpoint inventory). Hidden entries are skipped, like the loader does.

    Directory symlinks are followed only when they stay inside the root they were met
    under; one that points out of the tree, one that leads back to a directory already
    on the current path (a loop, detected by (st_dev, st_ino)), a dangling or looping
    symlink, an unreadable directory and a policy-named entry that is not a regular file
    (FIFO, socket, device: reading it could block the controller) are problems."""
    from ..policy.load import POLICY_SUFFIXES

    tree = Tree()
    h = hashlib.sha256()
    h.update(extra.encode() + b"\0")
    here: list[str] = ["", ""]  # (root index, root path) of the walk in progress

    def fingerprint(path: str, st: os.stat_result) -> None:
        rel = os.path.relpath(path, here[1]) if here[1] else os.path.basename(path)
        h.update(f"{here[0]}:{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())

    def add(path: str, st: os.stat_result) -> None:
        tree.files.append(Path(path))
        fingerprint(path, st)

    def policy_file(path: str, st: os.stat_result) -> None:
        if stat.S_ISREG(st.st_mode):
            add(path, st)
        else:
            tree.problems.append(f"{path}: not a regular file ({_file_type(st.st_mode)})")

    def walk(d: str, root_real: str, ancestors: tuple[tuple[int, int], ...], depth: int) -> None:
        if depth > MAX_TREE_DEPTH:
            tree.problems.append(f"{d}: directory nesting deeper than {MAX_TREE_DEPTH} levels")
            return
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            tree.problems.append(f"{d}: unreadable directory: {e.strerror or e}")
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_link = e.is_symlink()
                st = os.stat(e.path)  # follows a symlink
            except OSError as err:
                if is_link_safe(e) or e.name.lower().endswith(POLICY_SUFFIXES):
                    tree.problems.append(f"{e.path}: {_why_unreadable(err)}")
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    tree.problems.append(f"{e.path}: directory symlink loop (leads back to "
                                         f"{os.path.realpath(e.path)})")
                    continue
                if is_link:
                    real = os.path.realpath(e.path)
                    if real != root_real and not real.startswith(root_real.rstrip("/") + "/"):
                        tree.problems.append(f"{e.path}: directory symlink points out of the source tree "
                                             f"({real}); not followed")
                        continue
                walk(e.path, root_real, (*ancestors, key), depth + 1)
            elif e.name.lower().endswith(POLICY_SUFFIXES):
                policy_file(e.path, st)
            elif stat.S_ISREG(st.st_mode):
                fingerprint(e.path, st)  # a file a policy may read (a sourceFiles list)

    for i, p in enumerate(paths):
        here[0] = str(i)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue  # the build reports a missing path with its location
        except OSError as err:
            tree.problems.append(f"{p}: {_why_unreadable(err)}")
            continue
        if stat.S_ISDIR(st.st_mode):
            here[1] = str(p)
            walk(str(p), os.path.realpath(p), ((st.st_dev, st.st_ino),), 0)
        else:
            here[1] = ""
            policy_file(str(p), st)
    tree.digest = h.hexdigest()[:16]
    return tree


def is_link_safe(e: os.DirEntry[str]) -> bool:
    try:
        return e.is_symlink()
    except OSError:
        return False


def _why_unreadable(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    if err.errno == errno.ENOENT:
        return "dangling symlink"
    return f"cannot stat: {err.strerror or err}"


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return "special file"


def directory_revision(paths: list[Path]) -> str:
    """`dir@sha256:<fingerprint>` of a tree of policy files; never raises (problems found
    by the walk are reported by `snapshot`, the fingerprint covers what could be read)."""
    return f"dir@sha256:{scan(paths).digest}"


_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": "/nonexistent",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
# hooks are never run (a fetched repository cannot bring its own config, but a state dir
# someone edited could); verification needs no filters, checkout runs none we configured
_NO_HOOKS = ["-c", "core.hooksPath=/dev/null"]


def _git(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = _run_git(args, cwd, env)
    if proc.returncode != 0:
        raise SourceError(f"git {' '.join(args)}: {_one_line(proc.stderr.strip() or proc.stdout.strip())}")
    return proc.stdout.strip()


def _run_git(args: list[str], cwd: Path | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *_NO_HOOKS, *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**_GIT_ENV, **(env or {})})


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def git_fetch(src: GitSource, workdir: Path, trust_dir: Path | None = None) -> Snapshot:
    """Fetch `src.ref`, verify the commit's signature when `trustedKeys` are configured,
    and check it out; returns the tree path and `ref@sha1:…`. An unsigned or untrusted
    commit raises UntrustedRevision before anything of it is checked out."""
    if not (workdir / ".git").is_dir():
        workdir.mkdir(parents=True, exist_ok=True)
        _git(["init", "-q", str(workdir)])
        _git(["remote", "add", "origin", src.repo], cwd=workdir)
    else:
        _git(["remote", "set-url", "origin", src.repo], cwd=workdir)
    _git(["fetch", "-q", "--depth", "1", "origin", src.ref], cwd=workdir)
    sha = _git(["rev-parse", "FETCH_HEAD^{commit}"], cwd=workdir)
    revision = f"{src.ref}@sha1:{sha}"
    if src.trusted_keys:
        verify_commit(src, workdir, sha, trust_dir or workdir.parent / "git-trust", revision)
    try:
        head = _git(["rev-parse", "HEAD"], cwd=workdir)
    except SourceError:
        head = ""
    if head != sha:
        _git(["-c", "advice.detachedHead=false", "checkout", "-q", "--force", "--detach", sha], cwd=workdir)
        _git(["clean", "-q", "-fdx"], cwd=workdir)
    return Snapshot([workdir / src.path], revision)


# -- signed revisions ----------------------------------------------------------------------

def _keys_digest(src: GitSource) -> str:
    h = hashlib.sha256()
    for k in src.trusted_keys:
        h.update(f"{k.kind}\0{k.text}\0".encode())
    return h.hexdigest()


def prepare_trust(src: GitSource, trust_dir: Path) -> tuple[Path, Path]:
    """A private GNUPGHOME holding only the trusted OpenPGP keys (ownertrust ultimate, so
    `gpg.minTrustLevel=fully` accepts them and nothing else) and an allowed-signers file
    with only the trusted SSH lines. Rebuilt when the configured keys change."""
    gnupg, allowed, stamp = trust_dir / "gnupg", trust_dir / "allowed_signers", trust_dir / "keys.sha256"
    digest = _keys_digest(src)
    try:
        if stamp.read_text() == digest and gnupg.is_dir() and allowed.is_file():
            return gnupg, allowed
    except OSError:
        pass
    import shutil

    trust_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(trust_dir, 0o700)
    shutil.rmtree(gnupg, ignore_errors=True)
    gnupg.mkdir(mode=0o700)
    env = {**_GIT_ENV, "GNUPGHOME": str(gnupg)}
    for k in src.trusted_keys:
        if k.kind != "openpgp":
            continue
        proc = subprocess.run(["gpg", "--batch", "--quiet", "--no-autostart", "--import"], input=k.data,
                              capture_output=True, env=env, check=False)
        if proc.returncode != 0:
            raise SourceError(f"trustedKeys ({k.origin}): gpg --import failed: "
                              f"{_one_line(proc.stderr.decode(errors='replace'))}")
    listing = subprocess.run(["gpg", "--batch", "--no-autostart", "--with-colons", "--fingerprint", "--list-keys"],
                             capture_output=True, text=True, env=env, check=False).stdout
    fprs, prev = [], ""
    for line in listing.splitlines():
        f = line.split(":")
        if f[0] == "fpr" and prev == "pub":
            fprs.append(f[9])
        prev = f[0] if f[0] != "fpr" else prev
    if fprs:
        trust = "".join(f"{fpr}:6:\n" for fpr in fprs)
        subprocess.run(["gpg", "--batch", "--quiet", "--no-autostart", "--import-ownertrust"], input=trust.encode(),
                       capture_output=True, env=env, check=False)
    lines = [k.text.strip() for k in src.trusted_keys if k.kind == "ssh"]
    tmp = allowed.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    os.replace(tmp, allowed)
    stamp.write_text(digest)
    return gnupg, allowed


def verify_commit(src: GitSource, workdir: Path, sha: str, trust_dir: Path, revision: str) -> str:
    """`git verify-commit` of the fetched commit against only the trusted keys; returns the
    signer. Raises UntrustedRevision naming the commit and the signer (if any)."""
    gnupg, allowed = prepare_trust(src, trust_dir)
    proc = _run_git(["-c", f"gpg.ssh.allowedSignersFile={allowed}", "-c", "gpg.minTrustLevel=fully",
                     "-c", "gpg.program=gpg", "verify-commit", "--raw", sha], workdir,
                    {"GNUPGHOME": str(gnupg)})
    out = proc.stderr + proc.stdout
    signer = _signer(out)
    if proc.returncode == 0 and signer and "[GNUPG:] BADSIG" not in out and "[GNUPG:] ERRSIG" not in out:
        return signer
    if not signer:
        why = "is not signed" if "no signature found" in out or not out.strip() else \
            f"signature could not be verified ({_one_line(out)[:200]})"
        raise UntrustedRevision(f"commit {sha} {why}; trustedKeys require a signature by a trusted key", revision)
    if "[GNUPG:] BADSIG" in out:
        raise UntrustedRevision(f"commit {sha} has a BAD signature by {signer}", revision)
    raise UntrustedRevision(f"commit {sha} is signed by {signer}, which is not a trusted key", revision)


def _signer(out: str) -> str:
    """Who signed, from `verify-commit --raw` (gpg status lines or ssh-keygen's text)."""
    import re

    for pat, fmt in ((r"\[GNUPG:\] (?:GOODSIG|BADSIG|EXPSIG|EXPKEYSIG|REVKEYSIG) (\S+) (.*)", "OpenPGP key {0} ({1})"),
                     (r"\[GNUPG:\] ERRSIG (\S+)", "OpenPGP key {0}"),
                     (r"\[GNUPG:\] NO_PUBKEY (\S+)", "OpenPGP key {0}"),
                     (r'Good "git" signature for (\S+) with (\S+) key (\S+)', "{1} key {2} ({0})"),
                     (r'signature with (\S+) key (SHA256:\S+)', "{0} key {1}"),
                     (r"(\S+) key (SHA256:[A-Za-z0-9+/=]+)", "{0} key {1}")):
        m = re.search(pat, out)
        if m:
            return fmt.format(*m.groups())
    return ""


def snapshot(cfg: HostConfig, paths: list[Path] | None = None) -> Snapshot:
    """Explicit PATHs win; else the configured git or directory source. The tree is walked
    once (`scan`); a tree with problems raises SourceProblem naming each."""
    if paths:
        roots, revision = list(paths), None
    elif cfg.git is not None:
        snap = git_fetch(cfg.git, cfg.state_dir / "git", cfg.state_dir / "git-trust")
        roots, revision = snap.paths, snap.revision
    elif cfg.source_dir is not None:
        roots, revision = [cfg.source_dir], None
    else:
        raise SourceError("no policy source: pass PATH… or set `source` in the config file")
    inventory = json.dumps(cfg.endpoints_raw, sort_keys=True, default=str) if cfg.endpoints_raw else ""
    tree = scan(roots, inventory)
    revision = revision or f"dir@sha256:{tree.digest}"
    if tree.problems:
        raise SourceProblem(tree.problems, revision)
    return Snapshot(roots, revision, tree.files)
