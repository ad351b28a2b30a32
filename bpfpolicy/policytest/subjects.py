"""Per-kind subjects of a test file: the reference model's answer to a case (with the
chain of rules it considered, for `explain`), the compiled artifact's answer where it
can be had without a kernel (the seccomp emulator), and the kernel-test.txt vectors that
ask the kernel (BPF_PROG_TEST_RUN for XDP/tc/cgroup_skb, a child under the real seccomp
filter) — their expected values come from the model, so a failing vector is a
model/compiled disagreement."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..kinds.vectors import KernelTestScript
from ..policy.diagnostics import format_path
from .model import Case, l4_port, protocol_number


@dataclass
class Answer:
    value: str  # allow|deny, or a seccomp action ("errno 1", "kill", ...)
    rule: str | None = None
    chain: list[str] = field(default_factory=list)


@dataclass
class Vector:
    """kernel-test.txt lines for one case: the last line carries the case's own answer."""

    artifact: str
    lines: list[str]
    what: str  # what the kernel's answer means, for messages


class Unsupported(Exception):
    """The case cannot be asked of this policy (named endpoint not selected, ...)."""


# --------------------------------------------------------------------------- XDP


class XdpSubject:
    kind = "XDPBlocklist"

    def __init__(self, model: Any) -> None:
        from ..kinds.xdp.lower import lower

        self.model = model
        self.low = lower(model.rules, model.rate)
        self.artifact = f"XDPBlocklist/{model.name}"

    def rule_name(self, idx: int | None) -> str | None:
        if idx is None:
            return None
        return f"{self.artifact}:{format_path(self.model.rules[idx].path)}"

    def answer(self, case: Case) -> Answer:
        from ..kinds.xdp.lower import classify, source_mask

        pkt = case.packet or {}
        src = pkt.get("src") or "198.51.100.250"
        proto, port = protocol_number(pkt), l4_port(pkt)
        action, idx = classify(self.low, src, proto, port)
        mask = source_mask(self.low, src)
        chain = []
        for r in self.model.rules:
            listed = bool(mask & r.bit)
            why = "source listed" if listed else "source not listed"
            if listed and r.protocols is not None and proto not in r.protocols:
                why += f", protocol {proto} not in {sorted(r.protocols)}"
            elif listed and r.ports is not None and not any(lo <= port <= hi for lo, hi in r.ports):
                why += f", port {port} not in {r.ports}"
            chain.append(f"{self.rule_name(r.index)} ({'allow' if r.action == 'pass' else 'deny'}): {why}")
        chain.append("allow beats deny; nothing matched: pass" if idx is None else
                     f"decided by {self.rule_name(idx)} (allow beats deny)")
        return Answer("allow" if action == "pass" else "deny", self.rule_name(idx), chain)

    def vector(self, case: Case, ans: Answer) -> Vector:
        from ..kinds.xdp.packets import packet

        pkt = case.packet or {}
        data = packet(pkt.get("src") or "198.51.100.250", protocol_number(pkt), l4_port(pkt))
        line = KernelTestScript().prog_run("xdp_blocklist", 1 if ans.value == "deny" else 2, data).text().strip()
        return Vector(self.artifact, [line], "XDP retval (1 drop, 2 pass)")


# --------------------------------------------------------------------------- NetworkPolicy


