"""Bad TracingPolicies: every mistake is reported at its own `file:line:col`, with a
did-you-mean where a name is close to a real one."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.tracing import compile_one, errors, features, validate, write


def located(path: Path, needle: str, nth: int = 1) -> tuple[int, int]:
    """(line, col) of the nth occurrence of `needle` in the file."""
    seen = 0
    for i, line in enumerate(path.read_text().splitlines(), 1):
        col = line.find(needle)
        if col >= 0:
            seen += 1
            if seen == nth:
                return i, col + 1
    raise AssertionError(f"{needle!r} not in {path}")


def one_error(path: Path, lenient: bool = False):
    errs = errors(validate(path, lenient=lenient))
    assert len(errs) == 1, "\n".join(map(str, errs))
    return errs[0]


OPENAT = """\
kprobes:
- call: sys_openat
  syscall: true
  args:
  - index: 1
    type: string
  selectors:
{selectors}
"""


def selectors(body: str) -> str:
    return OPENAT.format(selectors="\n".join("  " + line for line in body.strip("\n").splitlines()))


def test_bad_operator_case_has_did_you_mean(tmp_path: Path) -> None:
    p = write(tmp_path, selectors("""
- matchArgs:
  - index: 1
    operator: equal
    values: ["/etc/passwd"]
"""))
    d = one_error(p)
    assert (d.line, d.col) == located(p, "operator: equal")
    assert d.path == "spec.kprobes[0].selectors[0].matchArgs[0].operator"
    assert d.message == 'unknown operator "equal" (did you mean "Equal"?)'


def test_docs_spelling_of_operator_points_to_code_spelling(tmp_path: Path) -> None:
    p = write(tmp_path, selectors("""
- matchArgs:
  - index: 1
    operator: SubStringIgnoreCase
    values: ["passwd"]
"""))
    d = one_error(p)
    assert d.message == 'unknown operator "SubStringIgnoreCase" (did you mean "SubStringIgnCase"?)'
    assert (d.line, d.col) == located(p, "operator: SubStringIgnoreCase")


def test_six_selectors(tmp_path: Path) -> None:
    p = write(tmp_path, selectors("\n".join(f"- matchPIDs: [{{operator: In, values: [{i}]}}]" for i in range(1, 7))))
    d = one_error(p)
    assert d.path == "spec.kprobes[0].selectors[5]"
    assert d.line == located(p, "matchPIDs", 6)[0]
    assert "at most 5 selectors per hook (has 6)" in d.message


def test_four_actions(tmp_path: Path) -> None:
    p = write(tmp_path, selectors("""
- matchActions:
  - action: Post
  - action: Sigkill
  - action: NoPost
  - action: Signal
    argSig: 10
"""))
    d = one_error(p)
    assert d.path == "spec.kprobes[0].selectors[0].matchActions[3]"
    assert d.line == located(p, "action: Signal")[0]
    assert "at most 3 actions per selector (has 4)" in d.message


def test_override_on_plain_kernel_function(tmp_path: Path) -> None:
    p = write(tmp_path, """\
kprobes:
- call: fd_install
  syscall: false
  args: [{index: 0, type: int}]
  selectors:
  - matchActions:
    - action: Override
      argError: -1
""")
    d = one_error(p)
    assert (d.line, d.col) == located(p, "action: Override")
    assert d.message.startswith("override action can be used only with syscalls and security_ hooks")


def test_unknown_arg_type_did_you_mean(tmp_path: Path) -> None:
    p = write(tmp_path, """\
kprobes:
- call: sys_openat
  args:
  - index: 1
    type: strng
""")
    d = one_error(p)
    assert (d.line, d.col) == located(p, "type: strng")
    assert d.message == 'unknown argument type "strng" (did you mean "string"?)'


def test_two_hook_sections(tmp_path: Path) -> None:
    p = write(tmp_path, """\
kprobes:
- call: sys_openat
tracepoints:
- subsystem: syscalls
  event: sys_enter_openat
""")
    d = one_error(p)
    assert d.path == "spec.tracepoints" and (d.line, d.col) == located(p, "tracepoints:")
    assert "multiple sections of kprobes, tracepoints" in d.message


def test_return_needs_return_arg(tmp_path: Path) -> None:
    p = write(tmp_path, """\
