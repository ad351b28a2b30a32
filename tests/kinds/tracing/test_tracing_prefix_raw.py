"""Filter first on the stack (issue #14): a Prefix is compared on the longest literal's
bytes read raw (`bpf_probe_read_user`, no NUL search) into a stack buffer, and a miss
looks up no map. The rows prove it keeps Prefix semantics on a real syscall tracepoint,
including a string that ends just before an unmapped page: the raw read faults there,
and the `_str` fallback still lets the shorter literal match.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from bpfpolicy.kinds.tracing.events import decode_event

from helpers.tracing import compile_one, manifest, write
from helpers.tracing import ring as loaded

# Opens argv[1] from either the middle of a page or its very last bytes, the next page
# PROT_NONE (argv[2] == "end"): reading past the string's NUL faults.
OPENER = r"""
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
	long pg = sysconf(_SC_PAGESIZE);
	char *m = mmap(0, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	size_t n = strlen(argv[1]) + 1;
	char *s = argv[2][0] == 'e' ? m + pg - n : m + 64;
	if (m == MAP_FAILED || mprotect(m + pg, pg, PROT_NONE)) return 2;
	memcpy(s, argv[1], n);
	openat(AT_FDCWD, s, O_RDONLY);
	return 0;
}
"""

ID = uuid.uuid4().hex[:6]
SHORT = f"/zq{ID}"  # 9 bytes
LONG = f"/zq{ID}/" + "x" * 40  # 50 bytes: the raw read covers it, still on the stack

# (case, string opened, where, posted)
ROWS = [
    ("the short literal itself, at a page end (raw read faults, _str fallback)", SHORT, "end", True),
    ("the short literal + a tail, at a page end", SHORT + "/f", "end", True),
    ("the short literal itself, mid-page (NUL inside the raw window)", SHORT, "mid", True),
    ("one byte shorter than the short literal, at a page end", SHORT[:-1], "end", False),
    ("one byte shorter than the short literal, mid-page", SHORT[:-1], "mid", False),
    ("under the long literal", LONG + "/f", "mid", True),
    ("another path", f"/zr{ID}", "mid", False),
]




def policy(values: list[str]) -> str:
    vals = "".join(f"\n        - {v!r}" for v in values)
    return f"""\
kprobes:
- call: sys_openat
  syscall: true
  args:
  - {{index: 1, type: string, label: pathname}}
  selectors:
  - matchArgs:
    - index: 1
      operator: Prefix
      values:{vals}
    matchActions:
    - action: Post
"""


def test_prefix_miss_reads_raw_onto_the_stack(tmp_path: Path) -> None:
    art, diags = compile_one(write(tmp_path, policy([LONG, SHORT])))
    assert art is not None, diags
    body = art.files["prog.bpf.c"].decode().split('SEC("tp/syscalls/sys_enter_openat")')[1]
    miss = body.split("tp_event_slot(")[0]
    assert f"bpf_probe_read_user(tp_sbuf, {len(LONG)}," in miss
    assert "bpf_map_lookup_elem" not in miss and "tp_scratch_map" not in miss


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_raw_prefix_rows(tmp_path: Path) -> None:
    exe = tmp_path / "opener"
    (tmp_path / "opener.c").write_text(OPENER)
    subprocess.run(["cc", "-O2", "-o", str(exe), str(tmp_path / "opener.c")], check=True)
    art, diags = compile_one(write(tmp_path, policy([LONG, SHORT])))
    assert art is not None, diags
    with loaded(art) as reader:
        pids = []
        for _case, path, where, _ in ROWS:
            p = subprocess.Popen([str(exe), path, where])
            assert p.wait() == 0
            pids.append(p.pid)
        got = [decode_event(r, manifest(art)) for r in reader.poll(300)]
    for (case, path, _w, posted), pid in zip(ROWS, pids, strict=True):
        mine = [e for e in got if e["pid"] == pid and e["args"][0]["value"] == path]
        assert bool(mine) == posted, (case, got)
