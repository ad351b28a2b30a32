"""TracingPolicy behaviour in the kernel matrix (issue #14): `event-expect` — the runner reads
the object's ring buffers after an `exec-expect` and says which hook of which policy posted —,
the Tetragon corpus checks in bpfpolicy/matrix/data/tetragon-corpus.yaml, and the process
sensor run beside the policies with a process_exec check.

Host tests run the static runner on this kernel (syscall tracepoints); the vm test boots
Debian 6.12 (kprobe, LSM) with policies/tracing, a few corpus policies and the sensor.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from bpfpolicy.kinds.tracing.process import PROC_EVENT, decode_record
from bpfpolicy.matrix.expect import _proc_offsets, resolve_script
from bpfpolicy.matrix.guest import GuestError, build_runner
from bpfpolicy.matrix.results import parse_console
from bpfpolicy.matrix.tracing import corpus_checks, corpus_table
from bpfpolicy.policy.validate import validate_paths

from helpers.tracing import compile_one

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies" / "tracing"
CORPUS = ROOT.parent / "shared" / "corpus" / "tetragon"
# The corpus policies the guest test boots: a sys_* kprobe, an LSM Override (EPERM), an LSM
# hook with matchBinaries + matchArgs, and a credentials kprobe with matchNamespaces.
GUEST_CORPUS = ("tracingpolicy__sys_mount.yaml", "tracingpolicy__override-security.yaml",
                "tracingpolicy__lsm_file_open.yaml", "process-credentials__process-creds-changed.yaml")


def _manifest(path: Path, **ctx) -> dict:
    art, diags = compile_one(path, **ctx)
    assert art is not None, diags
    return json.loads(json.dumps(art.manifest))


# ---- resolving author lines against the manifest (no kernel) ------------------------

def test_event_expect_resolves_hook_names_pid_and_action_from_the_manifest() -> None:
    m = _manifest(POLICIES / "forbidden-mkdir.yaml", kernel=(6, 12))
    fields = {k: v[0] for k, v in m["events"]["fields"].items()}
    script = resolve_script("exec-expect exit=0 true\n"
                            "event-expect posted sys_mkdir,sys_mkdirat action=Sigkill\n"
                            "event-expect none * any\n"
                            "event-expect posted sys_open\n"
                            "event-expect posted sys_mkdir path=/x\n", m)
    lines = script.splitlines()
    assert lines[0] == "exec-expect exit=0 true"
    words = lines[1].split()
    assert words[:3] == ["event-expect", "posted", "events"]
    assert words[3] == "hook=sys_mkdir[kprobe/__x64_sys_mkdir],sys_mkdirat[kprobe/__x64_sys_mkdirat]"
    assert f"pid@{fields['pid']}" in words and f"eq@{fields['hook']}=0,1" in words
    sigkill = int(next(i for i, n in m["events"]["actions"].items() if n == "Sigkill"))
    assert f"bits@{fields['actions']}={1 << sigkill:#x}" in words
    assert lines[2].split()[:4] == ["event-expect", "none", "events", "hook=*"]
    assert not any(w.startswith(("pid@", "eq@")) for w in lines[2].split())  # any process, any hook
    assert lines[3].startswith("event-expect fail no hook sys_open in this policy (hooks: sys_mkdir, sys_mkdirat)")
    assert lines[4].startswith("event-expect fail path= is for the process sensor")
    assert resolve_script(lines[1] + "\n", m) == lines[1] + "\n"  # resolving twice changes nothing


def test_sensor_offsets_agree_with_decode_record() -> None:
    """The runner reads the sensor's records at offsets derived from PROC_EVENT; a record
    packed at those offsets must decode to the same values."""
    off = _proc_offsets()
    raw = bytearray(PROC_EVENT.size)
    struct.pack_into("<I", raw, off["type"], 1)
    struct.pack_into("<I", raw, off["pid"], 4242)
    struct.pack_into("<I", raw, off["ppid"], 7)
    struct.pack_into("<I", raw, off["exit_code"], 768)
    struct.pack_into("<I", raw, off["path_len"], 7)
    raw[off["comm"]:off["comm"] + 2] = b"sh"
    raw[off["path"]:off["path"] + 7] = b"/bin/sh"
    rec = decode_record(bytes(raw))
    assert (rec["type"], rec["pid"], rec["ppid"], rec["exit_code"], rec["comm"], rec["path"]) == \
        ("exec", 4242, 7, 768, "sh", "/bin/sh")
    manifest = {"events": {"map": "events", "layout": "tracing_process_v1"}}
    line = resolve_script("event-expect posted process_exec path=/bin/sh\n", manifest).split()
    assert f"pid@{off['pid']}" in line and f"eq@{off['type']}=1" in line and f"str@{off['path']}=/bin/sh" in line
    bad = resolve_script("event-expect posted process_exex\n", manifest)
    assert bad.startswith("event-expect fail the process sensor posts process_exec")
    assert resolve_script("event-expect posted x\n", None).startswith("event-expect fail no manifest.json")


def test_corpus_table_names_existing_files_and_resolves_for_6_12() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"no Tetragon corpus at {CORPUS}")
    table = corpus_table()
    assert len(table) >= 12
    names = [e.policy for e in table.values()]
    assert len(set(names)) == len(names), "one kernel-test run cannot hold two policies of one name"
    for name, entry in table.items():
        path = CORPUS / name
        assert path.is_file(), name
        assert [v.name for v in validate_paths([path]).policies] == [entry.policy], name
        assert any(ln.startswith("event-expect ") for ln in entry.lines), name
        assert corpus_checks(path, entry.policy, host=False)[1:] == list(entry.lines)
        assert corpus_checks(path, "another-name", host=False) == []  # same file name, other policy
        if not entry.host:
            assert not any(ln.startswith(("exec-expect", "event-expect"))
                           for ln in corpus_checks(path, entry.policy, host=True))
        script = resolve_script("\n".join(entry.lines) + "\n", _manifest(path, kernel=(6, 12)))
        assert "event-expect fail" not in script, (name, script)


def test_corpus_counts_print_the_three_numbers() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"no Tetragon corpus at {CORPUS}")
    from bpfpolicy.matrix.corpus import corpus_files, static_counts

    files = [CORPUS / n for n in ("tracingpolicy__sys_mount.yaml", "tracingpolicy__tty.yaml")]
    got = {r.file: r for r in static_counts(files, (6, 12))}
    assert got["tracingpolicy__sys_mount.yaml"].validates and got["tracingpolicy__sys_mount.yaml"].compiles
    assert got["tracingpolicy__sys_mount.yaml"].checked and got["tracingpolicy__sys_mount.yaml"].names == \
        ["TracingPolicy/syscalls"]
    assert not got["tracingpolicy__tty.yaml"].validates and "kiocb" in got["tracingpolicy__tty.yaml"].why
    proc = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "bpfpolicy.matrix.corpus", "--corpus", str(CORPUS),
                           "--no-boot"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["corpus"] == len(corpus_files(CORPUS))
    assert 0 < summary["compile_6.12"] <= summary["validate"] <= summary["corpus"]
    assert summary["checked"] == len(corpus_table()) and summary["behave_6.12"] is None


# ---- the runner on this host ---------------------------------------------------------

def _run_host(tmp_path: Path, art_dir: Path, script: str) -> dict[int, object]:
    try:
        runner = build_runner()
    except GuestError as e:
        pytest.skip(str(e))
    (art_dir / "kernel-test.txt").write_text(script)
    proc = subprocess.run([str(runner), "--netns", str(art_dir), "t"], capture_output=True, text=True, timeout=120)
    run = parse_console("host", proc.stdout, ["t"])
    return {r.line: r for r in run.results}


@pytest.mark.kernel
def test_event_expect_on_host_names_the_hook_and_can_fail(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    art, diags = compile_one(POLICIES / "sensitive-files.yaml")
    assert art is not None, diags
    d = art.write(tmp_path / "out")
    m = json.loads((d / "manifest.json").read_text())
    prog = m["programs"][0]["name"]
    script = resolve_script("\n".join([
        "event-expect posted sys_openat",                      # 1: no command ran yet
        "object prog.bpf.o",                                   # 2
        f"attach {prog} auto",                                 # 3
        "exec-expect exit=1 exec cat /etc/shadow.kt-missing",  # 4
        "event-expect posted sys_openat action=Post",          # 5
        "event-expect none sys_openat",                        # 6: wrong on purpose -> fail
        "exec-expect exit=0 exec cat /proc/version",           # 7
        "event-expect none sys_openat",                        # 8
        "event-expect posted sys_openat",                      # 9: wrong on purpose -> fail
        "exec-expect signal=9 exec cat /proc/version",         # 10: not killed -> fail
        "exec-expect exit=0 cat /etc/shadow.kt-missing; exit 0",  # 11: cat is sh's child, not its pid
        "event-expect posted sys_openat",                      # 12: the pid filter leaves it out
        "event-expect posted sys_openat any",                  # 13
    ]) + "\n", m)
    by = _run_host(tmp_path, d, script)
    assert by[1].status == "fail" and "no exec-expect before this line" in by[1].detail
    assert by[4].status == "ok"
    assert by[5].status == "ok", by[5].detail
    assert "hook=sys_openat[tp/syscalls/sys_enter_openat] 1 event(s)" in by[5].detail and "comm cat" in by[5].detail
    assert by[6].status == "fail" and "(want none)" in by[6].detail
    assert by[8].status == "ok" and " 0 event(s)" in by[8].detail
    assert by[9].status == "fail"
    assert by[10].status == "fail" and "exit=0 (want signal=9)" in by[10].detail
    assert by[12].status == "fail" and " 0 event(s)" in by[12].detail
    assert by[13].status == "ok", by[13].detail


@pytest.mark.kernel
def test_event_expect_holds_while_another_process_floods_the_hook(tmp_path: Path) -> None:
    """A busy host: another process opens matching paths in a loop while the runner checks
    that its own command posted (records of the command's pid are kept first; the rings are
    consumed while the command runs; a crowded-out event re-runs the command)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    import sys
    import time

    art, diags = compile_one(POLICIES / "sensitive-files.yaml")
    assert art is not None, diags
    d = art.write(tmp_path / "out")
    m = json.loads((d / "manifest.json").read_text())
    lines = ["object prog.bpf.o", f"attach {m['programs'][0]['name']} auto"]
    for _ in range(5):
        lines += ["exec-expect exit=1 sleep 0.3; exec cat /etc/shadow.kt-missing", "event-expect posted sys_openat"]
    # ~20-50k matching opens a second: bursts of 50, then 1 ms asleep
    flood = subprocess.Popen([sys.executable, "-c", "import os, time\nend = time.time() + 30\n"
                              "while time.time() < end:\n  for _ in range(50):\n"
                              "    try: os.open('/etc/shadow.kt-flood', 0)\n    except OSError: pass\n"
                              "  time.sleep(0.001)\n"])
    try:
        time.sleep(0.3)  # the flood is running before the runner attaches
        by = _run_host(tmp_path, d, resolve_script("\n".join(lines) + "\n", m))
    finally:
        flood.kill()
        flood.wait()
    checks = [by[n] for n in range(4, 13, 2)]
    failed = [r.detail for r in checks if r.status != "ok"]
    assert not failed, "\n".join(failed)
    foreign = [int(r.detail.split(" record(s) in events")[0].rsplit(" ", 1)[1]) for r in checks]
    assert max(foreign) > 1, [r.detail for r in checks]  # the flood's records were there too


