"""Every path the controller writes or deletes goes through `contained()`.

A policy name, a kind, a map name or an inventory entry is data: it may come from a
policy tree (a git repository the host does not control) or from a hand-edited state
file. None of them may steer a write, a rename or an rmtree outside the state dir or the
bpffs root, so each writer derives its path from one of those roots plus checked single
components, and the result is resolved (symlinks followed) and checked again.
"""

from __future__ import annotations

import os
from pathlib import Path


class UnsafePath(ValueError):
    """A path component or a resolved path that would leave its root."""


def check_component(part: str) -> str:
    """One path component: non-empty, no separator, not `.`/`..`, no NUL, not hidden
    (a leading dot is reserved for our temp dirs, which gc removes)."""
    if not isinstance(part, str) or not part:
        raise UnsafePath(f"empty path component {part!r}")
    if "\0" in part:
        raise UnsafePath(f"path component {part!r} contains NUL")
    if "/" in part or (os.altsep and os.altsep in part):
        raise UnsafePath(f"path component {part!r} contains a separator")
    if part in (".", "..") or part.startswith("."):
        raise UnsafePath(f"path component {part!r} is not a plain name")
    return part


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, symlinks resolved, is `root` or below it (root resolved too)."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
    except (OSError, ValueError):
        return False


def contained(root: Path, *parts: str) -> Path:
    """`root/part/...`, refusing absolute parts, `..`, NUL, separators inside a name, and
    a result whose resolved path (following any symlink already on disk) leaves `root`.
    Returns the unresolved joined path (so callers keep the names they show)."""
    root = Path(root)
    for part in parts:
        check_component(part)
    p = root.joinpath(*parts)
    if not is_inside(p, root):
        raise UnsafePath(f"{p} resolves outside {root}")
    return p


def check_inside(path: Path, root: Path) -> Path:
    """For paths read back from state (inventory `install_dir`, staging entries): the
    path must resolve inside `root`."""
    if "\0" in str(path) or not is_inside(path, root):
        raise UnsafePath(f"{path} is outside {root}")
    return Path(path)


def create_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """Open (creating) a state/log file with mode 0600 whatever the umask, and chmod an
    existing file down to 0600. Refuses a symlink as the final component."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd
