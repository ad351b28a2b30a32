"""The attach table: one `Attacher` per hook type, looked up by the manifest's
attachment `type` (the way Tetragon's loader has one attach function per attach type).

The controller drives every attachment through the same six verbs and never asks which
hook it is: `swap` (attach, atomically replacing what we attached before), `rollback`
(put the replaced program back), `detach`, `attached_prog_ids` (what the kernel runs
there now), `reattach` (drift repair from the pinned program) and `describe`.

An attachment's inventory record is the manifest's attachment spec plus what the
attacher learned (`index`, `prog_id`, `mode_used`, `tc`, `link_pin`, `link_id`). The
keys are the on-disk inventory format: an upgraded controller adopts an old inventory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict


class AttachSpec(TypedDict, total=False):
    """One `attachments[]` entry of an artifact manifest."""

    program: str
    type: str
    interface: str
    netns: str | None
    direction: str
    mode: str
    cgroup: str


class AttachRecord(AttachSpec, total=False):
    """An attachment as the inventory stores it (spec + what the kernel gave us)."""

    index: int
    prog_id: int
    mode_used: str
    tc: dict[str, Any]
    link_pin: str
    link_id: int | None


IsOurs = Callable[[int], bool]  # may this attacher replace the program with this id?


@dataclass
class SwapRequest:
    """Everything one `swap` needs besides the program: where, what we had there, and
    where links go (staged first, renamed over `final_link_pin` at commit)."""

    spec: AttachRecord  # the manifest's spec with its `index`
    previous: AttachRecord | None  # the record of the version we are replacing
    staging_link_pin: str
    final_link_pin: str
    is_ours: IsOurs
    owner: str  # "<kind>/<name>": stable per-policy identity (tc prio, filter name)


@dataclass
class Observation:
    """A per-observation cache (one netlink dump per netns, ...), shared by attachers."""

    xdp_by_netns: dict[str | None, dict[str, int | None]] = field(default_factory=dict)


class Attacher(ABC):
    """One hook type. Subclasses register in `ATTACHERS` under the types they serve."""

    types: tuple[str, ...] = ()

    @abstractmethod
    def swap(self, req: SwapRequest, prog: Any) -> tuple[AttachRecord, int | None]:
        """Attach `prog` (a loaded `kernel.libbpf.Program`), atomically replacing what
        we attached there before. Returns (record, the program id it replaced or None)."""

    @abstractmethod
    def rollback(self, record: AttachRecord, old_prog_id: int | None) -> None:
        """Undo a `swap`: put `old_prog_id` back (or remove ours when it was None)."""

    @abstractmethod
    def detach(self, record: AttachRecord) -> None:
        """Remove one attachment we made (only while it still runs our program)."""

    @abstractmethod
    def attached_prog_ids(self, record: AttachRecord, cache: Observation | None = None) -> list[int]:
        """Program ids the kernel runs at this attachment now ([] when detached)."""

    @abstractmethod
    def reattach(self, record: AttachRecord, prog_fd: int, owner: str) -> AttachRecord:
        """Put our pinned program back where it was detached or replaced."""

    @abstractmethod
    def describe(self, record: AttachRecord) -> str:
        """Where this attachment is, for humans (drift messages, status)."""


ATTACHERS: dict[str, Attacher] = {}
_FALLBACK: list[Attacher] = []  # the SEC()-derived attacher serves every other type


def register(attacher: Attacher, *, fallback: bool = False) -> Attacher:
    for t in attacher.types:
        ATTACHERS[t] = attacher
    if fallback:
        _FALLBACK[:] = [attacher]
    return attacher


def attacher_for(spec: AttachSpec | AttachRecord) -> Attacher:
    """The attacher for an attachment spec or record (by its `type`)."""
    from . import auto, cgroup, tc, uprobe, xdp  # noqa: F401  (registration)

    found = ATTACHERS.get(str(spec.get("type")))
    return found if found is not None else _FALLBACK[0]


class AttachConflict(OSError):
    """The hook runs a program bpfpolicy did not attach; we never replace it."""


def prog_id_of(prog_fd: int) -> int:
    from .. import bpf

    return int(bpf.prog_info(prog_fd)["id"])
