"""One read per argument per run (issue #14, the miss path): every direct matcher on a
`char *` argument reads the same bytes, so the generated program reads the argument
once, at the first matcher that runs, and later matchers and selectors compare that
buffer (kinds/tracing/order.py `_share_reads`). On the bench host one user read is most
of a miss (~100 ns of it), so three selectors on one path now cost one read, not three.

The rows prove the selectors keep their meaning on a real syscall tracepoint: which
selector matched (the first one, Tetragon's rule), a Postfix on a path longer than the
event's string buffer, and two string arguments taking turns in the same stack buffer
(a selector that compares the other argument must read it again).
"""

from __future__ import annotations

import ctypes
import errno
import os
import uuid
from pathlib import Path

import pytest

from bpfpolicy.kinds.tracing.events import decode_event

from helpers.tracing import compile_one, manifest, write
from helpers.tracing import ring as loaded

ID = uuid.uuid4().hex[:6]
BASE = f"/zf{ID}"  # no such directory: every open/symlink fails with ENOENT

OPEN_POLICY = f"""\
kprobes:
- call: sys_openat
  syscall: true
  args:
  - {{index: 1, type: string, label: pathname}}
  - {{index: 2, type: int, label: flags}}
  selectors:
  - matchArgs:
    - {{index: 1, operator: Prefix, values: ["{BASE}/a"]}}
  - matchArgs:
    - {{index: 1, operator: Equal, values: ["{BASE}/eq"]}}
    - {{index: 2, operator: Mask, values: ["1"]}}
  - matchArgs:
    - {{index: 1, operator: Postfix, values: [".pem"]}}
    - {{index: 1, operator: Prefix, values: ["{BASE}/"]}}
"""

LONG = f"{BASE}/" + "/".join(["d" * 60] * 5) + ".pem"  # 316 bytes: past the event's 255-byte string

# (case, path, open flags, selector that posts or None)
OPEN_ROWS = [
    ("Prefix of selector 0", f"{BASE}/a/x", os.O_RDONLY, 0),
    ("Equal, but the flags Mask of selector 1 fails", f"{BASE}/eq", os.O_RDONLY, None),
    ("Equal and Mask: selector 1", f"{BASE}/eq", os.O_WRONLY, 1),
    ("Equal fails, Postfix + Prefix: selector 2", f"{BASE}/eq.pem", os.O_WRONLY, 2),
    ("selectors 0 and 2 both match: the first one posts", f"{BASE}/a.pem", os.O_RDONLY, 0),
    ("Postfix on a 300-byte path", LONG, os.O_RDONLY, 2),
    ("Postfix, but not under the Prefix", f"/zg{ID}/k.pem", os.O_RDONLY, None),
    ("nothing", f"{BASE}/b", os.O_RDONLY, None),
]

# symlinkat(oldname, newdirfd, newname): two string arguments, both read into the stack buffer.
LINK_POLICY = f"""\
kprobes:
- call: sys_symlinkat
  syscall: true
  args:
  - {{index: 0, type: string, label: oldname}}
  - {{index: 2, type: string, label: newname}}
  selectors:
  - matchArgs:
    - {{index: 0, operator: Prefix, values: ["{BASE}/o"]}}
    - {{index: 2, operator: Prefix, values: ["{BASE}/n"]}}
  - matchArgs:
    - {{index: 0, operator: Prefix, values: ["{BASE}/p"]}}
  - matchArgs:
    - {{index: 2, operator: Equal, values: ["{BASE}/n2"]}}
"""

# (case, oldname, newname, selector that posts or None)
LINK_ROWS = [
    ("both arguments match selector 0", f"{BASE}/o1", f"{BASE}/n1", 0),
    ("selector 0 read newname last; selector 1 must read oldname again", f"{BASE}/p1", f"{BASE}/x", 1),
    ("oldname fails both Prefixes; selector 2 reads newname", f"{BASE}/q", f"{BASE}/n2", 2),
    ("oldname of selector 0, newname of none", f"{BASE}/o1", f"{BASE}/x", None),
    ("newname one byte longer than the Equal", f"{BASE}/q", f"{BASE}/n22", None),
]

SYS_SYMLINKAT = 266  # x86-64
AT_FDCWD = -100


def _same(value: str, path: str) -> bool:
    """The event keeps 255 bytes of a string; a longer path is compared on those."""
    return value == path or (len(path) > 255 and len(value) >= 200 and path.startswith(value))


def _direct_reads(c_source: str, section: str) -> list[str]:
    body = c_source.split(f'SEC("{section}")')[1].split("\n}\n")[0]
    return [line.strip() for line in body.splitlines()
            if "bpf_probe_read_user" in line and "ctx->args" in line and "tp_capture" not in line]


def test_three_selectors_share_one_read_of_the_path(tmp_path: Path) -> None:
    art, diags = compile_one(write(tmp_path, OPEN_POLICY))
    assert art is not None, diags
    reads = _direct_reads(art.files["prog.bpf.c"].decode(), "tp/syscalls/sys_enter_openat")
    # every matcher on the path reads the same bytes: the Postfix needs the whole string
    assert reads and all("bpf_probe_read_user_str(sc->match, 4096," in r for r in reads), reads
    assert art.files["prog.bpf.c"].decode().count("if (tp_match_arg != 1)") == len(reads)


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_shared_read_keeps_selector_semantics(tmp_path: Path) -> None:
    art, diags = compile_one(write(tmp_path, OPEN_POLICY))
    assert art is not None, diags
    with loaded(art) as reader:
        for _case, path, flags, _ in OPEN_ROWS:
            with pytest.raises(FileNotFoundError):
                os.open(path, flags)
        got = [decode_event(r, manifest(art)) for r in reader.poll(300)]
    mine = [e for e in got if e["pid"] == os.getpid()]
    for case, path, flags, sel in OPEN_ROWS:
        hits = [e for e in mine if _same(e["args"][0]["value"], path) and e["args"][1]["value"] & os.O_ACCMODE == flags]  # os.open adds O_CLOEXEC
        assert [e["selector"] for e in hits] == ([] if sel is None else [sel]), (case, mine)


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required", "clang_required")
def test_two_string_arguments_take_turns_in_one_buffer(tmp_path: Path) -> None:
    art, diags = compile_one(write(tmp_path, LINK_POLICY))
    assert art is not None, diags
    reads = _direct_reads(art.files["prog.bpf.c"].decode(), "tp/syscalls/sys_enter_symlinkat")
    assert all("tp_sbuf" in r for r in reads), reads  # short literals: both on the stack
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    with loaded(art) as reader:
        for _case, old, new, _ in LINK_ROWS:
            ret = libc.syscall(SYS_SYMLINKAT, old.encode(), AT_FDCWD, new.encode())
            assert ret == -1 and ctypes.get_errno() == errno.ENOENT
        got = [decode_event(r, manifest(art)) for r in reader.poll(300)]
    mine = [e for e in got if e["pid"] == os.getpid()]
    for case, old, new, sel in LINK_ROWS:
        hits = [e for e in mine if [a["value"] for a in e["args"]] == [old, new]]
        assert [e["selector"] for e in hits] == ([] if sel is None else [sel]), (case, mine)
