"""Helpers for the TracingPolicy tests: write a policy, validate/compile it, and (kernel
tests) load an artifact with the kernel layer and read its ring buffer."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bpfpolicy.kinds import Artifact, CompileContext
from bpfpolicy.policy.compile import compile_policy
from bpfpolicy.policy.diagnostics import Diagnostic
from bpfpolicy.policy.validate import ValidationResult, validate_paths

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
    """The artifact's `events` ring buffer through bpfpolicy.kernel.ringbuf (test-side
    view: every record polled so far, accumulated in `records`)."""

    def __init__(self, map_fd: int) -> None:
        from bpfpolicy.kernel.ringbuf import RingBuffer

        self.records: list[bytes] = []
        self.rb = RingBuffer()
        self.rb.add(map_fd, self.records.append)

    def poll(self, timeout_ms: int = 200) -> list[bytes]:
        self.rb.poll(timeout_ms)
        return self.records

    def close(self) -> None:
        self.rb.close()


def manifest(art: Artifact) -> dict[str, Any]:
    return json.loads(json.dumps(art.manifest, default=str)) | {"kind": art.kind, "name": art.name}


@contextmanager
def loaded(art: Artifact, attach: Callable[[Any], Any] | None = None) -> Iterator[tuple[Any, RingReader]]:
    """Load the artifact's object, attach every program (by its SEC() name unless `attach`
    says how), and read its `events` ring; everything is closed on the way out."""
    from bpfpolicy.kernel import libbpf

    obj = libbpf.BpfObject.open_mem(art.files["prog.bpf.o"], art.name.replace("-", "_")[:15])
    links, reader = [], None
    try:
        obj.load()
        links = [(attach or (lambda prog: prog.attach()))(obj.program(p["name"]))
                 for p in art.manifest["programs"]]
        reader = RingReader(obj.map("events").fd)
        yield obj, reader
    finally:
        if reader is not None:
            reader.close()
        for link in links:
            link.close()
        obj.close()


@contextmanager
def ring(art: Artifact, attach: Callable[[Any], Any] | None = None) -> Iterator[RingReader]:
    """`loaded`, for tests that need only the ring reader."""
    with loaded(art, attach) as (_obj, reader):
        yield reader


# A Python child that records SIGUSR1 in a handler, opens `argv[1]` (ENOENT expected), gives
# the pending signal a few bytecode boundaries to run its handler, and prints what it got.
SIGUSR1_CHILD = r"""
import signal, sys, time
got = []
signal.signal(signal.SIGUSR1, lambda n, f: got.append(n))
try:
    open(sys.argv[1])
except OSError:
    pass
for _ in range(50):
    if got:
        break
    time.sleep(0.01)
print("SIGUSR1" if got else "none", flush=True)
"""


def guest_kernel_test(cli: Callable[..., tuple[int, str]], tmp_path: Path,
                      policies: dict[str, str] | Path, kernel: str = "6.12") -> tuple[dict[str, Any], str]:
    """`bpfpolicy kernel-test` of `policies` (file name -> YAML text, or a directory) in the
    Debian `kernel` QEMU guest; skips when QEMU or that kernel is not there. Asserts the run
    is all ok and returns results.json and the CLI's output."""
    import shutil

    import pytest

    from bpfpolicy.resources import cache_dir

    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("qemu-system-x86_64 not installed")
    if not (cache_dir() / "kernels" / kernel / "vmlinuz").exists():
        pytest.skip(f"Debian {kernel} kernel not cached (bpfpolicy kernel-test --kernels {kernel} fetches it)")
    if isinstance(policies, Path):
        pol = policies
    else:
        pol = tmp_path / "policies"
        pol.mkdir()
        for name, text in policies.items():
            (pol / name).write_text(text)
    out = tmp_path / "out"
    code, text = cli("kernel-test", str(pol), "--kernels", kernel, "--format", "json", "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    assert code == 0 and results["ok"] is True, text
    return results, text
