"""sourceFiles read only regular files inside the policy tree (issue #11, file safety).

Each case is the real CLI on a real tree: exit 1 with `file:line:col: path: message`, no
traceback, and the content of the file it must not read never in the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SECRET = "TOPSECRET-h5-do-not-print"
POLICY = """apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {{name: t}}
spec:
  interfaces: [lo]
  deny:
    - sourceFiles: [{ref}]
"""


def _tree(tmp_path: Path) -> Path:
    """tmp/outside/secret.txt (not to be read), tmp/tree/{p.yaml, lists/...}."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text(f"{SECRET}:x:1\n{SECRET}\n")
    tree = tmp_path / "tree"
    (tree / "lists").mkdir(parents=True)
    (tree / "lists" / "ok.txt").write_text("192.0.2.1\n198.51.100.0/24\n")
    (tree / "lists" / "out-link.txt").symlink_to("../../outside/secret.txt")
    (tree / "lists" / "dir-link").symlink_to("../../outside")
    (tree / "lists" / "zero-link").symlink_to("/dev/zero")
    (tree / "lists" / "in-link.txt").symlink_to("ok.txt")
    os.mkfifo(tree / "lists" / "fifo")
    (tree / "lists" / "sub").mkdir()
    return tree


def _validate(tree: Path, ref: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tree / "p.yaml").write_text(POLICY.format(ref=ref))
    return subprocess.run([sys.executable, "-m", "bpfpolicy", "validate", *args, str(tree)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


# (sourceFiles entry, expected message fragment) — every one refused at p.yaml:7:21
REFUSED = [
    ("{outside}/secret.txt", "is an absolute path"),
    ("/etc/shadow", "is an absolute path"),
    ("/proc/self/environ", "is an absolute path"),
    ("/dev/zero", "is an absolute path"),
    ("../outside/secret.txt", "resolves outside the policy tree"),
    ("../../../../../../etc/passwd", "resolves outside the policy tree"),
    ("lists/out-link.txt", "resolves outside the policy tree"),
    ("lists/dir-link/secret.txt", "resolves outside the policy tree"),
    ("lists/zero-link", "resolves outside the policy tree"),
    ("lists/fifo", "is not a regular file"),
    ("lists/sub", "is a directory"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("ref", "fragment"), REFUSED, ids=[r for r, _ in REFUSED])
def test_refused(tmp_path: Path, ref: str, fragment: str) -> None:
    tree = _tree(tmp_path)
    proc = _validate(tree, ref.format(outside=tmp_path / "outside"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if "sourceFiles" in ln]
    assert line.startswith(f"{tree}/p.yaml:7:21: spec.deny[0].sourceFiles[0]: source list ")
    assert fragment in line
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ref", ["lists/ok.txt", "lists/in-link.txt", "lists/../lists/ok.txt", "./lists/ok.txt"])
def test_inside_the_tree_accepted(tmp_path: Path, ref: str) -> None:
    proc = _validate(_tree(tmp_path), ref)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(60)
def test_root_is_the_directory_argument(tmp_path: Path) -> None:
    """A policy in a subdirectory may use `..` up to the tree root given on the command
    line; given the policy file alone, its directory is the root and the same `..` is out."""
    tree = _tree(tmp_path)
    (tree / "xdp").mkdir()
    (tree / "xdp" / "p.yaml").write_text(POLICY.format(ref="../lists/ok.txt"))
    run = [sys.executable, "-m", "bpfpolicy", "validate"]
    (tree / "p.yaml").unlink(missing_ok=True)
    whole = subprocess.run([*run, str(tree)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    alone = subprocess.run([*run, str(tree / "xdp" / "p.yaml")], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert alone.returncode == 1
    assert f"{tree}/xdp/p.yaml:7:21: spec.deny[0].sourceFiles[0]: source list \"../lists/ok.txt\" resolves outside" \
        in alone.stdout


@pytest.mark.timeout(60)
def test_device_node_inside_the_tree_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    tree = _tree(tmp_path)
    os.mknod(tree / "lists" / "zero", 0o600 | 0o020000, os.makedev(1, 5))  # a char device: /dev/zero
    proc = _validate(tree, "lists/zero")
    assert proc.returncode == 1
    assert "sourceFiles[0]: source list \"lists/zero\" is not a regular file" in proc.stdout


@pytest.mark.timeout(60)
def test_size_cap(tmp_path: Path) -> None:
    """A sparse file just over MAX_LIST_BYTES is refused from its size, not read."""
    from bpfpolicy.kinds.xdp.sources import MAX_LIST_BYTES

    tree = _tree(tmp_path)
    with open(tree / "lists" / "huge.txt", "wb") as f:
        f.truncate(MAX_LIST_BYTES + 1)
    proc = _validate(tree, "lists/huge.txt")
    assert proc.returncode == 1
    assert f"limited to {MAX_LIST_BYTES // 2**20} MiB" in proc.stdout


@pytest.mark.timeout(60)
def test_bad_lines_quote_a_short_escaped_token(tmp_path: Path) -> None:
    """A bad line is quoted as at most 40 escaped characters, never at large."""
    tree = _tree(tmp_path)
    (tree / "lists" / "bad.txt").write_bytes(b"192.0.2.1\nroot\x1b[31m:" + SECRET.encode() * 4 + b"\n")
    proc = _validate(tree, "lists/bad.txt")
    assert proc.returncode == 1
    (line,) = [ln for ln in proc.stdout.splitlines() if "bad.txt:2:1" in ln]
    assert line == (f'{tree}/lists/bad.txt:2:1: spec.deny[0].sourceFiles[0]: '
                    f'"root\\x1b[31m:{(SECRET * 2)[:30]}…" is not a valid IPv6 address or CIDR')
    assert SECRET * 2 not in proc.stdout and "\x1b" not in proc.stdout
