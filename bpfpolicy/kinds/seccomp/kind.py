"""SeccompProfile: OCI/Docker seccomp profiles compiled to classic BPF (no libseccomp).

Native form::

    apiVersion: bpfpolicy.io/v1
    kind: SeccompProfile
    metadata: {name: web}
    spec: {defaultAction: SCMP_ACT_ERRNO, syscalls: [...]}   # the OCI/Docker body

Foreign form: a JSON file whose top level has `defaultAction` and no `apiVersion`
(OCI `LinuxSeccomp`, Docker's profiles with `archMap`/`includes`/`excludes`,
containers-common's). Its policy name is the file's stem made a DNS-1123 label.

Unknown syscall names: a name that is a syscall on no architecture (ours from the
kernel's tables, plus the names libseccomp knows on architectures we have no table
for) is an error with a did-you-mean in both formats -- a typo ships a profile that
breaks the workload (allow-list) or fails to deny (deny-list). With `--lenient` it is a
warning and the name is skipped (runc's behaviour). A name known on another
architecture than the profile's (Docker's profile lists arm and s390 calls) is fine:
it applies to each ABI whose table has it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...policy.diagnostics import Diagnostic, PolicyError, did_you_mean
from ...policy.load import Document
from ..base import Artifact, CompileContext, ForeignFormat, Kind, Model, Reporter
from .changes import describe_change as _describe_change

OTHER_ARCH_SYSCALLS = frozenset({
    # names libseccomp knows only on architectures we have no table for
    "arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls", "usr26",
    "usr32", "sync_file_range2", "swapcontext", "spu_run", "spu_create", "subpage_prot",
    "sys_debug_setcontext", "rtas", "switch_endian", "multiplexer", "pciconfig_iobase",
    "pciconfig_read", "pciconfig_write", "s390_pci_mmio_read", "s390_pci_mmio_write",
    "s390_runtime_instr", "s390_guarded_storage", "s390_sthyi", "riscv_flush_icache",
    "riscv_hwprobe", "cachectl", "sysmips", "atomic_barrier", "atomic_cmpxchg_32",
    "get_thread_area", "set_thread_area", "sysriscv", "or1k_atomic", "memory_ordering",
    "kern_features", "utrap_install", "perfctr", "getpagesize", "oldwait4",
    "recv", "send", "syscall",  # socketcall pseudo-calls (arm, parisc) and mips o32
})
CAPABILITIES = frozenset(f"CAP_{c}" for c in ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"])
MAX_ERRNO = 4095


def _is_foreign_json(data: Any) -> bool:
    return isinstance(data, dict) and "defaultAction" in data and "apiVersion" not in data


def dns_label(stem: str) -> str:
    """A file stem as a DNS-1123 label: `Docker_Default.v2` -> `docker-default-v2`."""
    label = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)[:63].strip("-")
    return label or "seccomp-profile"


@dataclass
class SeccompModel(Model):
    """A checked seccomp profile: its body (native `spec` or the OCI JSON itself), where
    that body sits in the document, and the profile's name."""

    name: str
    body: dict[str, Any]
    base: tuple[str | int, ...]
    foreign: bool


