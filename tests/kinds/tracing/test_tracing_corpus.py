"""Every Tetragon example in ../shared/corpus/tetragon validates without a crash: accepted,
or rejected with precise `file:line:col` reasons. The table is the per-file verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfpolicy.kinds import CompileContext
from bpfpolicy.policy.compile import compile_policy
from bpfpolicy.policy.validate import validate_paths

ACCEPT = "accept"
UNDECODED = "recognised but not decoded"

# file -> ACCEPT, or (error paths, a phrase every one of them must contain or None)
VERDICTS: dict[str, object] = {
    "cves__cve-2023-2640-overlayfs-ubuntu.yaml": ACCEPT,
    "cves__cve-2024-3094-xz-ssh.yaml": ACCEPT,
    "host-changes__monitor-kernel-modules.yaml": ACCEPT,
    "host-changes__monitor-signed-kernel-modules.yaml": (
        {"spec.kprobes[2].args[1].type"}, '"load_info" is ' + UNDECODED),
    "process-credentials__creds-capability-usage.yaml": ACCEPT,
    "process-credentials__process-creds-changed.yaml": ACCEPT,
    "process-credentials__process.credentials.changes.at.syscalls.yaml": ACCEPT,
    "sandbox-linux-namespaces__kill_unprivileged_user_namespace_in_pid_namespace.yaml": ACCEPT,
    "tracingpolicy__datagram-with-selectors.yaml": ACCEPT,
    "tracingpolicy__datagram-with-sock-tracking.yaml": (
        {"spec.kprobes[0].returnArg.type", "spec.kprobes[0].returnArgAction",
         "spec.kprobes[1].selectors[0].matchActions[0].action"}, "socket tracking"),
    "tracingpolicy__datagram_518.yaml": (
        {"spec.kprobes[0].returnArg.type", "spec.kprobes[0].returnArgAction",
         "spec.kprobes[1].selectors[1].matchActions[0].action"}, "socket tracking"),
    "tracingpolicy__dev_hard_start_xmit.yaml": ACCEPT,
    "tracingpolicy__fd_install_cap_changes.yaml": (
        {"spec.kprobes[0].selectors[0].matchCapabilityChanges"}, "matchCapabilityChanges"),
    "tracingpolicy__fd_install_caps.yaml": ACCEPT,
    "tracingpolicy__fd_install_ns.yaml": ACCEPT,
    "tracingpolicy__fd_install_ns_host.yaml": ACCEPT,
    "tracingpolicy__filename_monitoring_filtered.yaml": ACCEPT,
    "tracingpolicy__killer.yaml": (
        {"spec.lists[0].values[2]", "spec.enforcers", "spec.tracepoints[0].selectors[0].matchActions[0].action"},
        None),
    "tracingpolicy__list-syscalls-generated.yaml": ACCEPT,  # every syscall, filled at compile
    "tracingpolicy__list-syscalls-tracepoint.yaml": ACCEPT,
    "tracingpolicy__lsm_file_open.yaml": ACCEPT,
    "tracingpolicy__lsm_track_grandparent.yaml": ACCEPT,
    "tracingpolicy__open_dnsrequest.yaml": (
        {"spec.kprobes[0].selectors[0].matchActions[0].action"}, "DnsLookup"),
    "tracingpolicy__override-security.yaml": ACCEPT,
    "tracingpolicy__raw_syscalls.yaml": ACCEPT,
    "tracingpolicy__rawtp.yaml": ACCEPT,
    "tracingpolicy__security-socket-connect-block-others.yaml": ACCEPT,
    "tracingpolicy__security-socket-connect.yaml": ACCEPT,
    "tracingpolicy__security_bprm_check.yaml": ACCEPT,  # warning: returnArg without return
    "tracingpolicy__security_inode_follow_link.yaml": ACCEPT,
    "tracingpolicy__stack_traces.yaml": ACCEPT,
    "tracingpolicy__symlink-observe.yaml": ACCEPT,
    "tracingpolicy__sys_mount.yaml": ACCEPT,
    "tracingpolicy__sys_pivot_root.yaml": ACCEPT,
    "tracingpolicy__tcp-connect-only-local-addrs.yaml": ACCEPT,
    "tracingpolicy__tcp-connect-only-private-addrs.yaml": ACCEPT,
    "tracingpolicy__tcp-connect-with-selectors.yaml": ACCEPT,
    "tracingpolicy__tcp-listen.yaml": (
        {"spec.kprobes[0].returnArg.type", "spec.kprobes[0].returnArgAction",
         "spec.kprobes[1].selectors[0].matchActions[0].action"}, "socket tracking"),
    "tracingpolicy__tty.yaml": (
        {"spec.kprobes[0].args[0].type", "spec.kprobes[0].args[1].maxData", "spec.kprobes[0].args[1].type"}, None),
    "tracingpolicy__uprobe-binaries.yaml": ACCEPT,  # warning when /lib64/libc.so.6 is absent
    "tracingpolicy__usdt-set.yaml": ({"spec.usdts[0].selectors[0].matchActions[0].action"}, "Set action"),
    "tracingpolicy__write.yaml": ACCEPT,
}
ACCEPTED = sorted(f for f, v in VERDICTS.items() if v == ACCEPT)
# Examples hooking functions that 6.12 (or, without the matrix's cached 6.12 image, this
# host's kernel) no longer has: kfree_skb_reason (now sk_skb_reason_drop), override_creds.
MAY_LACK_FUNCTIONS = {"tracingpolicy__stack_traces.yaml", "process-credentials__process-creds-changed.yaml",
                      "host-changes__monitor-kernel-modules.yaml"}


def _tetragon(corpus: Path) -> Path:
    d = corpus / "tetragon"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d


def test_table_covers_every_corpus_file(corpus: Path) -> None:
    assert sorted(p.name for p in _tetragon(corpus).glob("*.yaml")) == sorted(VERDICTS)


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_corpus_verdict(corpus: Path, name: str) -> None:
    path = _tetragon(corpus) / name
    result = validate_paths([path])
    text = "\n".join(map(str, result.diagnostics))
    assert "internal error" not in text and "unknown field" not in text, text
    errors = [d for d in result.diagnostics if d.severity == "error"]
    for d in result.diagnostics:  # every diagnostic is located in this file
        assert d.file == str(path) and d.line >= 1 and d.col >= 1, d
    verdict = VERDICTS[name]
    if verdict == ACCEPT:
        assert result.ok and len(result.policies) == 1, text
        return
    paths, phrase = verdict  # type: ignore[misc]
    assert errors, f"{name} should be rejected"
    if paths is not None:
        assert {d.path for d in errors} == paths, text
    for d in errors:  # everything rejected is a feature bpfpolicy names, not a user mistake
        assert "(use --lenient" in d.message, d
    if phrase:
        assert any(phrase in d.message for d in errors), text


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_corpus_lenient_never_fails_on_unsupported(corpus: Path, name: str) -> None:
    """--lenient turns every "unsupported" into a warning; only real mistakes remain."""
    path = _tetragon(corpus) / name
    result = validate_paths([path], lenient=True)
    remaining = {d.message for d in result.diagnostics if d.severity == "error"}
    assert result.ok, remaining
    if VERDICTS[name] != ACCEPT:
        assert any("--lenient" in d.message for d in result.diagnostics)


@pytest.mark.usefixtures("clang_required")
@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_corpus_compiles_for_debian_612(corpus: Path, name: str) -> None:
    """clang builds every accepted policy for the 6.12 feature table (kprobes, BPF LSM,
    trampolines): the matrix then loads these objects in a 6.12 guest."""
    result = validate_paths([_tetragon(corpus) / name])
    (policy,) = result.policies
    art, diags = compile_policy(policy, CompileContext(kernel=(6, 12)))
    if art is None:  # a function the example hooks may not exist in that kernel's BTF
        assert diags and all("lacks function" in d.message for d in diags), "\n".join(map(str, diags))
        assert name in MAY_LACK_FUNCTIONS, "\n".join(map(str, diags))
        return
    assert art.files["prog.bpf.o"][:4] == b"\x7fELF"
    assert "object prog.bpf.o" in art.files["kernel-test.txt"].decode()
    assert art.manifest["programs"] and art.manifest["events"]["map"] == "events"
