"""TracingPolicy compilation: backend choice per target kernel, the generated C, the
manifest and event layout, the schemas, and the feature probe."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from bpfpolicy.codegen.render import find_marker
from bpfpolicy.kinds.tracing import schema as tracing_schema
from bpfpolicy.kinds.tracing.events import HEADER, decode_event, event_layout
from bpfpolicy.kinds.tracing.features import STATIC_FEATURES, features_for, probe_host_features

from helpers.tracing import compile_one, features, guest_kernel_test, write

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.usefixtures("clang_required")

OPENAT_KILL = """\
kprobes:
- call: sys_openat
  args:
  - {index: 1, type: string}
  selectors:
  - matchArgs:
    - {index: 1, operator: Prefix, values: [/etc/shadow]}
    matchActions:
    - action: Sigkill
"""

SECURITY_OVERRIDE = """\
kprobes:
- call: security_file_open
  syscall: false
  args:
  - {index: 0, type: file}
  selectors:
  - matchArgs:
    - {index: 0, operator: Equal, values: [/etc/shadow]}
    matchActions:
    - {action: Override, argError: -13}
"""

NO_KPROBES = features(btf=True, syscall_tracepoints=True, send_signal=True)  # this host
FULL = features(btf=True, kprobes=True, error_injection=True, trampoline=True, bpf_lsm=True,
                syscall_tracepoints=True, send_signal=True)  # Debian 6.12 with lsm=bpf


def sections(art) -> list[str]:
    return [p["section"] for p in art.manifest["programs"]]


@pytest.mark.parametrize(("feats", "expected"), [
    (FULL, ["kprobe/__x64_sys_openat"]),
    (NO_KPROBES, ["tp/syscalls/sys_enter_openat"]),
    (features(btf=True, trampoline=True, send_signal=True), ["fentry/__x64_sys_openat"]),
])
def test_syscall_backend_follows_kernel_features(tmp_path: Path, feats: dict, expected: list[str]) -> None:
    art, diags = compile_one(write(tmp_path, OPENAT_KILL), options={"features": feats})
    assert art is not None, diags
    assert sections(art) == expected
    assert "bpf_send_signal(9);" in art.files["prog.bpf.c"].decode()


def test_syscall_without_any_backend_names_all_missing_features(tmp_path: Path) -> None:
    art, diags = compile_one(write(tmp_path, OPENAT_KILL), options={"features": features(btf=True)})
    assert art is None
    assert "kprobes" in diags[0].message and "syscall_tracepoints" in diags[0].message


@pytest.mark.parametrize(("feats", "expected", "ret"), [
    (FULL, ["lsm/file_open"], "return ret ? ret : -13;"),
    (features(btf=True, trampoline=True), ["fmod_ret/security_file_open"], "return -13;"),
])
def test_security_override_via_lsm_or_fmod_ret(tmp_path: Path, feats: dict, expected: list[str], ret: str) -> None:
    art, diags = compile_one(write(tmp_path, SECURITY_OVERRIDE), options={"features": feats})
    assert art is not None, diags
    assert sections(art) == expected
    assert ret in art.files["prog.bpf.c"].decode()


def test_security_override_impossible_with_kprobes_only(tmp_path: Path) -> None:
    art, diags = compile_one(write(tmp_path, SECURITY_OVERRIDE),
                             options={"features": features(btf=True, kprobes=True, kprobe_override=True)})
    assert art is None
    assert "bpf_override_return cannot override security_ functions" in diags[0].message
    assert diags[0].path.endswith("matchActions[0].action")


def test_positive_arg_error_uses_fmod_ret_even_with_lsm(tmp_path: Path) -> None:
    p = write(tmp_path, SECURITY_OVERRIDE.replace("argError: -13", "argError: 1"))
    art, diags = compile_one(p, options={"features": FULL})
    assert art is not None, diags
    assert sections(art) == ["fmod_ret/security_file_open"]


def test_syscall_override_on_debian_612_is_lsm_file_open(tmp_path: Path) -> None:
    """Debian's 6.12 config has no CONFIG_FUNCTION_ERROR_INJECTION (no fmod_ret on
    syscalls): openat's Override is enforced at lsm/file_open; fmod_ret where it exists."""
    p = write(tmp_path, OPENAT_KILL.replace("action: Sigkill", "{action: Override, argError: -1}"))
    art, diags = compile_one(p, kernel=(6, 12))
    assert art is not None, diags
    assert sections(art) == ["lsm/file_open"]
    art1, _ = compile_one(p, options={"features": FULL})
    assert art1 is not None and sections(art1) == ["fmod_ret/__x64_sys_openat"]
    art2, _ = compile_one(p, options={"features": {**FULL, "kprobe_override": True}})
    assert art2 is not None and sections(art2) == ["kprobe/__x64_sys_openat"]
    assert "bpf_override_return(ctx, -1);" in art2.files["prog.bpf.c"].decode()


