"""`watch`'s event stream symbolises stack traces: a TracingPolicy with kernelStackTrace /
userStackTrace applied by the controller, the exporter thread `watch` runs reading every
ring buffer, a real C program making the hooked syscall from a known call chain. The
exported line names the user frames (ELF symbols through /proc/<pid>/maps) and the kernel
frames (kallsyms), read through the applied policy's pinned `stacks` map."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from conftest import run_cli

# Frame pointers kept, the syscall (getppid, 110) issued inline from the leaf: the first
# user frames are then leaf -> outer -> main.
STACK_PROG = r"""
#include <stdio.h>
__attribute__((noinline)) long bpfp_watch_leaf(void)
{ long r; __asm__ volatile("syscall" : "=a"(r) : "a"(110L) : "rcx", "r11", "memory"); return r; }
__attribute__((noinline)) long bpfp_watch_outer(void) { return bpfp_watch_leaf() + 1; }
int main(void) { long r = bpfp_watch_outer(); printf("%ld\n", r); fflush(stdout); getchar(); return 0; }
"""


def test_exported_events_carry_symbolised_stacks(ctl, tmp_path: Path) -> None:  # noqa: ANN001
    from bpfpolicy.controller.export import Exporter, settings
    from bpfpolicy.kinds.tracing.tetragon_json import to_tetragon

    (tmp_path / "stk.c").write_text(STACK_PROG)
    prog = tmp_path / "stk"
    subprocess.run(["cc", "-O0", "-fno-omit-frame-pointer", "-o", str(prog), str(tmp_path / "stk.c")], check=True)
    src = tmp_path / "policies"
    src.mkdir()
    (src / "stacks.yaml").write_text(f"""\
apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata: {{name: watch-stacks}}
spec:
  kprobes:
  - call: sys_getppid
    syscall: true
    selectors:
    - matchBinaries: [{{operator: In, values: ["{prog}"]}}]
      matchActions: [{{action: Post, kernelStackTrace: true, userStackTrace: true}}]
""")
    res = run_cli(ctl, "apply", str(src))
    assert res.returncode == 0, res.stdout + res.stderr
    exporter = Exporter(ctl).start()
    path = settings(ctl).path
    found: list[dict] = []
    try:
        deadline = time.monotonic() + 40
        while not found and time.monotonic() < deadline:  # the stream opens the rings asynchronously
            child = subprocess.Popen([str(prog)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert child.stdout is not None and child.stdout.readline()  # the syscall ran
                for _ in range(20):  # decoded while the process lives (its maps name the frames)
                    time.sleep(0.1)
                    lines = path.read_text().splitlines() if path.exists() else []
                    found = [e for e in (json.loads(x) for x in lines)
                             if e.get("policy") == "TracingPolicy/watch-stacks" and e.get("pid") == child.pid]
                    if found:
                        break
            finally:
                child.communicate("\n", timeout=10)
    finally:
        exporter.stop()
    assert found, f"no event exported for our process; export: {path.read_text() if path.exists() else '(none)'}"
    ev = found[0]
    assert "user_stack_trace" in ev and "kernel_stack_trace" in ev, ev  # the ids, symbolised
    user = [f.get("symbol") for f in ev["user_stack_trace"]]
    assert user[:3] == ["bpfp_watch_leaf", "bpfp_watch_outer", "main"], ev["user_stack_trace"]
    assert ev["user_stack_trace"][0]["module"] == str(prog)
    kernel = [f.get("symbol") or "" for f in ev["kernel_stack_trace"]]
    assert any("syscall" in k.lower() for k in kernel), kernel
    # exportFormat: tetragon carries them as ProcessKprobe's repeated StackTraceEntry
    tet = to_tetragon(ev, node_name="n")["process_kprobe"]
    assert [f.get("symbol") for f in tet["user_stack_trace"][:3]] == user[:3]
    top = tet["user_stack_trace"][0]
    assert top["address"] == str(int(ev["user_stack_trace"][0]["address"], 16)) and top["module"] == str(prog)
    assert any("syscall" in (f.get("symbol") or "").lower() for f in tet["kernel_stack_trace"])
