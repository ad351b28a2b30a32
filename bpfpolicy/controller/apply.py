"""Make the kernel match the plan, one policy at a time, never dropping enforcement.

Order for a program (re)load (docs/upstream.md §6):
  1. open the object, reuse runtime maps (no `contents`: counters, conntrack, buckets)
     by pin when their definition is unchanged, load (verifier);
  2. fill the content maps (fresh maps: the running program never sees half a version);
  3. pin the new programs/maps/links under `<root>/_staging/<Kind>-<name>-<pid>/`;
  4. swap every attachment atomically through its hook's Attacher (kernel.attach): netlink
     replace with the expected fd, bpf_link update, tc replace at the same prio;
  5. rename the staged pins over the old ones (which unpins the old objects);
  6. write the inventory (atomic) — only after the kernel changed.
A failure before (4) leaves the old version untouched and the new one freed; a failure
during (4) swaps back what was already swapped. A kill -9 anywhere leaves the previous or
the new version enforcing plus, at worst, staged pins that the next run removes
(`gc_staging`) and an inventory that the next plan reconciles.

Map-only changes never reload: the delta goes into the pinned map in place
(`kernel.maps.apply_map_contents`, batch update/delete).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..kernel.attach import AttachRecord, attacher_for
from ..kernel.attach.base import AttachConflict, IsOurs, SwapRequest
from ..kernel.pins import pinned, pinned_map_info, pinned_prog_id, prog_by_id
from .config import HostConfig
from .contents import forget, patch_applies, remember, sha256_hex, write_patch
from .desired import DesiredPolicy
from .destroy import rmtree_pins
from .destroy import rmtree_pins as _rmtree_pins  # noqa: F401 - the old name, kept for callers
from .events import now_iso
from .observe import STAGING
from .paths import UnsafePath, check_inside, contained, is_inside
from .plan import Plan, PolicyPlan, applied_copy, current_contents
from .state import Store

if TYPE_CHECKING:
    from ..kernel.libbpf import BpfObject

CRASH_STAGES = ("loaded", "filled", "staged", "swapped", "committed", "map-delta")


def checkpoint(stage: str) -> None:
    """Fault injection for crash-safety tests: `BPFPOLICY_CRASH_AT=<stage>` makes the
    process SIGKILL itself there (no cleanup, exactly like `kill -9`)."""
    if os.environ.get("BPFPOLICY_CRASH_AT") == stage:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


class ApplyError(Exception):
    """One policy failed to apply; the previous enforcement is still in place."""

    def __init__(self, message: str, reason: str = "ApplyFailed", log: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.log = log


@dataclass
class Outcome:
    key: str
    action: str
    ok: bool
    message: str = ""
    reason: str = ""
    log: str = ""
    seconds: float = 0.0
    drift: bool = False


@dataclass
class ApplyResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def gc_staging(cfg: HostConfig) -> list[str]:
    """Remove staged pins of an apply that was killed (call with the store lock held)."""
    removed = []
    staging = cfg.bpffs_root / STAGING
    if staging.is_dir():
        for d in staging.iterdir():
            removed.append(str(d))
            with contextlib.suppress(UnsafePath):
                rmtree_pins(d, cfg.bpffs_root)
        with contextlib.suppress(OSError):
            staging.rmdir()
    return removed


def apply_plan(cfg: HostConfig, plan: Plan, store: Store, *, revision: str | None = None,
               progress: Any = None, heal: bool | None = None) -> ApplyResult:
    """Execute every policy's actions; one failing policy does not stop the others."""
    heal = cfg.self_heal if heal is None else heal
    result = ApplyResult()
    for pp in plan.policies:
        acts = [a for a in pp.actions if a.type not in ("noop", "keep") and (heal or not a.drift)]
        if not acts:
            continue
        t0 = time.perf_counter()
        main = acts[0].type
        if progress:
            progress(pp.key, main)
        try:
            _apply_policy(cfg, pp, [a.type for a in acts], store, revision)
            out = Outcome(pp.key, main, True, "; ".join(a.detail for a in acts if a.detail),
                          drift=any(a.drift for a in acts))
        except ApplyError as e:
            out = Outcome(pp.key, main, False, str(e), e.reason, e.log)
        except OSError as e:
            out = Outcome(pp.key, main, False, str(e), "ApplyFailed")
        out.seconds = time.perf_counter() - t0
        result.outcomes.append(out)
    return result


