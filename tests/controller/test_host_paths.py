"""Every path the controller writes or deletes stays inside the state dir / bpffs root
(issue #11): each writer is handed an escaping name or a symlink out, and a sentinel
directory outside must still exist with its contents afterwards."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET = "TOPSECRET-h5-host-paths"


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    d = tmp_path / "sentinel"
    (d / "victim").mkdir(parents=True)
    (d / "victim" / "keep.txt").write_text("keep\n")
    (d / "keep.txt").write_text("keep\n")
    return d


def intact(s: Path) -> bool:
    return (s / "keep.txt").read_text() == "keep\n" and (s / "victim" / "keep.txt").read_text() == "keep\n" \
        and sorted(p.name for p in s.iterdir()) == ["keep.txt", "victim"]


# ---------------------------------------------------------------------- the helper

BAD_PARTS = [("/etc",), ("..",), ("a", ".."), ("a/b",), ("a\0b",), (".hidden",), ("",), (".",)]


@pytest.mark.parametrize("parts", BAD_PARTS, ids=[repr(p) for p in BAD_PARTS])
def test_contained_refuses(tmp_path: Path, parts: tuple[str, ...]) -> None:
    from bpfpolicy.controller.paths import UnsafePath, contained

    with pytest.raises(UnsafePath):
        contained(tmp_path, *parts)


def test_contained_refuses_symlink_out(tmp_path: Path, sentinel: Path) -> None:
    from bpfpolicy.controller.paths import UnsafePath, contained

    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(sentinel)
    with pytest.raises(UnsafePath):
        contained(root, "link", "victim")
    assert contained(root, "plain", "name") == root / "plain" / "name"


# ---------------------------------------------------------------------- writers


def _seccomp(tmp_path: Path, name: str, manifest: dict) -> object:  # noqa: ANN001
    from bpfpolicy.controller.desired import DesiredPolicy

    d = tmp_path / "artifact"
    d.mkdir(exist_ok=True)
    (d / "filter.bpf").write_bytes(b"\x06\x00\x00\x00\x00\x00\xff\x7f")
    return DesiredPolicy("SeccompProfile", name, "d" * 64, {"kind": "SeccompProfile", "name": name, **manifest}, d)


def test_install_ignores_manifest_install_dir(ctl, tmp_path: Path, sentinel: Path) -> None:  # noqa: ANN001
    from bpfpolicy.controller.apply import install_files, prune
    from bpfpolicy.controller.state import Store

    entry = install_files(ctl, _seccomp(tmp_path, "victim", {"install": str(sentinel)}), None)
    assert entry["install_dir"] == str(ctl.state_dir / "seccomp" / "victim")
    assert (ctl.state_dir / "seccomp" / "victim" / "filter.bpf").is_file()
    assert intact(sentinel)
    # an inventory entry (hand-edited, or from an older version) naming a dir outside
    prune(ctl, "SeccompProfile/victim", {**entry, "install_dir": str(sentinel / "victim")}, Store(ctl.state_dir))
    assert intact(sentinel)
    assert not (ctl.state_dir / "seccomp" / "victim").exists()


@pytest.mark.parametrize("name", ["../../sentinel/victim", "/abs", "..", "a/b", ".x"])
def test_install_refuses_unsafe_name(ctl, tmp_path: Path, sentinel: Path, name: str) -> None:  # noqa: ANN001
    from bpfpolicy.controller.apply import ApplyError, install_files

    with pytest.raises(ApplyError, match="refused to install"):
        install_files(ctl, _seccomp(tmp_path, name, {}), None)
    assert intact(sentinel)


def test_install_refuses_symlinked_install_root(ctl, tmp_path: Path, sentinel: Path) -> None:  # noqa: ANN001
    from bpfpolicy.controller.apply import ApplyError, install_files

    ctl.state_dir.mkdir(parents=True, exist_ok=True)
    (ctl.state_dir / "seccomp").symlink_to(sentinel)
    with pytest.raises(ApplyError, match="refused to install"):
        install_files(ctl, _seccomp(tmp_path, "victim", {}), None)
    assert intact(sentinel)


def test_prune_refuses_escaping_key(ctl, sentinel: Path) -> None:  # noqa: ANN001
    from bpfpolicy.controller.apply import ApplyError, prune
    from bpfpolicy.controller.state import Store

    rel = os.path.relpath(sentinel, ctl.state_dir / "applied" / "X")
    with pytest.raises(ApplyError, match="refused to prune"):
        prune(ctl, f"X/{rel}", {"bpf": True, "attachments": []}, Store(ctl.state_dir))
    assert intact(sentinel)


def test_applied_copy_refuses_escaping_key(ctl, sentinel: Path) -> None:  # noqa: ANN001
    from bpfpolicy.controller.apply import save_applied_copy
    from bpfpolicy.controller.paths import UnsafePath

    with pytest.raises(UnsafePath):
        save_applied_copy(ctl.state_dir, f"X/../../../{sentinel.name}", "victim", b"x")
    assert intact(sentinel)


@pytest.mark.parametrize("same_as", ["ours-0644", "none", "not-ours"])
def test_applied_copy_is_0600_when_linked_or_written(ctl, tmp_path: Path, same_as: str) -> None:  # noqa: ANN001
    """The applied copy (the next delta's base) is 0600 whether it is written or
    hard-linked to the artifact's .bin; a file that is not ours is never linked."""
    from bpfpolicy.controller.apply import save_applied_copy
    from bpfpolicy.controller.plan import applied_copy

    data = os.urandom(1 << 17)
    src = tmp_path / "artifact.bin"
    src.write_bytes(data)
    src.chmod(0o644)
    if same_as == "not-ours":
        os.chown(src, 65534, 65534)
    save_applied_copy(ctl.state_dir, "XDPBlocklist/p", "m", data, None if same_as == "none" else src)
    dest = applied_copy(ctl.state_dir, "XDPBlocklist/p", "m")
    assert dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert os.path.samefile(dest, src) == (same_as == "ours-0644")
    assert dest.stat().st_uid == os.geteuid()


def test_gc_artifacts_does_not_follow_links(ctl, sentinel: Path) -> None:  # noqa: ANN001
    from bpfpolicy.controller.desired import gc_artifacts

    out = ctl.state_dir / "artifacts"
    (out / "XDPBlocklist").mkdir(parents=True)
    (out / "SeccompProfile").symlink_to(sentinel)  # a kind dir that is a link out
    (out / "XDPBlocklist" / "victim").symlink_to(sentinel / "victim")  # a policy dir that is a link out
    gc_artifacts(out, keep=set())
    assert intact(sentinel)
    assert not (out / "XDPBlocklist" / "victim").is_symlink()


def test_rmtree_pins_does_not_follow_links(ctl, sentinel: Path) -> None:  # noqa: ANN001
    from bpfpolicy.controller.apply import _rmtree_pins, gc_staging
    from bpfpolicy.controller.observe import STAGING
    from bpfpolicy.controller.paths import UnsafePath

    staging = ctl.bpffs_root / STAGING
    staging.mkdir(parents=True)
    (staging / "XDPBlocklist-x-1").symlink_to(sentinel)  # bpffs holds symlinks too
    (ctl.bpffs_root / "XDPBlocklist").mkdir()
    (ctl.bpffs_root / "XDPBlocklist" / "victim").symlink_to(sentinel / "victim")
    gc_staging(ctl)
    _rmtree_pins(ctl.bpffs_root / "XDPBlocklist" / "victim", ctl.bpffs_root)
    with pytest.raises(UnsafePath):
        _rmtree_pins(sentinel, ctl.bpffs_root)
    assert intact(sentinel)


# ---------------------------------------------------------------------- end to end


def _cli(cfg, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "bpfpolicy", *args], env=cfg.env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_committed_manifest_is_ignored(ctl, tmp_path: Path, sentinel: Path, monkeypatch) -> None:  # noqa: ANN001
    """A source tree holding a prebuilt SeccompProfile/victim/manifest.json whose
    `install` points outside: a warning, the tree's real policy applied, and the sentinel
    untouched by apply and destroy. The retired opt-in variable changes nothing: only
    `--prebuilt DIR` (an operator act) reads artifact trees."""
    monkeypatch.setenv("BPFPOLICY_PREBUILT_ARTIFACTS", "trust")
    ctl.env["BPFPOLICY_PREBUILT_ARTIFACTS"] = "trust"
    src = tmp_path / "src"
    (src / "SeccompProfile" / "victim").mkdir(parents=True)
    (src / "SeccompProfile" / "victim" / "manifest.json").write_text(json.dumps(
        {"install": str(sentinel), "name": "victim", "kind": "SeccompProfile", "digest": "0" * 64}))
    (src / "SeccompProfile" / "victim" / "filter.bpf").write_bytes(b"\x06\x00\x00\x00\x00\x00\x00\x00")
    (src / "stray").mkdir()
    (src / "stray" / "x").mkdir()
    (src / "stray" / "x" / "manifest.json").write_text("{}")  # once a KeyError: 'kind'
    (src / "web.yaml").write_text((REPO / "policies" / "seccomp" / "web-api.yaml").read_text())
    applied = _cli(ctl, "apply", str(src))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Traceback" not in applied.stdout + applied.stderr
    inv = json.loads((ctl.state_dir / "inventory.json").read_text())["policies"]
    assert set(inv) == {"SeccompProfile/web-api"}
    assert (ctl.state_dir / "seccomp" / "web-api").is_dir()
    assert intact(sentinel)
    plan = _cli(ctl, "plan", str(src))
    assert plan.returncode == 0 and "KeyError" not in plan.stderr
    destroyed = _cli(ctl, "destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stderr
    assert intact(sentinel)
    assert not (ctl.state_dir / "seccomp" / "web-api").exists()


def test_destroy_with_escaping_inventory_key(ctl, sentinel: Path) -> None:  # noqa: ANN001
    from bpfpolicy.controller.state import Store

    rel = os.path.relpath(sentinel, ctl.state_dir / "seccomp")
    Store(ctl.state_dir).save_inventory({f"SeccompProfile/{rel}": {"bpf": False, "install_dir": str(sentinel)},
                                         "XDPBlocklist/../../x": {"bpf": True, "attachments": []}})
    proc = _cli(ctl, "destroy", "--yes")
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1 and "refused to prune" in proc.stderr
    assert intact(sentinel)


def test_build_error_keeps_outside_file_out_of_events(ctl, tmp_path: Path) -> None:  # noqa: ANN001
    secret = tmp_path / "secret.txt"
    secret.write_text(f"{SECRET}\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "p.yaml").write_text("apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {name: t}\n"
                                f"spec:\n  interfaces: [lo]\n  deny:\n    - sourceFiles: [{secret}]\n")
    proc = _cli(ctl, "apply", "--format", "json", str(src))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{src}/p.yaml:7:21: spec.deny[0].sourceFiles[0]: source list" in json.loads(proc.stdout)["error"]
    events = (ctl.state_dir / "events.jsonl").read_text()
    assert "sourceFiles[0]" in events and SECRET not in events and SECRET not in proc.stdout + proc.stderr
    assert stat.S_IMODE((ctl.state_dir / "events.jsonl").stat().st_mode) == 0o600


# ---------------------------------------------------------------------- modes


def test_state_files_are_private_whatever_the_umask(ctl) -> None:  # noqa: ANN001
    from bpfpolicy.controller import events
    from bpfpolicy.controller.state import Store

    old = os.umask(0)
    try:
        events.emit(ctl.events_path, "Test", "created")
        assert stat.S_IMODE(ctl.events_path.stat().st_mode) == 0o600
        os.chmod(ctl.events_path, 0o644)  # a log from an older version
        events.emit(ctl.events_path, "Test", "appended")
        assert stat.S_IMODE(ctl.events_path.stat().st_mode) == 0o600
        with Store(ctl.state_dir).lock():
            pass
        assert stat.S_IMODE((ctl.state_dir / "lock").stat().st_mode) == 0o600
        assert _cli(ctl, "suspend").returncode == 0
        assert stat.S_IMODE(ctl.suspend_flag.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert [e["message"] for e in events.read(ctl.events_path)][:2] == ["created", "appended"]