def test_return_probe_splits_enforcement_and_post(tmp_path: Path) -> None:
    p = write(tmp_path, """\
kprobes:
- call: security_file_open
  syscall: false
  return: true
  args: [{index: 0, type: file}]
  returnArg: {index: 0, type: int}
  selectors:
  - matchArgs: [{index: 0, operator: Prefix, values: [/etc/]}]
    matchActions: [{action: Override, argError: -1}, {action: Post}]
""")
    art, diags = compile_one(p, options={"features": FULL})  # kprobes: Tetragon's kretprobe
    assert art is not None, diags
    assert sections(art) == ["lsm/file_open", "kprobe/security_file_open", "kretprobe/security_file_open"]
    art, diags = compile_one(p, options={"features": {**FULL, "kprobes": False}})
    assert art is not None, diags
    assert sections(art) == ["lsm/file_open", "fexit/security_file_open"]
    src = art.files["prog.bpf.c"].decode()
    assert "e->ret = (long)ctx[1];" in src  # security_file_open(file): the return follows arg 0


def test_monitor_mode_skips_enforcement(tmp_path: Path) -> None:
    p = write(tmp_path, OPENAT_KILL + "options:\n- {name: policy-mode, value: monitor}\n")
    art, diags = compile_one(p, options={"features": NO_KPROBES})
    assert art is not None, diags
    src = art.files["prog.bpf.c"].decode()
    assert "bpf_send_signal" not in src.split("SEC(\"tp/")[1]
    # Sigkill bit + last action Sigkill (id 2 + 1 in bits 16-20) + monitor bit; Tetragon
    # still posts a monitored Sigkill (the event says it would have run)
    assert "e->actions = 0x80030004;" in src
    assert "tp_post(e);" in src.split("SEC(\"tp/")[1]
    assert art.manifest["metadata"]["mode"] == "monitor"


def test_policy_strings_never_reach_c_as_strings(tmp_path: Path) -> None:
    nasty = '/tmp/"*/ #include <evil.h>\\n'
    p = write(tmp_path, OPENAT_KILL.replace("[/etc/shadow]", json.dumps([nasty])))
    art, diags = compile_one(p, options={"features": NO_KPROBES})
    assert art is not None, diags
    src = art.files["prog.bpf.c"].decode()
    code = re.sub(r"/\*.*?\*/", "", src, flags=re.S)  # the value may only appear in comments
    assert "<evil.h>" not in code and "#include <evil" not in code  # only a sanitised C identifier
    assert f"len >= {len(nasty.encode())} && s[0] == '/'" in src
    assert "(char)34" in src and "(char)92" in src  # '"' and backslash as numbers


def test_generated_c_points_back_to_the_policy(tmp_path: Path) -> None:
    p = write(tmp_path, OPENAT_KILL)
    art, _ = compile_one(p, options={"features": NO_KPROBES})
    src = art.files["prog.bpf.c"].decode()
    markers = re.findall(r"@policy (\S+):(\d+):(\d+) (\S+)", src)
    paths = {m[3] for m in markers}
    assert {"spec.kprobes[0]", "spec.kprobes[0].selectors[0]",
            "spec.kprobes[0].selectors[0].matchArgs[0]"} <= paths
    assert all(m[0] == "#0" for m in markers)  # file #0 of the @policy-files table
    # the file as artifacts record it: relative to its policy tree (the same for any spelling)
    assert find_marker(src, len(src.splitlines())).file == p.name
    assert 'bpf_metadata_bpfpolicy_policy[] SEC(".rodata") = "TracingPolicy/t"' in src


def test_manifest_describes_programs_attachments_and_events(tmp_path: Path) -> None:
    art, _ = compile_one(write(tmp_path, OPENAT_KILL), options={"features": NO_KPROBES})
    m = art.manifest
    assert m["object"] == "prog.bpf.o" and len(m["program_hash"]) == 64
    assert m["attachments"] == [{"program": m["programs"][0]["name"], "type": "tracepoint"}]
    ev = m["events"]
    assert ev["map"] == "events" and ev["type"] == "ringbuf" and ev["layout"] == "tracing_event_v1"
    assert ev["size"] == 1688 and ev["hooks"][0]["name"] == "sys_openat"
    assert ev["hooks"][0]["attach"] == "tp/syscalls/sys_enter_openat"
    kt = art.files["kernel-test.txt"].decode().splitlines()
    assert [x for x in kt[1:] if not x.startswith("#")] == ["object prog.bpf.o", f"attach {m['programs'][0]['name']} auto"]
    assert kt[2] == "# kprobe sys_openat runs as tp/syscalls/sys_enter_openat on kernel " + m["features"]["kernel"]


