"""The artifact: the typed contract between kinds, the controller and the kernel matrix.

A kind compiles a policy to an `Artifact` (files + a manifest); `Artifact.write` puts it on
disk as `<Kind>/<name>/manifest.json` + files, where the controller and `bpfpolicy
kernel-test` read it back. The manifest stays a plain JSON dict on disk and at runtime
(the controller keeps indexing it), so its shape is written down here as TypedDicts:
kinds build them, readers annotate with them, and `manifest_problems` checks a manifest
against them at runtime (tests run it over every example policy). docs/ARTIFACTS.md is the
prose version of this module.

Two hashes, each with one meaning:

* `program_hash(source)` — the program's shape: sha256 of the generated C with comments,
  blank lines and the `bpf_metadata_bpfpolicy_hash` line removed. Same hash ⇒ the controller
  keeps the loaded program and only applies map deltas. Every kind stamps exactly this value
  into `bpf_metadata_bpfpolicy_hash`, so `bpftool prog show` tells which shape is loaded.
* `Artifact.digest` — "same policy": the manifest minus provenance (where the policy file
  was, how its path was spelled) and every file except the program's renderings
  (`prog.bpf.c`/`prog.bpf.o`, which `program_hash` stands for). Stable across runs and
  across relative/absolute spellings of the policy path.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NotRequired, TypedDict, Union

JSONScalar = str | int | float | bool | None
JSONValue = JSONScalar | list["JSONValue"] | dict[str, "JSONValue"]


class ProgramSpec(TypedDict):
    """One BPF program in the object: its function name and libbpf section kind."""

    name: str
    type: str  # xdp, tc, cgroup_skb, kprobe, tracepoint, lsm, fentry, uprobe, ...
    section: NotRequired[str]  # the SEC() text (tracing)
    hook: NotRequired[int]  # index into events.hooks (tracing)


class MapSpec(TypedDict):
    """One map of the object. Maps with `contents` are filled from that file (records
    `key || value`); the others are runtime state kept across program replacements."""

    name: str
    type: str  # hash, lpm_trie, array, percpu_array, lru_hash, ringbuf, stack_trace, ...
    key_size: NotRequired[int]
    value_size: NotRequired[int]
    max_entries: NotRequired[int]
    percpu: NotRequired[bool]
    flags: NotRequired[int]
    contents: NotRequired[str]  # maps/<name>.bin
    entries: NotRequired[int]  # records in `contents`


class AttachSpec(TypedDict):
    """Where one program is attached. Hook-specific keys are optional; a program with only
    `program` and `type` is attached by its SEC() (tracing)."""

    program: str
    type: str
    interface: NotRequired[str]
    netns: NotRequired[str | None]
    mode: NotRequired[str]  # xdp: auto, native, generic, offload
    direction: NotRequired[Literal["ingress", "egress"]]
    cgroup: NotRequired[str]


class CounterRule(TypedDict):
    """One slot of the per-rule counter map, named so status/events can say which rule."""

    index: int
    name: str
    path: str | None
    action: str
    policy: NotRequired[str]
    where: NotRequired[str | None]
    direction: NotRequired[str | None]
    audit: NotRequired[bool]


class CountersSpec(TypedDict):
    map: str
    layout: str  # percpu_array_u64x2: (packets, bytes) per slot
    rules: list[CounterRule]


class EventsSpec(TypedDict):
    """The ring buffer a kind's event decoder reads; layout keys beyond these are the
    kind's own (its decoder is the only reader)."""

    map: str
    type: str
    layout: str
    fields: NotRequired[JSONValue]
    actions: NotRequired[JSONValue]
    hooks: NotRequired[list[dict[str, JSONValue]]]
    size: NotRequired[int]
    clock: NotRequired[str]
    args: NotRequired[dict[str, JSONValue]]


class MetadataSpec(TypedDict):
    """Provenance and description; nothing here changes what is enforced except `policy`
    (the pin directory's owner)."""

    policy: str  # "Kind/name"
    source: NotRequired[str]  # the policy file as the user spelled it (not in the digest)
    revision: NotRequired[str | None]
    entries: NotRequired[dict[str, int]]
    endpoint: NotRequired[str]
    policies: NotRequired[list[str]]
    default: NotRequired[dict[str, str]]
    peer_sets: NotRequired[int]
    mode: NotRequired[str]


class SeccompSpec(TypedDict):
    target: dict[str, JSONValue]  # arch, caps, kernel the filter was resolved for
    architectures: list[str]
    flags: list[str]
    defaultAction: str
    rules: int
    droppedByTarget: list[dict[str, str]]
    stats: dict[str, JSONValue]


