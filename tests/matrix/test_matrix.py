"""Kernel matrix: fixture BPF programs and a seccomp filter, booted on Debian's 6.12
kernel under QEMU (the CI smoke) and run on the host kernel with the same runner.

The fixtures are hand-written and independent of the policy kinds, so this checks the
matrix machinery itself: XDP verdicts via BPF_PROG_TEST_RUN, a BPF LSM hook that really
denies an open in the guest, seccomp verdicts in forked children, and a verifier
rejection attributed to the artifact with the verifier's own words.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bpfpolicy.matrix import discover, run_matrix
from bpfpolicy.matrix.guest import GuestError, build_runner
from bpfpolicy.matrix.results import parse_console

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import kt_fixtures as fixture_build  # noqa: E402  (tests/matrix/fixtures/kt_fixtures.py)

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]
SMOKE_KERNEL = "6.12"
# The CI smoke boots 6.12 only; `make kernel-matrix` sets this to all four Debian kernels.
GUESTS = [k for k in os.environ.get("BPFPOLICY_KERNEL_TEST_KERNELS", SMOKE_KERNEL).split(",") if k]



def build_fixtures(dest: Path) -> Path:
    try:
        return fixture_build.build(dest)
    except fixture_build.FixtureError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def fixture_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixtures(tmp_path_factory.mktemp("kt-fixtures"))


@pytest.fixture(scope="module")
def smoke(fixture_artifacts: Path, tmp_path_factory: pytest.TempPathFactory):
    """One run: the guest kernel(s) and the host, concurrently."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    if os.geteuid() != 0:
        pytest.skip("the host member needs root")
    arts, _ = discover(fixture_artifacts)
    try:
        report = run_matrix([*GUESTS, "host"], lambda _v: arts, tmp_path_factory.mktemp("kt-out"))
    except GuestError as e:
        pytest.skip(str(e))
    for kernel in GUESTS:
        err = report.run(kernel).error
        if err and err.startswith("kernel unavailable"):
            pytest.skip(f"Debian {kernel} kernel not cached and not downloadable: {err}")
        console = report.out_dir / f"console-{kernel}.log"
        assert err is None, f"{kernel}: guest run failed: {err}\n" + console.read_text()[-3000:]
    return report


def _step(report, kernel: str, artifact: str, line: int):
    hits = [r for r in report.results_for(kernel, artifact) if r.line == line]
    assert hits, f"no result for {artifact}:{line} on {kernel}: {report.results_for(kernel, artifact)}"
    return hits[0]


@pytest.mark.vm
@pytest.mark.parametrize("kernel", [*GUESTS, "host"])
def test_xdp_verdicts_follow_the_map(smoke, kernel: str) -> None:
    art = "Fixture/xdp_udp9"
    assert _step(smoke, kernel, art, 2).status == "ok"  # object loads
    before, fill, drop, other = (_step(smoke, kernel, art, n) for n in (4, 5, 7, 9))
    assert (before.status, before.detail) == ("ok", "xdp_udp_block: retval=2")  # empty map: PASS
    assert fill.status == "ok"
    assert (drop.status, drop.detail) == ("ok", "xdp_udp_block: retval=1")  # UDP/9: XDP_DROP
    assert (other.status, other.detail) == ("ok", "xdp_udp_block: retval=2")  # UDP/53: XDP_PASS
    attach = _step(smoke, kernel, art, 10)
    assert attach.status == "ok" and "xdp link on lo" in attach.detail


@pytest.mark.vm
@pytest.mark.parametrize("kernel", [*GUESTS, "host"])
def test_live_packets_follow_the_verdicts(smoke, kernel: str) -> None:
    """The prog-run vectors as real frames over a veth pair: XDP drops UDP/9 and lets
    UDP/53 through; tc (both directions) and cgroup_skb egress deliver what they allow."""
    art = "Fixture/xdp_udp9"
    dropped, passed = _step(smoke, kernel, art, 13), _step(smoke, kernel, art, 14)
    assert (dropped.status, passed.status) == ("ok", "ok"), (dropped, passed)
    assert "on xdp: sent 1, delivered 0 (want dropped)" in dropped.detail
    assert "on xdp: sent 1, delivered 1 (want delivered)" in passed.detail
    tc_in, tc_out, cg_out = (_step(smoke, kernel, "Fixture/attach_kinds", n) for n in (15, 16, 17))
    assert all(r.status == "ok" for r in (tc_in, tc_out, cg_out)), (tc_in, tc_out, cg_out)
    assert "ingress on tc" in tc_in.detail or "ingress on clsact" in tc_in.detail
    assert "egress on" in tc_out.detail and "delivered 1" in tc_out.detail
    assert "egress on cgroup kt-live: sent 1, delivered 1" in cg_out.detail


