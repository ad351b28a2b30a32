"""Helpers for the TracingPolicy tests: write a policy, validate/compile it, and (kernel
tests) load an artifact with the kernel layer and read its ring buffer."""

from __future__ import annotations

import ctypes
import json
import textwrap
from pathlib import Path
from typing import Any

from bpfpolicy.compile import compile_policy
from bpfpolicy.errors import Diagnostic
from bpfpolicy.kinds import Artifact, CompileContext
from bpfpolicy.validate import ValidationResult, validate_paths

HEADER = """\
apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata:
  name: {name}
spec:
"""


def write(tmp_path: Path, spec: str, name: str = "t", raw: bool = False) -> Path:
    """A native TracingPolicy whose spec is `spec` (indented YAML), or `raw` text."""
    body = textwrap.dedent(spec)
    text = body if raw else HEADER.format(name=name) + textwrap.indent(body, "  ")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def validate(path: Path, lenient: bool = False) -> ValidationResult:
    return validate_paths([path], lenient=lenient)


def errors(result: ValidationResult) -> list[Diagnostic]:
    return [d for d in result.diagnostics if d.severity == "error"]


def compile_one(path: Path, **ctx: Any) -> tuple[Artifact | None, list[Diagnostic]]:
    result = validate(path)
    assert result.ok, "\n".join(map(str, result.diagnostics))
    (policy,) = result.policies
    return compile_policy(policy, CompileContext(**ctx))


def features(**on: bool) -> dict[str, Any]:
    """A feature set for CompileContext.options["features"]: everything off unless given."""
    names = ("btf", "kprobes", "kprobe_override", "error_injection", "trampoline", "bpf_lsm",
             "syscall_tracepoints", "send_signal")
    return {"kernel": "test", **{n: on.get(n, False) for n in names}, "reasons": {}}


class RingReader:
    """libbpf ring_buffer__poll over the artifact's `events` map (test-side helper)."""

    CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

    def __init__(self, map_fd: int) -> None:
        from bpfpolicy.kernel import libbpf

        self.so = libbpf.lib()
        self.so.ring_buffer__new.restype = ctypes.c_void_p
        self.so.ring_buffer__new.argtypes = [ctypes.c_int, self.CB, ctypes.c_void_p, ctypes.c_void_p]
        self.so.ring_buffer__poll.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.so.ring_buffer__free.argtypes = [ctypes.c_void_p]
        self.records: list[bytes] = []
        self._cb = self.CB(self._on_record)
        self.rb = self.so.ring_buffer__new(map_fd, self._cb, None, None)
        assert self.rb, "ring_buffer__new failed"

    def _on_record(self, _ctx: int, data: int, size: int) -> int:
        self.records.append(ctypes.string_at(data, size))
        return 0

    def poll(self, timeout_ms: int = 200) -> list[bytes]:
        self.so.ring_buffer__poll(self.rb, timeout_ms)
        return self.records

    def close(self) -> None:
        if self.rb:
            self.so.ring_buffer__free(self.rb)
            self.rb = None


def manifest(art: Artifact) -> dict[str, Any]:
    return json.loads(json.dumps(art.manifest, default=str)) | {"kind": art.kind, "name": art.name}