class NetpolSubject:
    kind = "NetworkPolicy"

    def __init__(self, models: list[Any], inventory: str) -> None:
        from ..kinds.netpol.fidelity import host_always_rule
        from ..kinds.netpol.inventory import from_options
        from ..kinds.netpol.lower import plan_endpoint

        options = {"inventory": inventory}
        inv = from_options(options)
        specs = [s for m in models for s in m.rules]
        self.plans = {}
        for ep in inv:
            plan = plan_endpoint(ep, specs, inv)
            if plan is None:
                continue
            extra = host_always_rule(ep, options)
            if extra is not None:
                plan = plan_endpoint(ep, [*specs, extra], inv) or plan
            self.plans[ep.name] = plan

    def _plan(self, case: Case) -> Any:
        pkt = case.packet or {}
        name = pkt.get("endpoint") or (next(iter(self.plans)) if len(self.plans) == 1 else None)
        if name not in self.plans:
            raise Unsupported(f"endpoint {name!r} is not selected by the policy "
                              f"(selected: {', '.join(sorted(self.plans)) or 'none'})")
        return self.plans[name]

    @staticmethod
    def _peer(pkt: dict[str, Any]) -> str:
        d = pkt.get("direction", "ingress")
        peer = pkt.get("src") if d == "ingress" else pkt.get("dst")
        return peer or ("203.0.113.7" if d == "ingress" else "198.51.100.7")

    def _new(self, plan: Any, d: str, peer: str, proto: int, port: int) -> tuple[str, str, list[str]]:
        from ..kinds.netpol.lower import ACTION_NAMES, DROPS, _l4_matches, peer_address

        action, slot = plan.reference_verdict(d, peer, proto, port)
        net = ipaddress.ip_network(peer_address(peer))
        chain = []
        for i, r in enumerate(plan.rules):
            if r.direction != d:
                continue
            pm, lm = plan._peer_matches(r, net), _l4_matches(plan.l4[i], proto, port)
            chain.append(f"{r.name} ({'deny' if r.deny else 'allow'}{', audit' if r.audit else ''}): "
                         f"peer {'matches' if pm else 'does not match'}, "
                         f"L4 {'matches' if lm else 'does not match'}")
        chain.append(f"deny beats allow, then default deny: {ACTION_NAMES[action]} by {plan.slot_name(slot)}")
        return ("deny" if action in DROPS else "allow"), plan.slot_name(slot), chain

    def answer(self, case: Case) -> Answer:
        from ..kinds.netpol.lower import peer_address

        pkt = case.packet or {}
        plan = self._plan(case)
        d = pkt.get("direction", "ingress")
        peer = peer_address(self._peer(pkt))
        if plan.endpoint.attach_kind == "cgroup_skb" and (peer.is_loopback or peer in plan.endpoint.addresses):
            # the packet is the endpoint talking to itself (test-run packets are on "lo")
            return Answer("allow", "within-endpoint",
                          [f"peer {peer} is loopback or the endpoint's own address: traffic inside "
                           "the endpoint (on lo) is never policed, as Cilium"])
        proto, port = protocol_number(pkt), l4_port(pkt)
        if pkt.get("state") == "reply":
            back = "egress" if d == "ingress" else "ingress"
            fwd, rule, chain = self._new(plan, back, self._peer(pkt), proto, self._sport(case))
            chain = [f"reply: the connection was opened by {back} traffic, judged first:", *chain]
            if fwd == "allow":
                chain.append(f"the opening {back} packet was allowed: its reply passes by connection tracking")
                return Answer("allow", f"{d}/reply", chain)
            chain.append("the opening packet was dropped: no connection, the reply is judged as new")
        value, rule, more = self._new(plan, d, self._peer(pkt), proto, port)
        return Answer(value, rule, (chain if pkt.get("state") == "reply" else []) + more)

    @staticmethod
    def _sport(case: Case) -> int:
        """The local port of the case's packet (the peer's port of a reply's opener)."""
        return 40000 + case.index % 20000

    def vector(self, case: Case, ans: Answer) -> Vector:
        from ..kinds.netpol.packets import frame

        pkt = case.packet or {}
        plan = self._plan(case)
        ep = plan.endpoint
        d = pkt.get("direction", "ingress")
        peer = self._peer(pkt)
        v6 = ipaddress.ip_address(peer).version == 6
        local = next((str(a) for a in ep.addresses if a.version == (6 if v6 else 4)),
                     "fd00:ffff::1" if v6 else "10.255.0.1")
        cg = ep.attach_kind == "cgroup_skb"
        proto, port = protocol_number(pkt), l4_port(pkt)

        def prog(direction: str) -> str:
            return f"netpol_{'cg' if cg else 'tc'}_{direction}"

        def retval(value: str) -> int:
            return (0 if value == "deny" else 1) if cg else (2 if value == "deny" else 0)

        script = KernelTestScript()
        sport = self._sport(case)
        if pkt.get("state") == "reply":
            back = "egress" if d == "ingress" else "ingress"
            fwd, _, _ = self._new(plan, back, peer, proto, sport)
            # the opening packet: local -> peer for an egress opener, peer -> local else
            src, dst = (local, peer) if back == "egress" else (peer, local)
            script.prog_run(prog(back), retval(fwd), frame(src, dst, proto, port, sport))
        src, dst = (peer, local) if d == "ingress" else (local, peer)
        flags = 0x12 if pkt.get("state") == "reply" else 0x02  # a TCP reply is a SYN-ACK, not a SYN
        script.prog_run(prog(d), retval(ans.value), frame(src, dst, proto, sport, port, tcp_flags=flags))
        what = "cgroup_skb retval (1 allow, 0 drop)" if cg else "tc retval (0 ok, 2 shot)"
        return Vector(f"NetworkPolicy/{ep.name}", script.text().strip().splitlines(), what)