class Manifest(TypedDict):
    """manifest.json. `kind`, `name`, `digest` are added by `Artifact.write`; a BPF
    artifact has `object` … `metadata`; a seccomp artifact has `seccomp`."""

    kind: NotRequired[str]
    name: NotRequired[str]
    digest: NotRequired[str]
    object: NotRequired[str]
    program_hash: NotRequired[str]
    programs: NotRequired[list[ProgramSpec]]
    maps: NotRequired[list[MapSpec]]
    attachments: NotRequired[list[AttachSpec]]
    counters: NotRequired[CountersSpec]
    events: NotRequired[EventsSpec]
    features: NotRequired[dict[str, JSONValue]]
    btf: NotRequired[str | None]
    metadata: NotRequired[MetadataSpec]
    seccomp: NotRequired[SeccompSpec]


# --------------------------------------------------------------------------- hashes

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_HASH_LINE = re.compile(r"bpf_metadata_bpfpolicy_hash\[\][^;]*;")
# Files that render the program: `program_hash` (in the manifest) stands for them.
PROGRAM_FILES = frozenset({"prog.bpf.c", "prog.bpf.o"})
# Manifest keys that say where the policy file was (as the user spelled its path), not what
# is enforced: left out of the digest. None marks a dropped key, "*" every list item.
PROVENANCE: dict[str, object] = {
    "metadata": {"source": None},
    "counters": {"rules": {"*": {"where": None}}},
}


def program_hash(source: str) -> str:
    """The program's shape: sha256 of the generated C without comments, blank lines or the
    `bpf_metadata_bpfpolicy_hash` definition. Rule names, policy line numbers and file
    names live in comments, so they never force a program reload."""
    code = _HASH_LINE.sub("", _COMMENTS.sub("", source))
    code = "\n".join(line.rstrip() for line in code.splitlines() if line.strip())
    return hashlib.sha256(code.encode()).hexdigest()


def stamp_program_hash(source: str) -> tuple[str, str]:
    """Generated C (rendered with any `bpf_metadata_bpfpolicy_hash` text) → (the C with its
    own `program_hash` stamped into that variable, the hash). Every kind stamps through
    here, so the variable means the same thing on every loaded program."""
    shape = program_hash(source)
    stamped, n = _HASH_LINE.subn(f'bpf_metadata_bpfpolicy_hash[] SEC(".rodata") = "{shape}";', source)
    if n != 1:
        raise ValueError(f"generated C defines bpf_metadata_bpfpolicy_hash {n} times (expected once)")
    return stamped, shape


def _without_provenance(value: object, provenance: object = None) -> object:
    """`value` without the keys that only say where the policy file was (see PROVENANCE)."""
    provenance = PROVENANCE if provenance is None else provenance
    if isinstance(value, list) and isinstance(provenance, dict) and "*" in provenance:
        return [_without_provenance(v, provenance["*"]) for v in value]
    if not isinstance(value, dict) or not isinstance(provenance, dict):
        return value
    return {k: _without_provenance(v, provenance.get(k, {})) for k, v in value.items()
            if provenance.get(k, {}) is not None}


@dataclass(frozen=True)
class MapPatch:
    """In memory only (never written): a content map's new `.bin` is `base` (the previous
    artifact's contents object, by identity) with the records `upsert` written and the
    keys `delete` removed. A kind that patched its last lowering says so; the controller
    may then write just these records when `base` is exactly what it last applied
    (docs/controller.md "Latency of a one-line change")."""

    base: bytes
    upsert: bytes  # key + value records
    delete: bytes  # keys


_SHA_MEMO: dict[int, tuple[bytes, bytes]] = {}
SHA_MEMO_BYTES = 160 << 20
"""Contents kept referenced by the sha256 memo (least recently used dropped first): a
1M-entry list's maps are ~45-70 MB and hashing them costs ~90 ms, paid once per content
object instead of at every digest; the bound is what old versions may keep alive."""


def content_sha256(data: bytes) -> bytes:
    """sha256 of `data`, memoised by object identity (the memo holds a reference, so an id
    is never reused while it is cached). Compiles that keep a map's contents object keep
    its hash."""
    hit = _SHA_MEMO.get(id(data))
    if hit is not None and hit[0] is data:
        _SHA_MEMO[id(data)] = _SHA_MEMO.pop(id(data))  # most recently used last
        return hit[1]
    digest = hashlib.sha256(data).digest()
    if len(data) >= 1 << 16:  # small files hash faster than the bookkeeping
        while _SHA_MEMO and sum(len(v[0]) for v in _SHA_MEMO.values()) + len(data) > SHA_MEMO_BYTES:
            _SHA_MEMO.pop(next(iter(_SHA_MEMO)))
        _SHA_MEMO[id(data)] = (data, digest)
    return digest