@pytest.mark.vm
@pytest.mark.parametrize("kernel", GUESTS)
def test_lsm_hook_attaches_and_denies_in_guest(smoke, kernel: str) -> None:
    art = "Fixture/lsm_file_open"
    assert "bpf" in smoke.run(kernel).lsm.split(",")
    assert _step(smoke, kernel, art, 2).status == "ok"
    assert _step(smoke, kernel, art, 4).status == "ok"  # attach
    denied = _step(smoke, kernel, art, 5)
    assert denied.status == "ok" and "exit=1" in denied.detail  # cat of the named file: EPERM
    assert _step(smoke, kernel, art, 6).status == "ok"  # other files still open


@pytest.mark.vm
def test_lsm_hook_is_refused_on_host(smoke) -> None:
    art = "Fixture/lsm_file_open"

    host_all = smoke.results_for("host", art)
    if any(r.step == "attach" and r.status == "ok" for r in host_all):
        pytest.skip("this host loads and attaches BPF LSM programs, so it does not refuse the hook")
    host = [r for r in smoke.results_for("host", art) if r.step in ("object", "attach")]
    refused = [r for r in host if r.status == "skip" and "kernel lacks feature" in r.detail]
    assert refused, f"host did not report the LSM refusal: {host}"
    assert "lsm" in refused[0].detail.lower()
    assert not any(r.status == "ok" for r in smoke.results_for("host", art) if r.step == "attach")
    assert _step(smoke, "host", art, 5).status == "skip"  # behaviour not claimed without attach


@pytest.mark.vm
@pytest.mark.parametrize("kernel", [*GUESTS, "host"])
def test_seccomp_filter_verdicts(smoke, kernel: str) -> None:
    art = "Fixture/seccomp_getppid"
    assert _step(smoke, kernel, art, 3).status == "ok"
    getppid = _step(smoke, kernel, art, 4)
    assert getppid.status == "ok" and "got errno=1" in getppid.detail
    getpid = _step(smoke, kernel, art, 5)
    assert getpid.status == "ok" and "got ret=" in getpid.detail
    reboot = _step(smoke, kernel, art, 6)
    assert reboot.status == "ok" and "got signal=31" in reboot.detail


@pytest.mark.vm
@pytest.mark.parametrize("kernel", [*GUESTS, "host"])
def test_broken_program_fails_with_verifier_message(smoke, kernel: str) -> None:
    art = "Fixture/broken_xdp"
    load = _step(smoke, kernel, art, 2)
    assert load.status == "fail"
    assert load.artifact == art and "prog xdp_unchecked" in load.detail
    assert "invalid access to packet" in load.detail
    assert load.log_file and "invalid access to packet" in Path(load.log_file).read_text()
    assert _step(smoke, kernel, art, 3).status == "skip"  # later steps: not run, not crashed
    assert not smoke.ok  # the matrix as a whole fails
    assert {f.artifact for f in smoke.failures} == {art}  # and nothing else failed


@pytest.mark.vm
@pytest.mark.parametrize("kernel", GUESTS)
def test_attach_mechanisms_in_guest(smoke, kernel: str) -> None:
    art = "Fixture/attach_kinds"
    guest = {r.line: r for r in smoke.results_for(kernel, art)}
    assert all(r.status == "ok" for r in guest.values()), list(guest.values())
    major, minor = (int(x) for x in smoke.run(kernel).release.split("-")[0].split(".")[:2])
    tc = "tcx ingress on lo" if (major, minor) >= (6, 6) else "clsact ingress on lo"
    assert tc in guest[7].detail  # tcx from 6.6, clsact (sch_ingress + cls_bpf modules) before
    assert "cgroup link" in guest[9].detail
    assert guest[11].detail.startswith("kprobe_file_open: kprobe/security_file_open")
    assert guest[12].detail.startswith("fentry_file_open: fentry/security_file_open")


@pytest.mark.vm
def test_attach_gaps_on_host_are_stated(smoke) -> None:
    art = "Fixture/attach_kinds"
    host = {r.line: r for r in smoke.results_for("host", art)}
    assert not [r for r in host.values() if r.status == "fail"], list(host.values())
    for line in (11, 12):  # kprobe / fentry: ok where the host has them, else a stated gap
        assert host[line].status == "ok" or "kernel lacks feature" in host[line].detail


@pytest.mark.vm
def test_results_json_written(smoke) -> None:
    data = json.loads((smoke.out_dir / "results.json").read_text())
    assert data["ok"] is False
    assert data["table"]["Fixture/xdp_udp9"][GUESTS[0]]["behaviour"] == {"ok": 3, "fail": 0, "skip": 0}
    assert data["table"]["Fixture/xdp_udp9"][GUESTS[0]]["live"] == {"ok": 2, "fail": 0, "skip": 0}
    assert {k["name"] for k in data["kernels"]} == {*GUESTS, "host"}
    for kernel in GUESTS:  # Debian kernels booted with lsm=...,bpf lack nothing the fixtures use
        assert data["gaps"][kernel] == [], data["gaps"][kernel]