# --------------------------------------------------------------------------- seccomp

AUDIT = {"x86_64": 0xC000003E, "x32": 0xC000003E, "aarch64": 0xC00000B7, "i386": 0x40000003}
X32_BIT = 0x40000000
# an allowed call of these, made for real in the runner's child, would end or fork it
KERNEL_UNSAFE = frozenset({"exit", "exit_group", "kill", "tkill", "tgkill", "fork", "vfork", "clone",
                           "clone3", "execve", "execveat", "reboot", "pause", "rt_sigreturn",
                           "rt_sigsuspend", "vhangup", "setsid", "munmap", "mprotect", "brk",
                           "mremap", "close", "dup2", "dup3", "prctl", "seccomp",
                           # wait forever even with zero arguments (the runner's alarm is 10 s)
                           "select", "pselect6", "ppoll", "sigsuspend"})
# an allowed call of these may wait given non-zero arguments (a count on fd 0, a timeout)
KERNEL_BLOCKING_WITH_ARGS = frozenset({
    "read", "readv", "pread64", "preadv", "preadv2", "recvfrom", "recvmsg", "recvmmsg", "accept",
    "accept4", "poll", "epoll_wait", "epoll_pwait", "epoll_pwait2", "futex", "futex_waitv", "wait4",
    "waitid", "msgrcv", "msgsnd", "semop", "semtimedop", "mq_timedreceive", "mq_timedsend",
    "io_getevents", "io_pgetevents", "nanosleep", "clock_nanosleep", "rt_sigtimedwait", "flock",
    "fcntl", "connect", "sendto", "sendmsg", "write", "writev", "pwrite64", "splice", "tee"})


def action_text(ret: int) -> str:
    from ..kinds.seccomp import bpf

    act, data = ret & bpf.RET_ACTION_FULL, ret & bpf.RET_DATA
    names = {bpf.RET_KILL_PROCESS: "kill", bpf.RET_KILL_THREAD: "kill-thread", bpf.RET_TRAP: "trap",
             bpf.RET_LOG: "log", bpf.RET_ALLOW: "allow", bpf.RET_USER_NOTIF: "notify"}
    if act == bpf.RET_ERRNO:
        return f"errno {data}"
    if act == bpf.RET_TRACE:
        return f"trace {data}" if data else "trace"
    return names.get(act, f"0x{ret:08x}")


def _cond_ok(c: Any, args: list[int]) -> bool:
    v = (args[c.index] if c.index < len(args) else 0) & ((1 << c.bits) - 1)
    return {"SCMP_CMP_EQ": v == c.value, "SCMP_CMP_NE": v != c.value, "SCMP_CMP_LT": v < c.value,
            "SCMP_CMP_LE": v <= c.value, "SCMP_CMP_GT": v > c.value, "SCMP_CMP_GE": v >= c.value,
            "SCMP_CMP_MASKED_EQ": (v & c.value) == c.datum}[c.op]


