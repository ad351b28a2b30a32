"""maxData (Tetragon): a string or char_buf argument's data beyond the TP_STR_MAX bytes an
event keeps, sent after the event in the same ring-buffer record (capture.MAX_DATA bytes,
`truncated` beyond). Real processes write, read and open with known contents on this
host (sys_* kprobes run on their syscall tracepoints here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bpfpolicy.kinds import Artifact
from bpfpolicy.kinds.tracing.capture import MAX_DATA
from bpfpolicy.kinds.tracing.events import decode_event

from helpers.tracing import RingReader, compile_one, errors, loaded, manifest, validate, write

kernel = [pytest.mark.kernel, pytest.mark.usefixtures("root_required", "clang_required")]


def events(art: Artifact, reader: RingReader, pid: int) -> list[dict]:
    return [e for e in (decode_event(r, manifest(art)) for r in reader.poll(300)) if e["pid"] == pid]


def known(n: int) -> bytes:
    return bytes((i * 13 + 5) % 256 for i in range(n))


# A child that waits for a line on stdin (the policy, keyed on its pid, attaches first),
# then runs `argv[1]` as Python with `n = int(argv[2])`.
CHILD = "import os, sys\nsys.stdin.readline()\nn = int(sys.argv[2])\nexec(sys.argv[1])\n"


def run_child(tmp_path: Path, body: str, n: int, spec: str) -> tuple[Artifact, list[dict], subprocess.Popen]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, body, str(n)], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        art, diags = compile_one(write(tmp_path, spec.format(pid=child.pid)))
        assert art is not None, diags
        with loaded(art) as (_obj, reader):
            child.communicate("go\n", timeout=30)
            got = events(art, reader, child.pid)
    finally:
        if child.poll() is None:
            child.kill()
    return art, got, child


WRITE = """\
kprobes:
- call: sys_write
  args:
  - {{index: 1, type: char_buf, sizeArgIndex: 3, maxData: true, label: buf}}
  - {{index: 2, type: size_t, label: count}}
  selectors:
  - matchPIDs: [{{operator: In, values: [{pid}]}}]
"""
WRITE_BODY = "fd = os.open('/dev/null', os.O_WRONLY)\nos.write(fd, bytes((i * 13 + 5) % 256 for i in range(n)))\n"


@pytest.mark.parametrize("n", [3000, MAX_DATA, MAX_DATA + 5000])
@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.kernel
def test_write_buffer_beyond_the_event_string(tmp_path: Path, n: int) -> None:
    art, got, child = run_child(tmp_path, WRITE_BODY, n, WRITE)
    assert child.returncode == 0
    assert {"name": "tp_data_map", "type": "percpu_array"} in art.manifest["maps"]
    (ev,) = got
    buf, count = ev["args"]
    assert count["value"] == n and buf["size"] == n
    kept = min(n, MAX_DATA)
    assert bytes.fromhex(buf["value"]) == known(n)[:kept] and buf["max_data"] == kept
    assert buf["truncated"] is (n > MAX_DATA)


@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.kernel
def test_long_path_string_arrives_whole(tmp_path: Path) -> None:
    """openat of a 3000-byte path (missing directories): the event's string stops at 255
    bytes, maxData carries all 3000."""
    body = "p = '/tmp/' + '/'.join(['d' * 99] * (n // 100))\np = p[:n]\ntry:\n    os.open(p, os.O_RDONLY)\nexcept OSError:\n    pass\n"
    spec = """\
kprobes:
- call: sys_openat
  args: [{{index: 1, type: string, maxData: true, label: pathname}}]
  selectors:
  - matchPIDs: [{{operator: In, values: [{pid}]}}]
"""
    _art, got, child = run_child(tmp_path, body, 3000, spec)
    assert child.returncode == 0
    expect = ("/tmp/" + "/".join(["d" * 99] * 30))[:3000]
    (ev,) = [e for e in got if e["args"][0]["value"].startswith("/tmp/d")]
    assert ev["args"][0]["value"] == expect and ev["args"][0]["truncated"] is False


@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.kernel
def test_return_copy_with_max_data_reads_the_whole_read(tmp_path: Path) -> None:
    data = tmp_path / "known.bin"
    data.write_bytes(known(10000))
    body = f"fd = os.open({str(data)!r}, os.O_RDONLY)\nassert os.read(fd, n) == bytes((i * 13 + 5) % 256 for i in range(n))\n"
    spec = """\
kprobes:
- call: sys_read
  return: true
  args: [{{index: 1, type: char_buf, returnCopy: true, maxData: true, label: buf}}]
  returnArg: {{index: 0, type: long}}
  selectors:
  - matchPIDs: [{{operator: In, values: [{pid}]}}]
    matchReturnArgs: [{{index: 0, operator: Equal, values: ["10000"]}}]
"""
    _art, got, child = run_child(tmp_path, body, 10000, spec)
    assert child.returncode == 0
    (ev,) = got
    assert ev["return"] == 10000
    (buf,) = ev["args"]
    assert buf["size"] == 10000 and bytes.fromhex(buf["value"]) == known(10000)


@pytest.mark.parametrize(("arg", "needle"), [
    ("{index: 1, type: char_buf, maxData: true}", "needs its size"),
    ("{index: 0, type: int, maxData: true}", "applies to string and char_buf"),
])
def test_max_data_misuse_is_located(tmp_path: Path, arg: str, needle: str) -> None:
    p = write(tmp_path, f"kprobes:\n- call: sys_write\n  args:\n  - {arg}\n")
    (d,) = errors(validate(p))
    assert needle in d.message and d.path.endswith("maxData"), d
