"""Build generated C into BPF objects with clang, through a content-addressed cache.

The cache key is the source text, the flags and clang's version: the same policy never
compiles twice, and a toolchain upgrade never serves a stale object.

Templates mark the code they emit for a policy rule with a `@policy #FILE:LINE:COL PATH`
comment (`codegen.policy_marker`; FILE indexes the `@policy-files` table at the end of the
source); when clang rejects generated code, the error is reported at the nearest marker
above the failing line, so the user is pointed at their rule, not at generated C.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..policy.diagnostics import BuildError
from ..resources import cache_dir
from .render import find_marker

CFLAGS = ("-O2", "-g", "-target", "bpf", "-Wall", "-Wno-unused-function", "-Werror=implicit-function-declaration")
_CLANG_DIAG = re.compile(r"^[^:]+:(\d+):(\d+): (error|warning): (.*)$", re.M)


@dataclass(frozen=True)
class BuildResult:
    object: bytes
    source: str
    cached: bool
    key: str


@cache
def clang_binary() -> str:
    for name in ("clang", "clang-16", "clang-15", "clang-14"):
        path = shutil.which(name)
        if path:
            return path
    raise BuildError("clang not found: run scripts/setup.sh (apt install clang llvm libbpf-dev)")


@cache
def clang_version() -> str:
    out = subprocess.run([clang_binary(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


@cache
def include_flags() -> tuple[str, ...]:
    """uapi headers (asm/types.h lives under the multiarch dir on Debian)."""
    flags: list[str] = []
    try:
        triplet = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True, check=False).stdout.strip()
    except FileNotFoundError:
        triplet = ""
    for d in (f"/usr/include/{triplet}" if triplet else "", "/usr/include/x86_64-linux-gnu"):
        if d and Path(d, "asm").is_dir():
            flags += ["-I", d]
            break
    return tuple(flags)


def vmlinux_header(btf: Path = Path("/sys/kernel/btf/vmlinux")) -> Path:
    """A `vmlinux.h` for CO-RE programs, dumped from kernel BTF once and cached by BTF hash."""
    if not btf.exists():
        raise BuildError(f"{btf} not found: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF)")
    digest = hashlib.sha256(btf.read_bytes()).hexdigest()[:16]
    dest = cache_dir() / "vmlinux" / digest / "vmlinux.h"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["bpftool", "btf", "dump", "file", str(btf), "format", "c"], capture_output=True, check=False
        )
        if out.returncode != 0:
            raise BuildError(f"bpftool btf dump failed: {out.stderr.decode(errors='replace').strip()}")
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(out.stdout)
        os.replace(tmp, dest)
    return dest


def build_bpf(source: str, *, name: str = "prog", extra_flags: tuple[str, ...] = (),
              use_cache: bool = True) -> BuildResult:
    """Compile one generated C translation unit to a BPF ELF object."""
    flags = (*CFLAGS, *include_flags(), *extra_flags)
    key = hashlib.sha256("\0".join((clang_version(), *flags, source)).encode()).hexdigest()
    cached = cache_dir() / "objects" / key[:2] / f"{key}.o"
    if use_cache and cached.exists():
        return BuildResult(cached.read_bytes(), source, True, key)
    with tempfile.TemporaryDirectory(prefix="bpfpolicy-build-") as tmp:
        src = Path(tmp) / f"{_safe(name)}.bpf.c"
        obj = src.with_suffix(".o")
        src.write_text(source)
        # The temp dir must not leak into debug info, or identical sources would give
        # different objects (and a needless program reload).
        proc = subprocess.run([clang_binary(), *flags, f"-fdebug-prefix-map={tmp}=.", "-c", str(src), "-o", str(obj)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BuildError(explain_clang_failure(source, proc.stderr))
        data = obj.read_bytes()
    if use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp_obj = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp_obj.write_bytes(data)
        os.replace(tmp_obj, cached)
    return BuildResult(data, source, False, key)


def explain_clang_failure(source: str, stderr: str) -> str:
    """Map clang's first error back to the policy rule that generated the failing line."""
    m = _CLANG_DIAG.search(stderr)
    if not m:
        return f"generated C failed to compile: {stderr.strip()[:2000]}"
    line_no, message = int(m.group(1)), m.group(4)
    marker = find_marker(source, line_no - 1)
    if marker:
        return f"{marker.file}:{marker.line}:{marker.col}: {marker.path}: generated C failed to compile: {message}"
    return f"generated C line {line_no} failed to compile: {message}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] or "prog"
