"""One `Attacher` per hook type (see `base`): `xdp`, `tc`, `cgroup` and `auto` (the
SEC()-derived attach libbpf does for tracepoints, kprobes, uprobes, LSM, fentry)."""

from .base import (
    ATTACHERS,
    Attacher,
    AttachRecord,
    AttachSpec,
    Observation,
    SwapRequest,
    attacher_for,
)

__all__ = ["ATTACHERS", "AttachRecord", "AttachSpec", "Attacher", "Observation", "SwapRequest", "attacher_for"]