# ---- no VM: the host member through the CLI, the runner's robustness, the parser ----

@pytest.mark.kernel
def test_cli_host_only_exit_code_and_json(fixture_artifacts: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from click.testing import CliRunner

    from bpfpolicy.cli.kernel_test import command

    ok_only = tmp_path / "ok"
    shutil.copytree(fixture_artifacts / "Fixture" / "xdp_udp9", ok_only / "xdp_udp9")
    res = CliRunner().invoke(command, ["--kernels", "host", "--format", "json", "--out", str(tmp_path / "o1"),
                                       str(ok_only)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"] is True
    res = CliRunner().invoke(command, ["--kernels", "host", "--out", str(tmp_path / "o2"), str(fixture_artifacts)])
    assert res.exit_code == 1
    assert "invalid access to packet" in res.output


def test_runner_reports_unknown_directives_without_crashing(tmp_path: Path) -> None:
    try:
        runner = build_runner()
    except GuestError as e:
        pytest.skip(str(e))
    (tmp_path / "kernel-test.txt").write_text(
        "# comment\nfrobnicate now\nprog-run nothing 2 00\nsyscall 39 errno=1\nmap-update m zz 00\n")
    proc = subprocess.run([str(runner), str(tmp_path), "t"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    run = parse_console("host", proc.stdout, ["t"])
    by_line = {r.line: r for r in run.results}
    assert by_line[2].status == "fail" and "unknown directive frobnicate" in by_line[2].detail
    assert by_line[3].status == "skip" and "no `object` line" in by_line[3].detail
    assert by_line[4].status == "skip" and "no `seccomp` line" in by_line[4].detail
    assert by_line[5].status == "skip"


def test_parser_turns_missing_artifacts_into_failures() -> None:
    console = ("SeaBIOS\r\nKT-KERNEL 6.1.0-1-amd64\r\nKT-LSM lockdown,capability,yama,bpf\r\n"
               "BEGIN a/x\r\nRESULT a/x 2 object fail x.o: load failed\r\n"
               "VERIFIER-LOG-BEGIN a/x 2 prog\r\n0: (b7) r0 = 0\r\nR0 !read_ok\r\n"
               "VERIFIER-LOG-END a/x 2\r\nEND a/x\r\nBEGIN a/y\r\nSTEP a/y 1\r\nSTEP a/y 3\r\n"
               "BEGIN a/t\r\nSTEP a/t 2\r\nRESULT a/t 0 runner fail timed out after 90 s\r\n")
    run = parse_console("6.1", console, ["a/x", "a/y", "a/z", "a/t"])
    assert run.release == "6.1.0-1-amd64" and run.lsm == "lockdown,capability,yama,bpf"
    by = {(r.artifact, r.line): r for r in run.results}
    assert by[("a/x", 2)].log == "0: (b7) r0 = 0\nR0 !read_ok\n"
    assert by[("a/y", 3)].status == "fail" and "stopped mid-script at line 3" in by[("a/y", 3)].detail
    assert by[("a/t", 0)].detail == "timed out after 90 s at line 2"
    assert by[("a/z", 0)].status == "fail" and "never ran" in by[("a/z", 0)].detail


def test_vagrantfile_validates(tmp_path: Path) -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (apt-get install vagrant to check the Vagrantfile)")
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant.d"), VAGRANT_CHECKPOINT_DISABLE="1")
    proc = subprocess.run(["vagrant", "validate"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.kernel
def test_cli_compiles_policy_paths_per_kernel(tmp_path: Path) -> None:
    """A policy path (not an artifact dir) is compiled through bpfpolicy.policy.compile and run."""
    policy = ROOT / "policies" / "seccomp"
    if not policy.is_dir() or not any(policy.glob("*.y*ml")):
        pytest.skip("no example seccomp policy in policies/seccomp")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from click.testing import CliRunner

    from bpfpolicy.cli.kernel_test import command

    res = CliRunner().invoke(command, ["--kernels", "host", "--format", "json", "--out", str(tmp_path), str(policy)])
    data = json.loads(res.output[res.output.index("{"):])
    seccomp = [a for a in data["artifacts"] if a.startswith("SeccompProfile/")]
    assert seccomp, data["artifacts"]
    cell = data["table"][seccomp[0]]["host"]
    assert cell["load"]["ok"] == 1 and cell["behaviour"]["ok"] > 0 and cell["behaviour"]["fail"] == 0
    assert (tmp_path / "artifacts" / "host").is_dir()  # compiled for the host target
    assert res.exit_code == 0, res.output
