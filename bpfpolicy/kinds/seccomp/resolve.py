"""Resolve Docker / containers-common extensions into plain OCI `LinuxSeccomp`.

Docker profiles carry `archMap` and per-rule `includes`/`excludes` (`caps`, `arches`,
`minKernel`) that only make sense against a target: the native architecture, the
capability bounding set, the kernel version. This module applies exactly the rules of
moby/profiles `seccomp/seccomp.go` (docs/upstream.md §3.2):

* `archMap` (mutually exclusive with `architectures`): the native arch's entry gives
  `[native, *subArchitectures]`; no entry means the native arch only.
* `excludes` drops a rule if the native arch (Go name, e.g. `amd64`) is listed, OR any
  listed cap is in the set, OR kernel >= minKernel.
* `includes` drops a rule if the native arch is not listed, OR not all listed caps are
  in the set, OR kernel < minKernel.  `minKernel` compares major.minor only.
* containers-common's string `errno` / `defaultErrno` (e.g. "EPERM") are used when the
  numeric `errnoRet` / `defaultErrnoRet` is absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..target import parse_kernel_version, running_kernel_version
from .arch import DOCKER_DEFAULT_CAPS, GOARCH_OF, NATIVE, errno_value


class ResolveError(ValueError):
    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Target:
    """What a profile is resolved against."""

    arch: str = "SCMP_ARCH_X86_64"  # native OCI arch
    caps: frozenset[str] = frozenset(DOCKER_DEFAULT_CAPS)
    kernel: tuple[int, int] = (6, 18)

    @classmethod
    def make(cls, arch: str | None = None, caps: list[str] | None = None,
             kernel: tuple[int, int] | str | None = None) -> Target:
        native = NATIVE.get(arch or "x86_64", arch or "SCMP_ARCH_X86_64")
        capset = frozenset(DOCKER_DEFAULT_CAPS if caps is None else (_cap(c) for c in caps))
        if kernel is None:
            kv = running_kernel()
        elif isinstance(kernel, str):
            kv = parse_kernel(kernel)
            if kv is None:
                raise ValueError(f'bad kernel version "{kernel}": expected MAJOR.MINOR')
        else:
            kv = (int(kernel[0]), int(kernel[1]))
        return cls(native, capset, kv)

    @property
    def goarch(self) -> str:
        return GOARCH_OF.get(self.arch, self.arch)

    def describe(self) -> dict[str, Any]:
        return {"arch": self.arch, "caps": sorted(self.caps), "kernel": f"{self.kernel[0]}.{self.kernel[1]}"}


def _cap(name: str) -> str:
    n = name.strip().upper()
    return n if n.startswith("CAP_") else "CAP_" + n


parse_kernel = parse_kernel_version  # the one version parser (kinds/target.py)
running_kernel = running_kernel_version


@dataclass
class Resolution:
    profile: dict[str, Any]  # plain OCI LinuxSeccomp
    dropped: list[tuple[tuple[str | int, ...], str]] = field(default_factory=list)  # (path, why)


def resolve(profile: dict[str, Any], target: Target) -> Resolution:
    """Docker profile → OCI profile for `target` (input is not modified)."""
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    dropped: list[tuple[tuple[str | int, ...], str]] = []
    default_errno = _errno_of(profile, ("defaultErrnoRet", "defaultErrno"), ())
    if default_errno is not None:
        out["defaultErrnoRet"] = default_errno
    out["architectures"] = _arches(profile, target)
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = profile[key]
    rules = []
    for i, rule in enumerate(profile.get("syscalls") or []):
        path: tuple[str | int, ...] = ("syscalls", i)
        why = _skip_reason(rule, target, path)
        if why:
            dropped.append((path, why))
            continue
        rules.append(_normal_rule(rule, path))
    out["syscalls"] = rules
    return Resolution(out, dropped)


def _arches(profile: dict[str, Any], target: Target) -> list[str]:
    arch_map = profile.get("archMap")
    if arch_map:
        if profile.get("architectures"):
            raise ResolveError(("architectures",), '"architectures" and "archMap" are mutually exclusive')
        for entry in arch_map:
            if entry.get("architecture") == target.arch:
                return [target.arch, *[a for a in entry.get("subArchitectures") or [] if a != target.arch]]
        return [target.arch]
    listed = list(profile.get("architectures") or [])
    return listed or [target.arch]


def _skip_reason(rule: dict[str, Any], target: Target, path: tuple[str | int, ...]) -> str | None:
    ex = rule.get("excludes") or {}
    inc = rule.get("includes") or {}
    if ex.get("arches") and target.goarch in ex["arches"]:
        return f"excludes.arches lists {target.goarch}"
    if ex.get("caps"):
        hit = [c for c in ex["caps"] if c in target.caps]
        if hit:
            return f"excludes.caps: {hit[0]} is in the target capability set"
    if ex.get("minKernel"):
        mk = _min_kernel(ex["minKernel"], (*path, "excludes", "minKernel"))
        if target.kernel >= mk:
            return f"excludes.minKernel {ex['minKernel']}: target kernel is newer"
    if inc.get("arches") and target.goarch not in inc["arches"]:
        return f"includes.arches does not list {target.goarch}"
    if inc.get("caps"):
        miss = [c for c in inc["caps"] if c not in target.caps]
        if miss:
            return f"includes.caps: {miss[0]} is not in the target capability set"
    if inc.get("minKernel"):
        mk = _min_kernel(inc["minKernel"], (*path, "includes", "minKernel"))
        if target.kernel < mk:
            return f"includes.minKernel {inc['minKernel']}: target kernel is older"
    return None


def _min_kernel(text: Any, path: tuple[str | int, ...]) -> tuple[int, int]:
    kv = parse_kernel(str(text)) if isinstance(text, str) else None
    if kv is None:
        raise ResolveError(path, f'invalid minKernel "{text}": expected "MAJOR.MINOR"')
    if kv == (0, 0):
        raise ResolveError(path, 'minKernel "0.0" is not a kernel version (Docker rejects it)')
    return kv


def _errno_of(obj: dict[str, Any], keys: tuple[str, str], path: tuple[str | int, ...]) -> int | None:
    num, name = obj.get(keys[0]), obj.get(keys[1])
    if num is not None:
        return int(num)
    if name:
        v = errno_value(str(name))
        if v is None:
            raise ResolveError((*path, keys[1]), f'unknown errno name "{name}"')
        return v
    return None


def _normal_rule(rule: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    names = list(rule.get("names") or [])
    if rule.get("name"):
        if names:
            raise ResolveError((*path, "name"), 'both "name" and "names" are set')
        names = [rule["name"]]
    out: dict[str, Any] = {"names": names, "action": rule["action"]}
    eret = _errno_of(rule, ("errnoRet", "errno"), path)
    if eret is not None:
        out["errnoRet"] = eret
    args = [dict(a) for a in rule.get("args") or []]
    if args:
        out["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a} for a in args]
    return out