@pytest.mark.kernel
def test_cli_runs_policies_and_sensor_with_behaviour_on_host(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from click.testing import CliRunner

    from bpfpolicy.cli.kernel_test import command

    res = CliRunner().invoke(command, ["--kernels", "host", "--format", "json", "--out", str(tmp_path),
                                       str(POLICIES)])
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert res.exit_code == 0, res.output
    table = data["table"]
    for name, checks in (("TracingPolicy/forbidden-mkdir", 4), ("TracingPolicy/sensitive-files", 6),
                         ("TracingPolicy/bpfpolicy-process-sensor", 5)):
        cell = table[name]["host"]
        assert cell["behaviour"] == {"ok": checks, "fail": 0, "skip": 0}, (name, cell)
    sensor = [r for r in data["kernels"][0]["results"]
              if r["artifact"] == "TracingPolicy/bpfpolicy-process-sensor" and r["step"] == "event-expect"]
    assert any("sensor=process_exec" in r["detail"] and "path /bin/sh" in r["detail"] for r in sensor), sensor


# ---- a Debian guest (kprobe / LSM backends) --------------------------------------------

@pytest.mark.vm
@pytest.mark.kernel
def test_policies_corpus_and_sensor_behave_in_6_12_guest(tmp_path: Path) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    if not CORPUS.is_dir():
        pytest.skip(f"no Tetragon corpus at {CORPUS}")
    from click.testing import CliRunner

    from bpfpolicy.cli.kernel_test import command

    res = CliRunner().invoke(command, ["--kernels", "6.12", "--format", "json", "--out", str(tmp_path),
                                       str(POLICIES), *[str(CORPUS / n) for n in GUEST_CORPUS]])
    if "kernel unavailable" in res.output:
        pytest.skip("Debian 6.12 kernel not cached and not downloadable")
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert res.exit_code == 0, res.output[-4000:]
    results = data["kernels"][0]["results"]

    def details(artifact: str) -> list[str]:
        return [r["detail"] for r in results if r["artifact"] == artifact and r["step"] == "event-expect"]

    for name in ("TracingPolicy/forbidden-mkdir", "TracingPolicy/sensitive-files", "TracingPolicy/syscalls",
                 "TracingPolicy/security-override", "TracingPolicy/lsm-file-open",
                 "TracingPolicy/process-creds-changed", "TracingPolicy/bpfpolicy-process-sensor"):
        cell = data["table"][name]["6.12"]
        assert cell["behaviour"]["ok"] >= 2 and cell["behaviour"]["fail"] == 0 and cell["attach"]["fail"] == 0, \
            (name, cell)
    # the backend each kernel gets is named: kprobe for sys_* and security_*, LSM for lsmhooks
    assert any("hook=sys_openat[kprobe/__x64_sys_openat] 1 event(s)" in d for d in details("TracingPolicy/sensitive-files"))
    assert any("kprobe/__x64_sys_mkdir" in d and "actions" in d for d in details("TracingPolicy/forbidden-mkdir"))
    assert any("hook=file_open[lsm/file_open] 1 event(s)" in d for d in details("TracingPolicy/lsm-file-open"))
    override = [r for r in results if r["artifact"] == "TracingPolicy/security-override" and r["step"] == "exec-expect"]
    assert [r["status"] for r in override] == ["ok", "ok"]  # mkdir got EPERM; the directory is not there
    sensor = details("TracingPolicy/bpfpolicy-process-sensor")
    assert any("sensor=process_exec" in d and "path /bin/sh" in d for d in sensor), sensor
    assert any("sensor=process_exit" in d and "exit_code 768" in d for d in sensor), sensor