@dataclass
class Artifact:
    """Everything needed to enforce one policy, independent of any host."""

    kind: str
    name: str
    files: dict[str, bytes] = field(default_factory=dict)  # relative name -> content
    manifest: Manifest = field(default_factory=lambda: Manifest())  # JSON-serialisable
    warnings: list[str] = field(default_factory=list)
    patches: dict[str, MapPatch] = field(default_factory=dict)  # map name -> patch (see MapPatch)
    # files a kind left to fill in later (compile option "defer_files", which only the
    # controller sets: it writes `patches` into the kernel first); `digest` and `write`
    # fill them in, anything else reading `files` calls `materialize()` first
    deferred: typing.Callable[[dict[str, bytes]], None] | None = None

    def materialize(self) -> None:
        if self.deferred is not None:
            fill, self.deferred = self.deferred, None
            fill(self.files)

    @property
    def digest(self) -> str:
        """Content hash: the reconciler's notion of 'same policy' (see the module doc)."""
        self.materialize()
        h = hashlib.sha256()
        h.update(json.dumps(_without_provenance(self.manifest), sort_keys=True, default=str).encode())
        summarised = PROGRAM_FILES if "program_hash" in self.manifest else frozenset()
        for name in sorted(set(self.files) - summarised):
            h.update(name.encode() + b"\0" + content_sha256(self.files[name]))
        return h.hexdigest()

    def write(self, out_dir: Path) -> Path:
        """Write to `out_dir/<kind>/<name>/` atomically (temp dir + rename)."""
        self.materialize()
        dest = out_dir / self.kind / self.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.name}.", dir=dest.parent))
        try:
            for rel, content in self.files.items():
                p = tmp / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(content)
            manifest = {"kind": self.kind, "name": self.name, "digest": self.digest, **self.manifest}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
            if dest.exists():
                old = dest.with_name(f".{self.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.rename(dest, old)
                os.rename(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest


# --------------------------------------------------------------------------- runtime check


def manifest_problems(manifest: object) -> list[str]:
    """Where `manifest` departs from `Manifest` (unknown keys, missing required keys, wrong
    types), as `path: problem` lines; empty when it conforms. A small structural checker
    over the TypedDicts above, so the contract is tested without a schema library."""
    return _problems(manifest, Manifest, "manifest")


def _problems(value: object, hint: object, path: str) -> list[str]:
    hint = _unwrap(hint)
    if hint is object or hint is typing.Any:
        return []
    if isinstance(hint, type) and typing.is_typeddict(hint):
        return _typeddict_problems(value, hint, path)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [_problems(value, a, path) for a in args]
        return [] if any(not p for p in options) else min(options, key=len)
    if origin is Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in _problems(item, args[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {type(value).__name__}"]
        return [p for k, v in value.items() for p in _problems(v, args[1], f"{path}.{k}")]
    return _scalar_problems(value, hint, path)


def _scalar_problems(value: object, hint: object, path: str) -> list[str]:
    if hint is type(None):
        return [] if value is None else [f"{path}: expected null, got {value!r}"]
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return []
    if hint is int and isinstance(value, bool):
        return [f"{path}: expected int, got bool"]
    if isinstance(hint, type) and not isinstance(value, hint):
        return [f"{path}: expected {hint.__name__}, got {type(value).__name__}"]
    return []


def _typeddict_problems(value: object, td: type, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected a {td.__name__} mapping, got {type(value).__name__}"]
    hints = typing.get_type_hints(td)
    required: frozenset[str] = td.__required_keys__  # type: ignore[attr-defined]
    out = [f"{path}: missing {k!r} ({td.__name__})" for k in sorted(required - value.keys())]
    out += [f"{path}.{k}: not a {td.__name__} key" for k in sorted(value.keys() - hints.keys())]
    for k in sorted(value.keys() & hints.keys()):
        out += _problems(value[k], hints[k], f"{path}.{k}")
    return out


def _unwrap(hint: object) -> object:
    """NotRequired[X] → X; the JSONValue alias → accept any JSON."""
    if typing.get_origin(hint) is NotRequired:
        return typing.get_args(hint)[0]
    if hint == JSONValue:
        return object
    return hint