def test_event_decoder_round_trip() -> None:
    layout = event_layout()
    raw = bytearray(layout["size"])
    HEADER.pack_into(raw, 0, 5_000_000_000, 42, 43, 1000, 0, 1, (1 << 2) | 1, 0, b"cat", 12, 2)
    raw[HEADER.size:HEADER.size + 12] = b"/usr/bin/cat"
    base = layout["args"]["offset"]
    struct.pack_into("<qII", raw, base, 0, 11, 3)
    raw[base + 16:base + 27] = b"/etc/shadow"
    struct.pack_into("<qII", raw, base + layout["args"]["stride"], -2, 0, 1)
    manifest = {"metadata": {"policy": "TracingPolicy/x"}, "events": {"hooks": [
        {"name": "sys_openat", "args": [{"index": 1, "type": "string"}, {"index": 2, "type": "int"}]}]}}
    ev = decode_event(bytes(raw), manifest, boot_offset_ns=0)
    assert ev["time"] == "1970-01-01T00:00:05.000Z"
    assert ev["binary"] == "/usr/bin/cat" and ev["comm"] == "cat" and ev["selector"] == 1
    assert ev["action"] == ["Post", "Sigkill"]
    assert ev["args"] == [{"index": 1, "type": "string", "value": "/etc/shadow"},
                          {"index": 2, "type": "int", "value": -2}]


def test_examples_compile_for_host_and_612() -> None:
    for f in sorted(f for f in (ROOT / "policies/tracing").glob("*.yaml") if not f.name.endswith(".test.yaml")):
        for kernel in (None, (6, 12)):
            art, diags = compile_one(f, kernel=kernel)
            assert art is not None, (f, diags)
    for f in sorted((ROOT / "docs/examples/tracing").glob("*.yaml")):
        art, diags = compile_one(f, kernel=(6, 12))
        assert art is not None, (f, diags)
        assert "exec-expect" in art.files["kernel-test.txt"].decode()


def test_schemas_are_generated_from_the_builder() -> None:
    for native, name in ((True, tracing_schema.NATIVE_FILE), (False, tracing_schema.FOREIGN_FILE)):
        on_disk = (ROOT / "bpfpolicy" / "schemas" / name).read_text()
        assert on_disk == tracing_schema.render(native), f"run python -m bpfpolicy.kinds.tracing.schema ({name})"
        assert json.loads(on_disk)["$schema"].endswith("2020-12/schema")


def test_feature_probe_and_static_table() -> None:
    host = probe_host_features()
    assert set(host) >= {"kernel", "btf", "kprobes", "trampoline", "bpf_lsm", "reasons"}
    for missing, on in host.items():
        if isinstance(on, bool) and not on:
            assert missing in host["reasons"], missing  # every missing feature says why
    assert set(STATIC_FEATURES) >= {"5.10", "6.1", "6.12", "7.2"}
    assert features_for((6, 12), {})["bpf_lsm"] is True
    assert features_for((6, 12), {})["kprobe_override"] is False
    given = features_for(None, {"features": {"kprobes": True}})
    assert given["kprobes"] and not given["bpf_lsm"]


@pytest.mark.vm
def test_examples_in_a_612_guest(tmp_path: Path, cli) -> None:
    """The matrix example policies in a real Debian 6.12 kernel (QEMU): LSM file_open deny
    makes `cat /proc/version` fail while `cat /proc/uptime` works; kprobe Sigkill kills mkdir."""
    guest_kernel_test(cli, tmp_path, ROOT / "docs/examples/tracing")


def test_openat_override_remapped_to_lsm_file_open_without_syscall_override(tmp_path: Path) -> None:
    """A kprobe-less kernel with BPF LSM (docs/upstream.md §2.4): Override on sys_openat becomes
    lsm/file_open matching the opened file's path."""
    p = write(tmp_path, OPENAT_KILL.replace("action: Sigkill", "{action: Override, argError: -13}"))
    feats = features(btf=True, trampoline=True, bpf_lsm=True, syscall_tracepoints=True, send_signal=True)
    art, diags = compile_one(p, options={"features": feats})
    assert art is not None, diags
    assert sections(art) == ["lsm/file_open"]
    src = art.files["prog.bpf.c"].decode()
    assert "tp_capture_file(e, 0, (struct file *)ctx[0]);" in src
    assert "return ret ? ret : -13;" in src
    assert any("lsm/file_open" in w for w in art.warnings)


def test_resolve_follows_btf_members(tmp_path: Path) -> None:
    """Tetragon's resolve: one typed CO-RE read per pointer, the final array's address."""
    p = write(tmp_path, """\
lsmhooks:
- hook: bprm_check_security
  args:
  - {index: 0, type: string, resolve: mm.owner.real_parent.comm}
  - {index: 0, type: path, resolve: file.f_path}
""")
    art, diags = compile_one(p, options={"features": FULL})
    assert art is not None, diags
    src = art.files["prog.bpf.c"].decode()
    assert "struct mm_struct *r1 = BPF_CORE_READ(r0, mm);" in src
    assert "struct task_struct *r3 = BPF_CORE_READ(r2, real_parent);" in src
    assert "tp_capture_str(e, 0, (const void *)&r3->comm, false);" in src
    assert "(struct path *)(unsigned long)&r1->f_path" in src


def test_resolve_unknown_member_is_located(tmp_path: Path) -> None:
    p = write(tmp_path, """\
lsmhooks:
- hook: bprm_check_security
  args:
  - {index: 0, type: string, resolve: mm.ownr.comm}
""")
    art, diags = compile_one(p, options={"features": FULL})
    assert art is None
    assert diags[0].path == "spec.lsmhooks[0].args[0].resolve"
    assert 'struct mm_struct has no member "ownr"' in diags[0].message
