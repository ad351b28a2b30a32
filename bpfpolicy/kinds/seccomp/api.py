"""One call from a profile to everything the kind writes out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import bpf
from .compiler import Compiled, compile_model
from .model import build_model
from .resolve import Resolution, Target, resolve


@dataclass
class CompiledProfile:
    resolution: Resolution
    compiled: Compiled
    target: Target

    @property
    def insns(self) -> list[bpf.Insn]:
        return self.compiled.insns

    @property
    def profile(self) -> dict[str, Any]:
        return self.resolution.profile

    @property
    def filter_bytes(self) -> bytes:
        return bpf.pack(self.insns)

    def flags(self) -> list[str]:
        return list(self.profile.get("flags") or [])


def compile_profile(profile: dict[str, Any], target: Target | None = None,
                    bad_arch: int = bpf.RET_KILL_PROCESS) -> CompiledProfile:
    """Docker/OCI profile (already schema-valid) → resolved profile + cBPF."""
    target = target or Target.make()
    res = resolve(profile, target)
    model = build_model(res.profile, bad_arch)
    return CompiledProfile(res, compile_model(model), target)