kprobes:
- call: security_file_open
  syscall: false
  return: true
""")
    d = one_error(p)
    assert (d.line, d.col) == located(p, "return: true")
    assert "return: true needs returnArg" in d.message


def test_kprobe_rejects_auto_and_index_out_of_range(tmp_path: Path) -> None:
    p = write(tmp_path, """\
kprobes:
- call: security_file_open
  syscall: false
  args:
  - index: 0
    type: auto
  - index: 5
    type: int
""")
    errs = errors(validate(p))
    by_path = {d.path: d for d in errs}
    assert set(by_path) == {"spec.kprobes[0].args[0].type", "spec.kprobes[0].args[1].index"}
    assert "only valid for tracepoints" in by_path["spec.kprobes[0].args[0].type"].message
    assert by_path["spec.kprobes[0].args[1].index"].line == located(p, "index: 5")[0]


def test_lsm_hook_disallows_getu_url_and_prefix_security(tmp_path: Path) -> None:
    p = write(tmp_path, """\
lsmhooks:
- hook: security_file_open
- hook: file_open
  selectors:
  - matchActions:
    - action: GetUrl
      argUrl: http://example.com
""")
    errs = {d.path: d for d in errors(validate(p))}
    assert errs["spec.lsmhooks[0].hook"].message.endswith('(did you mean "file_open"?)')
    assert "not available on lsmhooks" in errs["spec.lsmhooks[1].selectors[0].matchActions[0].action"].message


def test_integer_operator_value_limit_and_bad_integer(tmp_path: Path) -> None:
    p = write(tmp_path, """\
kprobes:
- call: sys_openat
  args: [{index: 2, type: int}]
  selectors:
  - matchArgs:
    - index: 2
      operator: Equal
      values: ["1", "2", "3", "4", "0x10"]
  - matchArgs:
    - index: 2
      operator: Mask
      values: ["two"]
""")
    errs = {d.path: d for d in errors(validate(p))}
    assert "at most 4 values per integer operator (has 5)" in errs["spec.kprobes[0].selectors[0].matchArgs[0].values[4]"].message
    assert errs["spec.kprobes[0].selectors[1].matchArgs[0].values[0]"].message == '"two" is not an integer (decimal or 0x hex)'


def test_match_args_index_must_be_captured(tmp_path: Path) -> None:
    p = write(tmp_path, selectors("""
- matchArgs:
  - index: 2
    operator: Equal
    values: ["1"]
"""))
    d = one_error(p)
    assert (d.line, d.col) == located(p, "index: 2")
    assert "matchArgs index 2 is not a captured argument (args indexes: 1)" in d.message


def test_action_typo_and_removed_action(tmp_path: Path) -> None:
    p = write(tmp_path, selectors("""
- matchActions:
  - action: sigkill
- matchActions:
  - action: FollowFD
"""))
    errs = {d.path: d.message for d in errors(validate(p))}
    assert errs["spec.kprobes[0].selectors[0].matchActions[0].action"] == 'unknown action "sigkill" (did you mean "Sigkill"?)'
    # FollowFD is accepted with a warning (decode-time fd resolution): test_tracing_features_next.py
    assert "spec.kprobes[0].selectors[1].matchActions[0].action" not in errs


def test_match_binaries_at_most_one_and_pids_at_most_four(tmp_path: Path) -> None:
    p = write(tmp_path, selectors("""
- matchBinaries:
  - {operator: In, values: [/usr/bin/cat]}
  - {operator: In, values: [/usr/bin/less]}
  matchPIDs:
  - {operator: NotIn, values: [1, 2, 3, 4, 5]}
"""))
    errs = {d.path: d.message for d in errors(validate(p))}
    assert "at most 1 matchBinaries entry" in errs["spec.kprobes[0].selectors[0].matchBinaries[1]"]
    assert "at most 4 matchPIDs values (has 5)" in errs["spec.kprobes[0].selectors[0].matchPIDs[0].values[4]"]


def test_unknown_field_gets_did_you_mean(tmp_path: Path) -> None:
    p = write(tmp_path, """\