class SeccompProfileKind(Kind):
    kind = "SeccompProfile"
    describe_change = staticmethod(_describe_change)  # plan's rule-level lines (changes.py)
    schema_file = "seccompprofile.json"
    install_subdir = "seccomp"
    formats = (ForeignFormat("SeccompJSON", "oci-seccomp.json", matches=_is_foreign_json),)

    # -- identity ---------------------------------------------------------------
    @classmethod
    def policy_name(cls, doc: Document) -> str | None:
        if _is_foreign_json(doc.data):
            return dns_label(Path(doc.file).stem)
        return super().policy_name(doc)

    @staticmethod
    def body(doc: Document) -> tuple[dict[str, Any], tuple[str | int, ...], bool]:
        """(profile body, its path in the document, is-foreign)."""
        if _is_foreign_json(doc.data):
            return doc.data, (), True
        return doc.data.get("spec") or {}, ("spec",), False

    # -- validation -------------------------------------------------------------
    def check(self, doc: Document, report: Reporter) -> None:
        from . import resolve as rs
        from .arch import ALL_NAMES, ERRNO_ACTIONS, errno_value
        from .model import ARG32, U32

        body, base, foreign = self.body(doc)
        if body.get("archMap") and body.get("architectures"):
            report.error((*base, "architectures"), '"architectures" and "archMap" are mutually exclusive (Docker refuses both)')
        default = body.get("defaultAction")
        self._check_errno(report, body, base, default, ("defaultErrnoRet", "defaultErrno"), errno_value, ERRNO_ACTIONS)
        if default == "SCMP_ACT_NOTIFY":
            report.error((*base, "defaultAction"), "SCMP_ACT_NOTIFY cannot be the default action (runc refuses it: the listener itself would be blocked)")
        default_key = self._action_key(default, body.get("defaultErrnoRet"), body.get("defaultErrno"), None, errno_value)
        for i, rule in enumerate(body.get("syscalls") or []):
            path = (*base, "syscalls", i)
            if rule.get("name") and rule.get("names"):
                report.error((*path, "name"), 'both "name" and "names" are set (Docker refuses this)')
            names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
            for j, name in enumerate(names):
                npath = (*path, "names", j) if rule.get("names") else (*path, "name")
                if name in ALL_NAMES or name in OTHER_ARCH_SYSCALLS:
                    continue
                msg = f'unknown syscall "{name}"{did_you_mean(name, ALL_NAMES)}'
                if report.lenient:
                    report.warning(npath, msg + "; skipped (--lenient, as runc does)")
                else:
                    report.error(npath, msg + " (use --lenient to skip it with a warning, as runc does)")
            dup = [n for n, c in Counter(names).items() if c > 1]
            if dup:
                report.warning((*path, "names"), f'"{dup[0]}" is listed twice')
            action = rule.get("action")
            self._check_errno(report, rule, path, action, ("errnoRet", "errno"), errno_value, ERRNO_ACTIONS)
            if self._action_key(action, rule.get("errnoRet"), rule.get("errno"), body.get("defaultErrnoRet"), errno_value) == default_key \
                    and default_key is not None:
                report.warning((*path, "action"), f"{action} is the default action already: the rule has no effect and is dropped "
                               "(libseccomp refuses such a rule with EACCES)")
            self._check_args(report, rule, path, names, foreign, ARG32, U32)
            for which in ("includes", "excludes"):
                self._check_filter(report, rule.get(which) or {}, (*path, which), rs)
        self._check_clone3(doc, report, body, base)

    @staticmethod
    def _check_clone3(doc: Document, report: Reporter, body: dict[str, Any], base: tuple[str | int, ...]) -> None:
        """clone's flags are a register seccomp can check; clone3's live in a struct in
        memory it cannot read. Restricting one while allowing the other is a hole."""
        def names_of(rule: dict[str, Any]) -> list[str]:
            return list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))

        # rules with includes/excludes depend on the target (Docker's profile allows
        # clone and clone3 outright with CAP_SYS_ADMIN, else restricts clone and
        # denies clone3): only unconditional rules are judged here
        rules = [r if isinstance(r, dict) and not r.get("includes") and not r.get("excludes") else {}
                 for r in body.get("syscalls") or []]
        allowing = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
        if any("clone" in names_of(r) and not r.get("args") for r in rules):
            return  # an argument-free rule decides clone: its flags are not checked
        clone_at = next((i for i, r in enumerate(rules) if "clone" in names_of(r)
                         and r.get("action") != body.get("defaultAction")
                         and any(isinstance(a, dict) and a.get("index") == 0 for a in r.get("args") or [])), None)
        if clone_at is None:
            return
        clone3_rules = [i for i, r in enumerate(rules) if "clone3" in names_of(r)]
        free = [i for i in clone3_rules if not rules[i].get("args")]
        clone3_at = free[0] if free else (clone3_rules[0] if clone3_rules else None)
        if clone3_at is not None and rules[clone3_at].get("action") not in allowing:
            return
        if clone3_at is None and body.get("defaultAction") not in allowing:
            return
        cnames = rules[clone_at].get("names")
        cpath = (*base, "syscalls", clone_at, *(("names", cnames.index("clone")) if cnames else ("name",)))
        where = doc.diag(cpath, "")
        loc = f"{where.file}:{where.line}:{where.col}"
        if clone3_at is None:
            report.warning((*base, "defaultAction"), f"clone is restricted by its flags (argument 0) at {loc} "
                           "but the default action allows clone3, whose flags are in memory where seccomp cannot "
                           "check them: deny clone3 (SCMP_ACT_ERRNO with errnoRet 38, ENOSYS, makes libc fall back to clone)")
            return
        n3 = rules[clone3_at].get("names")
        report.warning((*base, "syscalls", clone3_at, *(("names", n3.index("clone3")) if n3 else ("name",))),
                       f"clone is restricted by its flags (argument 0) at {loc} "
                       "but this rule allows clone3, whose flags are in memory where seccomp cannot check them: "
                       "deny clone3 (SCMP_ACT_ERRNO with errnoRet 38, ENOSYS, makes libc fall back to clone)")

    @staticmethod
    def _action_key(action: Any, num: Any, name: Any, default_errno: Any, errno_value: Any) -> tuple[str, int] | None:
        if not isinstance(action, str):
            return None
        if action in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
            if num is None and isinstance(name, str):
                num = errno_value(name)
            return action, int(num) if isinstance(num, int) else 1
        return ("SCMP_ACT_KILL_THREAD" if action == "SCMP_ACT_KILL" else action), 0

    @staticmethod
    def _check_errno(report: Reporter, obj: dict[str, Any], path: tuple[str | int, ...], action: Any,
                     keys: tuple[str, str], errno_value: Any, errno_actions: tuple[str, ...]) -> None:
        num, name = obj.get(keys[0]), obj.get(keys[1])
        if (num is not None or name) and action not in errno_actions:
            k = keys[0] if num is not None else keys[1]
            report.error((*path, k), f"{k} is set but {action} cannot return an errno "
                         "(only SCMP_ACT_ERRNO and SCMP_ACT_TRACE carry one)")
            return
        if name:
            v = errno_value(name)
            if v is None:
                report.error((*path, keys[1]), f'unknown errno name "{name}"')
            elif num is not None and v != num:
                report.warning((*path, keys[1]), f"{name} is {v} but {keys[0]} says {num}; {keys[0]} wins")
        if isinstance(num, int) and action == "SCMP_ACT_ERRNO" and num > MAX_ERRNO:
            report.warning((*path, keys[0]), f"{num} is above MAX_ERRNO ({MAX_ERRNO}); the kernel returns {MAX_ERRNO}")

    @staticmethod
    def _check_args(report: Reporter, rule: dict[str, Any], path: tuple[str | int, ...], names: list[str],
                    foreign: bool, arg32: dict[str, frozenset[int]], u32: int) -> None:
        args = rule.get("args") or []
        seen: set[int] = set()
        for k, arg in enumerate(args):
            apath = (*path, "args", k)
            idx, op = arg.get("index"), arg.get("op")
            if isinstance(idx, int) and idx > 5:
                report.error((*apath, "index"), f"argument index {idx} is out of range: syscalls have 6 arguments (0..5)")
            if isinstance(idx, int) and idx in seen:
                report.warning((*apath, "index"), f"argument {idx} is compared twice in one rule: as runc does, "
                               "each comparison of this rule becomes a rule of its own (OR)")
            seen.add(idx)
            if op == "SCMP_CMP_MASKED_EQ":
                if "valueTwo" not in arg and not foreign:
                    report.error(apath, "SCMP_CMP_MASKED_EQ needs valueTwo: the rule matches when "
                                 "(arg & value) == valueTwo (write valueTwo: 0 to test that no masked bit is set)")
            elif arg.get("valueTwo"):
                report.warning((*apath, "valueTwo"), f"valueTwo is only used by SCMP_CMP_MASKED_EQ; ignored for {op}")
            value = arg.get("value")
            if isinstance(value, int) and isinstance(idx, int) and not -(1 << 31) <= value <= u32 \
                    and any(idx in arg32.get(n, ()) for n in names):
                report.warning((*apath, "value"), f"argument {idx} is 32 bits wide; only the low 32 bits of "
                               f"{value:#x} are compared (see docs/seccomp.md)")

    @staticmethod
    def _check_filter(report: Reporter, f: dict[str, Any], path: tuple[str | int, ...], rs: Any) -> None:
        mk = f.get("minKernel")
        if mk:
            try:
                rs._min_kernel(mk, ())
            except rs.ResolveError as e:
                report.error((*path, "minKernel"), e.message)
        for j, cap in enumerate(f.get("caps") or []):
            if cap not in CAPABILITIES:
                report.warning((*path, "caps", j), f'unknown capability "{cap}"{did_you_mean(cap, CAPABILITIES)}')

    def parse(self, doc: Document, report: Reporter) -> SeccompModel:
        self.check(doc, report)
        return self.model(doc)

    def model(self, doc: Document) -> SeccompModel:
        body, base, foreign = self.body(doc)
        return SeccompModel(doc, self.policy_name(doc) or "seccomp", body, base, foreign)

    # -- compilation ------------------------------------------------------------
    def compile(self, doc: Document, ctx: CompileContext) -> Artifact:
        return self.compile_model(self.model(doc), ctx)

    def compile_model(self, model: Model, ctx: CompileContext) -> Artifact:
        from ...syscalls.tables import TABLES
        from . import render
        from .api import compile_profile
        from .arch import AUDIT_ARCH
        from .compiler import FilterTooLarge
        from .resolve import ResolveError, Target

        assert isinstance(model, SeccompModel)
        doc, body, base, name = model.doc, model.body, model.base, model.name
        try:
            target = Target.make(ctx.arch, ctx.options.get("caps"), ctx.kernel)
            cp = compile_profile(body, target)
        except ResolveError as e:
            raise PolicyError([doc.diag((*base, *e.path), e.message)]) from None
        except FilterTooLarge as e:
            raise PolicyError([doc.diag((*base, "syscalls"), str(e))]) from None
        except ValueError as e:
            raise PolicyError([doc.diag(base, str(e))]) from None
        insns = cp.insns
        raw = cp.filter_bytes
        native_abi = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_AARCH64": "aarch64",
                      "SCMP_ARCH_X86": "i386"}.get(target.arch)
        stats: dict[str, Any] = {"insns": len(insns)}
        if native_abi:
            table = TABLES[native_abi]
            stats = render.stats(insns, AUDIT_ARCH[target.arch], range(max(table.values()) + 1))
        from .model import shadowed

        warnings = list(cp.compiled.model.warnings) + shadowed(cp.profile)
        files = {
            "filter.bin": raw,
            "filter.txt": render.disassemble(cp.compiled.program, f"SeccompProfile {name} for {target.arch}").encode(),
            "filter.h": render.c_header(name, insns).encode(),
            "profile.json": (json.dumps(cp.profile, indent=2) + "\n").encode(),
            "kernel-test.txt": render.kernel_test_vectors(cp).encode(),
        }
        manifest = {
            "seccomp": {
                "target": target.describe(),
                "architectures": cp.profile["architectures"],
                "flags": cp.flags(),
                "defaultAction": cp.profile["defaultAction"],
                "rules": len(cp.profile["syscalls"]),
                "droppedByTarget": [{"path": ".".join(map(str, p)), "why": w} for p, w in cp.resolution.dropped],
                "stats": stats,
            },
        }
        return Artifact(self.kind, name, files, manifest, warnings)


def check_document(doc: Document, lenient: bool = False) -> list[Diagnostic]:
    """Semantic diagnostics of one SeccompProfile document (for tools and tests)."""
    report = Reporter(doc, lenient=lenient)
    SeccompProfileKind().check(doc, report)
    return report.diagnostics
