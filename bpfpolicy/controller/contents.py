"""Content maps in memory: what this process last wrote into each one, and patches.

A file-triggered cycle used to pay for a big content map several times over (1M-line
XDPBlocklist list: ~70 MB of records): read the new `.bin` back from disk, read the
applied copy and check its sha256, diff the two, and again in apply. `bpfpolicy watch`
is one long-running process, so it keeps (by reference, no copy) the contents object it
last wrote into each map, trusted only while its sha256 is the one the inventory
records — another `bpfpolicy apply` changing the map changes that hash, and then the
applied copy or the kernel is read as before.

A kind that patched its previous lowering hands over `Artifact.patches` (records written,
keys removed, and the previous contents object); when that object *is* the one this
process applied, the delta is the patch: no diff at all, and `write_patch` touches only
those records. Anything else — another base, a deep (drift) cycle, a restart — takes the
full diff (`kernel.maps.apply_map_contents`), so a wrong guess costs time, never a stale
kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifact import MapPatch, content_sha256

_APPLIED: dict[tuple[str, str, str], tuple[str, bytes]] = {}
APPLIED_MAX = 256
"""(state dir, policy, map) entries kept; each holds a reference to contents the compile
step keeps anyway, so this bounds bookkeeping, not copies."""


def sha256_hex(data: bytes) -> str:
    return content_sha256(data).hex()


def remember(state_dir: Path, key: str, map_name: str, sha: str, data: bytes) -> None:
    """`data` (hash `sha`) is what this process just wrote into the map."""
    if len(_APPLIED) >= APPLIED_MAX:
        _APPLIED.pop(next(iter(_APPLIED)))
    _APPLIED[(str(state_dir), key, map_name)] = (sha, data)


def recall(state_dir: Path, key: str, map_name: str, sha: str | None) -> bytes | None:
    """What this process wrote into the map, if the inventory still records its hash."""
    hit = _APPLIED.get((str(state_dir), key, map_name))
    return hit[1] if hit is not None and sha and hit[0] == sha else None


def forget(state_dir: Path, key: str) -> None:
    for k in [k for k in _APPLIED if k[0] == str(state_dir) and k[1] == key]:
        _APPLIED.pop(k, None)


def patch_applies(patch: MapPatch | None, current: bytes | None) -> bool:
    """The patch was made against exactly `current` (identity; equal bytes also do)."""
    if patch is None or current is None:
        return False
    return patch.base is current or (len(patch.base) == len(current) and patch.base == current)


def patch_counts(patch: MapPatch, spec: dict[str, Any]) -> tuple[int, int]:
    """(+records, −keys) of a patch, as `plan.diff_counts` counts a delta."""
    return len(patch.upsert) // (spec["key_size"] + spec["value_size"]), len(patch.delete) // spec["key_size"]


def write_patch(fd: int, patch: MapPatch, spec: dict[str, Any]) -> tuple[int, int]:
    """Write a patch into the map behind `fd`: its records upserted, its keys removed
    (array maps: the slot zeroed, as `apply_map_contents` does). Idempotent."""
    from ..kernel import bpf, maps

    ks, vs, percpu = spec["key_size"], spec["value_size"], bool(spec.get("percpu"))
    written = maps.write_records(fd, patch.upsert, ks, vs, percpu) if patch.upsert else 0
    removed = 0
    if patch.delete:
        n = len(patch.delete) // ks
        if spec.get("type") in maps.ARRAY_TYPES:
            stride = bpf.value_stride(vs, percpu)
            bpf.map_update_batch(fd, patch.delete, bytes(stride * n), ks, stride)
            removed = n
        else:
            removed = bpf.map_delete_batch(fd, patch.delete, ks)
    return written, removed


def early_patches(state_dir: Path, inventory: dict[str, dict[str, Any]], policies: dict[str, Any],
                  artifacts: list[Any]) -> tuple[dict[str, set[str]], list[str]]:
    """The fast path of a file-triggered cycle: for each compiled artifact whose kind
    patched its previous lowering (or, for a kind that does not, whose content maps this
    process can diff against what it applied), write the patches straight into the pinned maps when
    nothing else about the policy changed (same program, map definitions and
    attachments as applied, not held Stalled) and every patch's base is exactly what this
    process applied. Returns ({policy: maps written}, notes saying why a policy with
    patches took the full path). The regular plan/apply that follows records the new
    contents (hash, applied copy, inventory) and applies anything else."""
    from ..kernel.pins import pinned
    from .plan import _att_keys, _map_defs

    done: dict[str, set[str]] = {}
    notes: list[str] = []
    for art in artifacts:
        key = f"{art.kind}/{art.name}"
        from_kind = bool(art.patches)
        entry = inventory.get(key)
        why = _refusal(art, entry, policies.get(key) or {}, _map_defs, _att_keys)
        if not why and not from_kind and not _diff_patches(state_dir, key, art, entry):
            continue
        why = why or _base_refusal(state_dir, key, art, entry)
        if why or entry is None:
            if from_kind:
                notes.append(f"{key}: full diff ({why})")
            else:
                art.patches = {}
            continue
        specs = {m["name"]: m for m in art.manifest.get("maps", [])}
        written: set[str] = set()
        try:
            for name, patch in art.patches.items():
                with pinned(entry["maps"][name]["pin"]) as fd:
                    write_patch(fd, patch, specs[name])
                written.add(name)
        except OSError as e:  # the regular apply diffs and writes the whole delta again
            notes.append(f"{key}: patch write failed ({e}); full diff")
            continue
        done[key] = written
    return done, notes


def _diff_patches(state_dir: Path, key: str, art: Any, entry: dict[str, Any] | None) -> bool:
    """A kind without patches (NetworkPolicy, a full XDP lowering): diff each content map
    against what this process applied — small maps cost microseconds, and the kernel then
    gets the delta before the artifact is hashed and written. Sets `art.patches`; False
    when there is nothing (or no known base) to diff against."""
    from ..kernel import maps

    if entry is None:
        return False
    patches: dict[str, MapPatch] = {}
    for spec in art.manifest.get("maps", []):
        if not spec.get("contents"):
            continue
        new = art.files.get(spec["contents"])
        info = entry.get("maps", {}).get(spec["name"], {})
        current = recall(state_dir, key, spec["name"], info.get("contents_sha256"))
        if new is None or current is None:
            return False  # deferred contents or an unknown base: the regular path
        if current is new or current == new:
            continue
        upsert, delete = maps.diff_records(current, new, spec["key_size"], spec["value_size"])
        patches[spec["name"]] = MapPatch(current, upsert, delete)
    art.patches = patches
    return bool(patches)


def _refusal(art: Any, entry: dict[str, Any] | None, status: dict[str, Any], map_defs: Any,
             att_keys: Any) -> str | None:
    """Why the policy as a whole cannot take the fast path."""
    if entry is None:
        return "not applied yet"
    if status.get("condition") == "Stalled":
        return "policy is Stalled"
    m = art.manifest
    if entry.get("program_hash") != m.get("program_hash"):
        return "program changed"
    if map_defs(entry.get("manifest", {})) != map_defs(m) or att_keys(entry.get("manifest", {})) != att_keys(m):
        return "map definitions or attachments changed"
    return None


def _base_refusal(state_dir: Path, key: str, art: Any, entry: dict[str, Any] | None) -> str | None:
    """Why a patch cannot be written: its base is not what this process applied."""
    for name, patch in art.patches.items():
        info = (entry or {}).get("maps", {}).get(name, {})
        if not info.get("pin"):
            return f"map {name} not pinned"
        if not patch_applies(patch, recall(state_dir, key, name, info.get("contents_sha256"))):
            return f"map {name}: the patch's base is not what this process applied"
    return None