kprobe:
- call: sys_openat
""")
    errs = errors(validate(p))
    assert any(d.message == 'unknown field "kprobe" (did you mean "kprobes"?)'
               and (d.line, d.col) == located(p, "kprobe:") for d in errs), errs


def test_getu_url_is_unsupported_on_a_host_and_dropped_with_lenient(tmp_path: Path) -> None:
    p = write(tmp_path, selectors("""
- matchActions:
  - action: GetUrl
    argUrl: http://example.com/hit
"""))
    d = one_error(p)
    assert "single host" in d.message and "--lenient" in d.message
    result = validate(p, lenient=True)
    assert result.ok
    assert any(w.severity == "warning" and "dropped spec.kprobes[0].selectors[0].matchActions[0]" in w.message
               for w in result.diagnostics)


def test_tracepoint_that_does_not_exist(tmp_path: Path) -> None:
    import os

    if not os.access("/sys/kernel/tracing/events/syscalls", os.R_OK | os.X_OK):
        pytest.skip("tracefs not readable here: the tracepoint existence check is skipped (needs root)")
    p = write(tmp_path, """\
tracepoints:
- subsystem: syscalls
  event: sys_enter_opnat
""")
    d = one_error(p)
    assert (d.line, d.col) == located(p, "event: sys_enter_opnat")
    assert d.message == 'no tracepoint "syscalls/sys_enter_opnat" on this host (did you mean "sys_enter_openat"?)'


@pytest.mark.usefixtures("clang_required")
def test_syscall_override_without_kprobes_names_missing_feature(tmp_path: Path) -> None:
    """The host's situation: no kprobes, no trampolines → no way to override a syscall."""
    p = write(tmp_path, selectors("""
- matchArgs:
  - {index: 1, operator: Prefix, values: [/etc/shadow]}
  matchActions:
  - action: Override
    argError: -1
"""))
    art, diags = compile_one(p, options={"features": features(btf=True, syscall_tracepoints=True, send_signal=True)})
    assert art is None and len(diags) == 1
    d = diags[0]
    assert (d.line, d.col) == located(p, "action: Override")
    assert "CONFIG_BPF_KPROBE_OVERRIDE" in d.message and "lsmhooks: hook file_open" in d.message


@pytest.mark.usefixtures("clang_required")
def test_lsm_hook_on_kernel_without_bpf_lsm(tmp_path: Path) -> None:
    p = write(tmp_path, """\
lsmhooks:
- hook: file_open
  args: [{index: 0, type: file}]
""")
    art, diags = compile_one(p, options={"features": features(btf=True, kprobes=True)})
    assert art is None
    assert diags[0].path == "spec.lsmhooks[0]" and "needs BPF LSM" in diags[0].message
    assert diags[0].line == located(p, "- hook: file_open")[0]


def test_matching_a_nop_argument(tmp_path: Path) -> None:
    p = write(tmp_path, """\
kprobes:
- call: security_file_open
  syscall: false
  args: [{index: 0, type: nop}]
  selectors:
  - matchArgs: [{index: 0, operator: Equal, values: ["1"]}]
""")
    d = one_error(p)
    assert d.path == "spec.kprobes[0].selectors[0].matchArgs[0].index"
    assert "type nop (not captured)" in d.message


def test_lenient_drops_whole_tracepoint_when_an_arg_is_undecodable(tmp_path: Path) -> None:
    """matchArgs on tracepoints count positions in args: dropping one arg would shift the
    others, so the hook goes instead."""
    p = write(tmp_path, """\
tracepoints:
- subsystem: syscalls
  event: sys_enter_openat
  args:
  - {index: 5, type: kiocb}
  - {index: 6, type: string}
  selectors:
  - matchArgs: [{index: 1, operator: Prefix, values: [/etc/]}]
""")
    result = validate(p, lenient=True)
    assert result.ok
    assert any("dropped spec.tracepoints[0] (--lenient)" in d.message for d in result.diagnostics)


def test_list_reference_and_values(tmp_path: Path) -> None:
    p = write(tmp_path, """\
lists:
- {name: dups, type: syscalls, values: [sys_dup, sys_dupp]}
- {name: all, type: generated_syscal}
kprobes:
- call: list:dupz
""")
    errs = {d.path: d.message for d in errors(validate(p))}
    assert errs["spec.lists[0].values[1]"] == '"sys_dupp" is not a x86_64 syscall (did you mean "dup"?)'
    assert errs["spec.lists[1].type"].startswith('unknown list type "generated_syscal" (did you mean "generated_syscalls"?)')
    assert errs["spec.kprobes[0].call"].startswith('unknown list "dupz" (did you mean "dups"?)')