def _apply_policy(cfg: HostConfig, pp: PolicyPlan, types: list[str], store: Store,
                  revision: str | None) -> None:
    d, o = pp.desired, pp.observed
    if "prune" in types:
        prune(cfg, pp.key, o.entry if o else None, store)
        return
    assert d is not None
    old = o.entry if o else None
    if not d.is_bpf:
        store.record_policy(d.key, install_files(cfg, d, revision))
        save_applied_document(cfg.state_dir, d)
        return
    if "create" in types or "replace" in types:
        entry = load_and_swap(cfg, d, old, revision)
    else:
        assert old is not None
        entry = dict(old)
        if "update-map" in types:
            drift = any(a.type == "update-map" and a.drift for a in pp.actions)
            entry = update_maps(d, entry, cfg.state_dir, drift)
        if "reattach" in types:
            entry = reattach(cfg, d, entry)
        entry.update(digest=d.digest, manifest=d.manifest, revision=revision or entry.get("revision"),
                     applied_at=now_iso())
    store.record_policy(d.key, entry)
    save_applied_document(cfg.state_dir, d)


def save_applied_document(state_dir: Path, d: DesiredPolicy) -> None:
    """Keep the policy document just applied (YAML, 0600): the next plan's rule-level
    lines and `plan --diff` compare against it."""
    from .plan import applied_document, doc_text

    if d.document is None:
        return
    kind, name = d.key.split("/", 1)
    contained(state_dir, "applied", kind, name)
    dest = check_inside(applied_document(state_dir, d.key), state_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(doc_text(d.document))
    os.replace(tmp, dest)


# --------------------------------------------------------------------------- load + swap


def load_and_swap(cfg: HostConfig, d: DesiredPolicy, old: dict[str, Any] | None,
                  revision: str | None) -> dict[str, Any]:
    from ..kernel import bpf, maps
    from ..kernel.libbpf import BpfLoadError, BpfObject

    m = d.manifest
    stage = contained(cfg.bpffs_root, STAGING, f"{contained_name(d.kind)}-{contained_name(d.name)}-{os.getpid()}")
    pdir = contained(cfg.bpffs_root, d.kind, d.name)
    rmtree_pins(stage, cfg.bpffs_root)
    stage.mkdir(parents=True)
    obj = None
    swapped: list[tuple[dict[str, Any], int | None]] = []
    try:
        try:
            obj = BpfObject.open_file(d.file(m["object"]))
            _reuse_runtime_maps(obj, m, pdir)
            stamp_revision(obj, revision)
            obj.load()
            checkpoint("loaded")
        except BpfLoadError as e:
            raise ApplyError(f"verifier rejected {d.key}: {_last_line(e.log) or e.strerror}",
                             "VerifierFailed", e.log) from None
        progs = {p["name"]: obj.program(p["name"]) for p in m.get("programs", [])}
        entry = _new_entry(d, revision, pdir)
        for spec in m.get("maps", []):
            bm = obj.map(spec["name"])
            if spec.get("contents"):
                maps.write_records(bm.fd, d.content(spec["contents"]),
                                   spec["key_size"], spec["value_size"], bool(spec.get("percpu")))
            if not os.path.exists(pdir / f"map_{spec['name']}") or spec.get("contents") or not _reused(bm, pdir, spec):
                bpf.obj_pin(bm.fd, str(stage / f"map_{spec['name']}"))
            if spec.get("contents"):
                save_applied_copy(cfg.state_dir, d.key, spec["name"], d.content(spec["contents"]),
                                  _same_file(d, spec))
            entry["maps"][spec["name"]] = {"pin": str(pdir / f"map_{spec['name']}"),
                                           "id": bpf.map_info(bm.fd)["id"],
                                           "contents_sha256": _sha(d, spec)}
            if spec.get("contents"):
                remember(cfg.state_dir, d.key, spec["name"], entry["maps"][spec["name"]]["contents_sha256"],
                         d.content(spec["contents"]))
        checkpoint("filled")
        for name, prog in progs.items():
            bpf.obj_pin(prog.fd, str(stage / f"prog_{name}"))
            info = bpf.prog_info(prog.fd)
            entry["programs"][name] = {"pin": str(pdir / f"prog_{name}"), "id": info["id"], "tag": info["tag"]}
        checkpoint("staged")
        old_atts = {_att_id(a): a for a in (old or {}).get("attachments", [])}
        for i, att in enumerate(m.get("attachments", [])):
            spec: AttachRecord = {**att, "index": i}
            prev = old_atts.pop(_att_id(spec), None)
            rec, old_pid = _swap(spec, progs[att["program"]], prev, stage, pdir, entry)
            swapped.append((rec, old_pid))
            entry["attachments"].append(rec)
    except BaseException:
        _rollback(swapped)
        rmtree_pins(stage, cfg.bpffs_root)
        if obj is not None:
            obj.close()
        raise
    checkpoint("swapped")  # every attachment runs the new programs
    # attachments the new version no longer has go first: their link pins may share a
    # name (link_<index>) with a staged new link that is about to be renamed into place
    for stale in old_atts.values():
        detach(stale)
    pdir.mkdir(parents=True, exist_ok=True)
    for p in stage.iterdir():
        os.replace(p, pdir / p.name)
    rmtree_pins(stage, cfg.bpffs_root)
    with contextlib.suppress(OSError):
        stage.parent.rmdir()  # only when no other apply is staging
    keep = {f"prog_{n}" for n in entry["programs"]} | {f"map_{n}" for n in entry["maps"]}
    keep |= {Path(a["link_pin"]).name for a in entry["attachments"] if a.get("link_pin")}
    for p in pdir.iterdir():
        if p.name not in keep:
            with contextlib.suppress(OSError):
                p.unlink()
    obj.close()
    checkpoint("committed")
    return entry


REVISION_PLACEHOLDER = b"@@bpfpolicy-revision@@"
REVISION_FIELD = 64


def stamp_revision(obj: BpfObject, revision: str | None) -> bool:
    """Write the source revision into the program's `.rodata` before load, so
    `bpftool prog show` lists `bpfpolicy_revision` in its metadata. The contract for
    templates: `const volatile char bpf_metadata_bpfpolicy_revision[64] SEC(".rodata") =
    "@@bpfpolicy-revision@@";` — only the initial value changes, never the
    instructions, so the program tag and program_hash stay the same. Objects without
    the placeholder are left alone (the revision is then in the inventory only)."""
    if not revision:
        return False
    value = revision.encode()[: REVISION_FIELD - 1].ljust(REVISION_FIELD, b"\0")
    return any(bm.replace_initial_bytes(REVISION_PLACEHOLDER, value)
               for bm in obj.maps() if bm.name.endswith(".rodata"))


def _new_entry(d: DesiredPolicy, revision: str | None, pdir: Path) -> dict[str, Any]:
    return {"kind": d.kind, "name": d.name, "bpf": True, "digest": d.digest,
            "program_hash": d.manifest.get("program_hash"), "revision": revision,
            "applied_at": now_iso(), "dir": str(pdir), "programs": {}, "maps": {},
            "attachments": [], "manifest": d.manifest}


def _sha(d: DesiredPolicy, spec: dict[str, Any]) -> str | None:
    if not spec.get("contents"):
        return None
    return sha256_hex(d.content(spec["contents"]))


def _same_file(d: DesiredPolicy, spec: dict[str, Any]) -> Path | None:
    """The artifact file holding a content map's records, when compiled in this process
    (then `d.files` is what `d.dir` holds: desired.build checked the digest)."""
    return d.file(spec["contents"]) if d.files is not None and spec.get("contents") else None


def _reuse_runtime_maps(obj: BpfObject, m: dict[str, Any], pdir: Path) -> None:
    """Keep counters/conntrack across reloads: reuse the pinned map if it matches."""
    from ..kernel import bpf

    for spec in m.get("maps", []):
        pin = pdir / f"map_{spec['name']}"
        if spec.get("contents") or not pin.exists():
            continue
        bm = obj.map(spec["name"])
        with pinned(pin) as fd:
            info = bpf.map_info(fd)
            if (info["type_id"], info["key_size"], info["value_size"], info["max_entries"]) == (
                    bm.type, bm.key_size, bm.value_size, bm.max_entries):
                bm.reuse_fd(fd)


def _reused(bm: Any, pdir: Path, spec: dict[str, Any]) -> bool:
    from ..kernel import bpf

    info = pinned_map_info(pdir / f"map_{spec['name']}")
    return info is not None and info["id"] == bpf.map_info(bm.fd)["id"]


def _att_id(att: dict[str, Any]) -> str:
    return f"{att.get('index')}|{att.get('type')}|{att.get('interface')}|{att.get('netns')}|" \
           f"{att.get('direction')}|{att.get('cgroup')}"


def _swap(spec: AttachRecord, prog: Any, prev: AttachRecord | None, stage: Path, pdir: Path,
          entry: dict[str, Any]) -> tuple[AttachRecord, int | None]:
    """Attach `prog` at `spec` through its hook's attacher, atomically replacing what we
    attached there before. Returns (inventory record, the program id it replaced or None)."""
    link = f"link_{spec['index']}"
    req = SwapRequest(spec=spec, previous=prev, staging_link_pin=str(stage / link),
                      final_link_pin=str(pdir / link), is_ours=_ours_test(prev, entry, prog, spec["program"]),
                      owner=f"{entry['kind']}/{entry['name']}")
    try:
        return attacher_for(spec).swap(req, prog)
    except AttachConflict as e:
        raise ApplyError(str(e), "AttachConflict") from None


def _ours_test(prev: AttachRecord | None, entry: dict[str, Any], prog: Any, program: str) -> IsOurs:
    """Programs we may replace: what the inventory says we attached, what our pins hold,
    and (after a crash between swap and commit) a program with the new one's tag+name
    or stamped with this policy in `bpf_metadata_bpfpolicy_policy`."""
    from ..kernel import bpf

    def is_ours(candidate: int) -> bool:
        if prev and prev.get("prog_id") == candidate:
            return True
        if pinned_prog_id(Path(entry["dir"]) / f"prog_{program}") == candidate:
            return True
        new = bpf.prog_info(prog.fd)
        try:
            with prog_by_id(candidate) as fd:
                info = bpf.prog_info(fd)
        except OSError:
            return False
        same_code = info["tag"] == new["tag"] and info["name"] == new["name"]
        return same_code or _stamped(candidate) == f"{entry['kind']}/{entry['name']}"

    return is_ours


def _stamped(prog_id: int) -> str | None:
    """The policy a program was stamped with (bpftool reads .rodata metadata via BTF)."""
    from ..kernel import bpftool

    try:
        info = bpftool.run("prog", "show", "id", str(prog_id))
    except (OSError, ValueError):
        return None
    return (info.get("metadata") or {}).get("bpfpolicy_policy") if isinstance(info, dict) else None


def _rollback(swapped: list[tuple[AttachRecord, int | None]]) -> None:
    """Put back the programs we already replaced (best effort, most recent first)."""
    for rec, old_id in reversed(swapped):
        with contextlib.suppress(OSError):
            attacher_for(rec).rollback(rec, old_id)


def detach(rec: AttachRecord) -> None:
    """Remove one attachment we made (only if it still runs our program)."""
    with contextlib.suppress(OSError):
        attacher_for(rec).detach(rec)


def _last_line(log: str) -> str:
    try:
        from ..codegen.verify import last_verifier_line

        return last_verifier_line(log)
    except Exception:  # pragma: no cover - the verify helper is optional
        lines = [ln for ln in log.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


# --------------------------------------------------------------------------- deltas


def update_maps(d: DesiredPolicy, entry: dict[str, Any], state_dir: Path, drift: bool = False) -> dict[str, Any]:
    """Apply content deltas in place (batch update/delete); the program is untouched.
    The diff base is the applied copy (cheap), or the kernel's contents when the plan
    found the kernel map edited behind our back (`drift`). A kind's patch against exactly
    that base is written as it is (no diff); maps whose patch the cycle's fast path
    already wrote (`d.preapplied`) are only recorded. An unchanged map is not rewritten
    or re-copied."""
    from ..kernel import maps

    entry = {**entry, "maps": {k: dict(v) for k, v in entry.get("maps", {}).items()}}
    for spec in d.manifest.get("maps", []):
        if not spec.get("contents"):
            continue
        info = entry["maps"][spec["name"]]
        new = d.content(spec["contents"])
        sha = sha256_hex(new)
        if drift or spec["name"] not in d.preapplied:
            current = current_contents(spec, entry, state_dir, deep=drift)
            patch = d.patches.get(spec["name"])
            with pinned(info["pin"]) as fd:
                if os.environ.get("BPFPOLICY_CRASH_AT") == "map-delta":  # half the delta, then die
                    half = new[: len(new) // 2 // (spec["key_size"] + spec["value_size"]) * (spec["key_size"] + spec["value_size"])]
                    maps.write_records(fd, half, spec["key_size"], spec["value_size"], bool(spec.get("percpu")))
                    checkpoint("map-delta")
                if not drift and patch is not None and patch_applies(patch, current):
                    write_patch(fd, patch, spec)
                else:
                    maps.apply_map_contents(fd, current, new, spec["key_size"], spec["value_size"],
                                            bool(spec.get("percpu")), spec.get("type"))
        if info.get("contents_sha256") != sha or not applied_copy(state_dir, d.key, spec["name"]).exists():
            save_applied_copy(state_dir, d.key, spec["name"], new, _same_file(d, spec))
        info["contents_sha256"] = sha
        remember(state_dir, d.key, spec["name"], sha, new)
    return entry


def save_applied_copy(state_dir: Path, key: str, map_name: str, data: bytes, same_as: Path | None = None) -> None:
    """Keep what we wrote as the next delta's base (temp + rename; trusted by hash).
    `same_as`: a file holding exactly `data` (the artifact's `.bin`, which is never
    modified in place: artifacts are replaced by directory rename) is hard-linked instead
    of written again — ~70 MB less to write for a 1M-entry list."""
    kind, name = key.split("/", 1)
    contained(state_dir, "applied", kind, name)
    dest = check_inside(applied_copy(state_dir, key, map_name), state_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    check_inside(dest.parent, state_dir)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    if same_as is not None and len(data) >= 1 << 16:
        try:
            st = os.stat(same_as, follow_symlinks=False)
            if st.st_size == len(data) and st.st_nlink < 8 and st.st_uid == os.geteuid():
                os.link(same_as, tmp, follow_symlinks=False)
                os.chmod(tmp, 0o600)  # one inode: the applied copy stays 0600 (so does the artifact's .bin)
                _replace_free_later(tmp, dest)
                return
        except OSError:
            pass  # another filesystem, a vanished file: write the copy
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    _replace_free_later(tmp, dest)


def _replace_free_later(tmp: Path, dest: Path) -> None:
    """`os.replace(tmp, dest)`, with the old file's last unlink (freeing ~70 MB of page
    cache for a 1M-entry list: tens of ms) done by a background thread: a second link
    keeps the old inode alive across the replace. A leftover `.<name>.<pid>.old` (the
    process died first) goes with the next save or the policy's prune."""
    import threading

    trash: Path | None = dest.with_name(f".{dest.name}.{os.getpid()}.old")
    assert trash is not None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(trash)
    try:
        os.link(dest, trash, follow_symlinks=False)
    except OSError:
        trash = None
    os.replace(tmp, dest)
    if trash is not None:
        threading.Thread(target=_unlink_quietly, args=(trash,), daemon=True).start()


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def reattach(cfg: HostConfig, d: DesiredPolicy, entry: dict[str, Any]) -> dict[str, Any]:
    """Put our pinned program back where it was detached or replaced (drift repair)."""
    atts = []
    for rec in entry.get("attachments", []):
        attacher = attacher_for(rec)
        if rec.get("prog_id") not in attacher.attached_prog_ids(rec):
            with pinned(entry["programs"][rec["program"]]["pin"]) as fd:
                rec = attacher.reattach(rec, fd, f"{entry['kind']}/{entry['name']}")
        atts.append(dict(rec))
    return {**entry, "attachments": atts}


# --------------------------------------------------------------------------- files, prune


def install_subdirs() -> dict[str, str]:
    """Kinds whose artifacts are installed as files (not pinned), and where: each kind
    says so itself (`Kind.install_subdir`)."""
    from ..kinds import KINDS

    return {name: k.install_subdir for name, k in KINDS.items() if k.install_subdir}


def contained_name(part: str) -> str:
    """A kind or policy name used as a path component (raises UnsafePath)."""
    from .paths import check_component

    return check_component(part)


def install_dir(cfg: HostConfig, d_kind: str, name: str, manifest: dict[str, Any] | None = None) -> Path:
    """`<state>/<the kind's fixed subdir>/<name>`. The manifest is *not* consulted: an
    artifact never chooses where it is installed (a manifest `install: /etc` once did)."""
    sub = install_subdirs().get(d_kind)
    if sub is None:
        raise UnsafePath(f"{d_kind} artifacts are not installed as files")
    return contained(cfg.state_dir, sub, name)


def install_files(cfg: HostConfig, d: DesiredPolicy, revision: str | None) -> dict[str, Any]:
    """Install a non-BPF artifact (a filter the host loads from files) atomically: temp dir + rename."""
    try:
        dest = install_dir(cfg, d.kind, d.name)
    except UnsafePath as e:
        raise ApplyError(f"refused to install {d.key}: {e}", "UnsafePath") from None
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_inside(dest.parent, cfg.state_dir)
    tmp = dest.with_name(f".{d.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(d.dir, tmp, symlinks=True)
    for p in tmp.rglob("*"):  # an artifact holds regular files only: no links out
        if p.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
            raise ApplyError(f"refused to install {d.key}: {p.name} is a symlink", "UnsafePath")
    files = {str(p.relative_to(tmp)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in tmp.rglob("*") if p.is_file()}
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    old = dest.with_name(f".{d.name}.{os.getpid()}.old")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return {"kind": d.kind, "name": d.name, "bpf": False, "digest": d.digest, "revision": revision,
            "applied_at": now_iso(), "install_dir": str(dest), "files": files, "manifest": d.manifest}


def prune(cfg: HostConfig, key: str, entry: dict[str, Any] | None, store: Store) -> None:
    """Remove one policy: detach what we attached, unpin, delete the inventory entry."""
    kind, name = key.split("/", 1)
    try:  # the inventory is data too: the key names the dirs, each checked to stay inside
        contained_name(kind)
        contained_name(name)
    except UnsafePath as e:
        store.record_policy(key, None)  # nothing of ours can live at an unsafe name
        raise ApplyError(f"refused to prune {key!r}: {e}", "UnsafePath") from None
    if entry is not None and not entry.get("bpf", True):
        with contextlib.suppress(UnsafePath):  # only our own fixed install dir, never entry["install_dir"]
            _rmtree_private(install_dir(cfg, kind, name), cfg.state_dir)
    else:
        for rec in (entry or {}).get("attachments", []):
            detach(rec)
        rmtree_pins(contained(cfg.bpffs_root, kind, name), cfg.bpffs_root)
        with contextlib.suppress(OSError, UnsafePath):
            contained(cfg.bpffs_root, kind).rmdir()
    with contextlib.suppress(UnsafePath):
        _rmtree_private(contained(cfg.state_dir, "applied", kind, name), cfg.state_dir)
    forget(cfg.state_dir, key)
    store.record_policy(key, None)


def _rmtree_private(d: Path, root: Path) -> None:
    """rmtree of a dir we created under `root`: re-checked after resolve, never through
    a symlink (shutil.rmtree refuses a symlink as its top and does not follow below)."""
    check_inside(d, root)
    if d.is_symlink():
        os.unlink(d)
        return
    shutil.rmtree(d, ignore_errors=True)


def gc_installed(cfg: HostConfig) -> None:
    """Remove install temp dirs a killed apply left."""
    for name in install_subdirs().values():
        sub = cfg.state_dir / name
        if sub.is_dir() and not sub.is_symlink() and is_inside(sub, cfg.state_dir):
            for p in sub.glob(".*.tmp"):
                _rmtree_private(p, cfg.state_dir)