class SeccompSubject:
    kind = "SeccompProfile"

    def __init__(self, model: Any) -> None:
        from ..kinds.seccomp.api import compile_profile
        from ..kinds.seccomp.resolve import Target

        self.name = model.name
        self.artifact = f"SeccompProfile/{model.name}"
        self.cp = compile_profile(model.body, Target.make("x86_64", None, None))
        self.fmodel = self.cp.compiled.model
        self.profile = self.cp.profile
        # the runner's child reports through write() and leaves by exit_group(): a profile
        # that refuses either cannot be asked in the kernel (the emulator still runs it)
        probe = lambda n: Case("", 0, n, "", None, {"name": n}, {})  # noqa: E731
        self.kernel_ok = all(self.answer(probe(n)).value in ("allow", "log") for n in ("write", "exit_group"))

    def call(self, case: Case) -> tuple[str, int, int, list[int]]:
        from ..syscalls.tables import TABLES

        sc = case.syscall or {}
        arch = sc.get("arch", "x86_64")
        name = sc["name"]
        if isinstance(name, int):
            nr = name
        else:
            table = TABLES.get("x86_64" if arch == "x32" else arch, {})
            if name not in table:
                raise Unsupported(f"{arch} has no syscall named {name!r}")
            nr = table[name]
        if arch == "x32":
            nr |= X32_BIT
        args = [int(a) & (2**64 - 1) for a in sc.get("args") or []]
        return arch, AUDIT[arch], nr, args

    def answer(self, case: Case) -> Answer:
        arch, audit, nr, args = self.call(case)
        m = self.fmodel
        block = next((b for b in m.blocks if b.audit_arch == audit), None)
        if block is None:
            return Answer(action_text(m.bad_arch), "bad-arch", [f"{arch} is not in architectures: bad-arch action"])
        if not any(lo <= nr <= hi for lo, hi, _ in block.domains):
            return Answer(action_text(m.bad_arch), "bad-arch",
                          [f"nr {nr:#x} is outside every ABI of {block.label}: bad-arch action"])
        rules = block.syscalls.get(nr)
        label = block.names.get(nr, str(nr))
        if rules is None:
            return Answer(action_text(m.default), "defaultAction", [f"{label}: no rule names it: defaultAction"])
        chain = []
        for i, r in enumerate(rules.rules):
            ok = all(_cond_ok(c, args) for c in r.conds)
            conds = " && ".join(f"arg{c.index} {c.op[9:]} {c.value:#x}" for c in r.conds)
            chain.append(f"{label} rule {i} ({action_text(r.action)}) [{conds}]: {'matches' if ok else 'no match'}")
            if ok:
                return Answer(action_text(r.action), f"{label}:rule {i}", chain)
        chain.append(f"{label}: {'no argument rule matched, ' if rules.rules else ''}action {action_text(rules.fallback)}")
        return Answer(action_text(rules.fallback), f"{label}:fallback", chain)

    def emulated(self, case: Case) -> Answer:
        """The compiled cBPF program, run by the emulator (no kernel needed)."""
        from ..kinds.seccomp.emulator import SeccompData, run

        _, audit, nr, args = self.call(case)
        return Answer(action_text(run(self.cp.insns, SeccompData(nr, audit, tuple(args[:6]))).ret))

    def vector(self, case: Case, ans: Answer) -> Vector | None:
        arch, _, nr, args = self.call(case)
        sc = case.syscall or {}
        allowed = ans.value in ("allow", "log")  # trace: ENOSYS without a tracer, not run
        name = str(sc["name"])
        if not self.kernel_ok or arch != "x86_64" or (allowed and (name in KERNEL_UNSAFE or (name in KERNEL_BLOCKING_WITH_ARGS and any(args)))):
            return None
        default = self.profile.get("defaultErrnoRet") or 1
        if ans.value.startswith("errno"):
            expect = f"errno={ans.value.split()[1]}"
        elif ans.value in ("kill", "kill-thread", "trap"):
            expect = "signal=31"
        elif ans.value.startswith("trace"):
            expect = "errno=38"  # no tracer attached: the call fails with ENOSYS
        else:
            expect = f"not-errno={default}"
        line = KernelTestScript().syscall(nr, expect, tuple(args)).text().strip()
        return Vector(self.artifact, [line], "the syscall in a child under the kernel's seccomp")