def test_kubernetes_scoping_is_unsupported_on_a_host(tmp_path: Path) -> None:
    p = write(tmp_path, """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicyNamespaced
metadata: {name: ns, namespace: web}
spec:
  podSelector: {matchLabels: {app: web}}
  kprobes:
  - call: sys_openat
""", raw=True)
    errs = {d.path: d for d in errors(validate(p))}
    assert set(errs) == {"kind", "spec.podSelector"}
    assert "TracingPolicyNamespaced applies to the pods of one Kubernetes namespace" in errs["kind"].message
    assert (errs["spec.podSelector"].line, errs["spec.podSelector"].col) == located(p, "podSelector:")


def test_namespace_on_cluster_scoped_policy_warns(tmp_path: Path) -> None:
    p = write(tmp_path, """\
apiVersion: bpfpolicy.io/v1
kind: TracingPolicy
metadata: {name: ns, namespace: web}
spec:
  kprobes:
  - call: sys_openat
""", raw=True)
    result = validate(p)
    assert result.ok
    assert [d.path for d in result.diagnostics if d.severity == "warning"] == ["metadata.namespace"]


# (case, spec, needle located, message): hook names that no kernel has
BAD_NAMES = [
    ("call-is-a-number", "kprobes:\n- call: '0xffffffffffffffff'\n  syscall: false\n", "call:", '"0xffffffffffffffff" is not a kernel function name'),
    ("call-with-comma", "kprobes:\n- call: 'sys,_mkdir'\n", "call:", '"sys,_mkdir" is not a kernel function name'),
    ("call-with-quote", "kprobes:\n- call: 'x\"y'\n  syscall: false\n", "call:", "is not a kernel function name"),
    ("tracepoint-common-field", "tracepoints:\n- subsystem: syscalls\n  event: sys_enter_openat\n  args:\n  - {index: 2, type: int}\n", "index: 2", "tracepoint field 2 is a common_* field"),
    ("raw-syscalls-args-array", "tracepoints:\n- subsystem: raw_syscalls\n  event: sys_enter\n  args:\n  - {index: 5, type: uint64}\n", "index: 5", "field 5 of raw_syscalls/sys_enter is the argument array"),
    ("syscall-field-past-args", "tracepoints:\n- subsystem: syscalls\n  event: sys_enter_openat\n  args:\n  - {index: 11, type: int}\n", "index: 11", "field 11 is out of range for syscalls/sys_enter_openat"),
    ("lsm-hook-with-slash", "lsmhooks:\n- hook: 'file/open'\n", "hook:", '"file/open" is not an LSM hook name'),
]


@pytest.mark.parametrize(("case", "spec", "needle", "message"), BAD_NAMES, ids=[c[0] for c in BAD_NAMES])
def test_hook_names_that_cannot_exist(tmp_path: Path, case: str, spec: str, needle: str, message: str) -> None:
    p = write(tmp_path, spec)
    d = one_error(p)
    assert (d.line, d.col) == located(p, needle), str(d)
    assert message in d.message, str(d)


# Validated means compiled: each row once passed `validate` and then either failed in clang
# (out-of-range literals) or compiled to a test that can never be true. Now each is an error
# at the value that causes it. (case, type of argument 2, selector, needle located, message)
INT_HOOK = """\
kprobes:
- call: sys_openat
  syscall: true
  args:
  - {{index: 2, type: {t}}}
  selectors:
  - {sel}
"""
NONSENSE: list[tuple[str, str, str, str, str]] = [
    ("pids-empty", "int", "{matchPIDs: [{operator: In, values: []}]}", "values: []", "matchPIDs needs at least one PID"),
    ("pids-not-a-number", "int", "{matchPIDs: [{operator: In, values: ['0x10']}]}", "'0x10'", 'expected an integer, got "0x10"'),
    ("pids-negative", "int", "{matchPIDs: [{operator: NotIn, values: [-1]}]}", "-1", "-1 is out of range: must be at least 0"),
    ("pids-past-u32", "int", "{matchPIDs: [{operator: In, values: [4294967296]}]}", "4294967296", "PID 4294967296 is out of range"),
    ("ns-empty", "int", "{matchNamespaces: [{namespace: Pid, operator: In, values: []}]}", "values: []", "matchNamespaces needs at least one value"),
    ("ns-too-big", "int", "{matchNamespaces: [{namespace: Net, operator: In, values: [4294967296]}]}", "4294967296", "out of range for a namespace inode"),
    ("uint64-past-max", "uint64", "{matchArgs: [{index: 2, operator: Equal, values: ['18446744073709551616']}]}", "'18446744073709551616'", "out of range for a uint64 argument"),
    ("int64-below-min", "int64", "{matchArgs: [{index: 2, operator: GT, values: ['-9223372036854775809']}]}", "'-9223372036854775809'", "out of range for a int64 argument"),
    ("uint32-past-max", "uint32", "{matchArgs: [{index: 2, operator: Equal, values: [4294967296]}]}", "4294967296", "out of range for a uint32 argument"),
    ("int-past-max", "int", "{matchArgs: [{index: 2, operator: In, values: [2147483648]}]}", "2147483648", "out of range for a int argument"),
    ("uint8-past-max", "uint8", "{matchArgs: [{index: 2, operator: Equal, values: [256]}]}", "256", "out of range for a uint8 argument"),
    ("size_t-negative", "size_t", "{matchArgs: [{index: 2, operator: LT, values: [-1]}]}", "-1", "out of range for a size_t argument"),
    ("range-reversed", "int", "{matchArgs: [{index: 2, operator: InRange, values: ['5:1']}]}", "'5:1'", 'range "5:1" is empty'),
    ("range-half", "int", "{matchArgs: [{index: 2, operator: NotInRange, values: ['5:']}]}", "'5:'", '"5:" is not a range MIN:MAX'),
    ("range-end-out-of-type", "uint16", "{matchArgs: [{index: 2, operator: InRange, values: ['1:65536']}]}", "'1:65536'", "range end 65536 is out of range for a uint16"),
    ("mask-zero", "int", "{matchArgs: [{index: 2, operator: Mask, values: [0]}]}", "0]", "Mask 0 tests no bits"),
    ("huge-digits", "int", "{matchArgs: [{index: 2, operator: Equal, values: ['" + "9" * 100 + "']}]}", "'999", "is not an integer"),
    ("rate-limit-past-u64-ns", "int", "{matchActions: [{action: Post, rateLimit: 18446744074s}]}", "rateLimit:", "is longer than 18446744073 s"),
    ("rate-limit-5000-digits", "int", "{matchActions: [{action: Post, rateLimit: '" + "9" * 5000 + "'}]}", "rateLimit:", "is not a rate limit"),
    ("arg-error-past-int32", "int", "{matchActions: [{action: Override, argError: 2147483648}]}", "argError:", "2147483648 is out of range: must be at most 2147483647"),
    ("arg-sig-past-u32", "int", "{matchActions: [{action: Signal, argSig: 4294967296}]}", "argSig:", "4294967296 is out of range: must be at most 4294967295"),
    ("family-past-u16", "sock", "{matchArgs: [{index: 2, operator: Family, values: [18446744073709551616, AF_INET6]}]}", "18446744073709551616", "18446744073709551616 is out of range for Family (0..65535)"),
    ("state-past-u8", "sock", "{matchArgs: [{index: 2, operator: State, values: [256]}]}", "256", "256 is out of range for State (0..255)"),
    ("protocol-negative", "sock", "{matchArgs: [{index: 2, operator: Protocol, values: [-1]}]}", "-1", "-1 is out of range for Protocol"),
    ("inmap-out-of-type", "uint16", "{matchArgs: [{index: 2, operator: InMap, values: [70000]}]}", "70000", "out of range for a uint16 argument"),
]


@pytest.mark.parametrize(("case", "t", "sel", "needle", "message"), NONSENSE, ids=[c[0] for c in NONSENSE])
def test_validated_means_compilable(tmp_path: Path, case: str, t: str, sel: str, needle: str, message: str) -> None:
    p = write(tmp_path, INT_HOOK.format(t=t, sel=sel))
    d = one_error(p)
    assert (d.line, d.col) == located(p, needle), str(d)
    assert message in d.message, str(d)
