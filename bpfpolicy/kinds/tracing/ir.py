"""The selector IR: what one TracingPolicy hook compiles to, as typed nodes.

The lowering builds it once from the validated policy (`lower.py`, `capture.py`,
`selectors.py`); the templates under `codegen/templates/tracing/` turn each node into C.
Nothing here is C text: values are numbers, enum-like names and policy strings that reach
C only through the escaping filters of `codegen/render.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Site:
    """Where a node came from in the policy: `FILE:LINE:COL` and the YAML path."""

    where: str
    path: str


@dataclass(frozen=True)
class ArgRead:
    """How a backend reads the raw 64-bit value of one argument.

    source: `tp_field` (tracepoint ctx member), `ctx_args` (ctx->args[i]),
    `regs_syscall` (the syscall's own pt_regs), `regs` (PT_REGS_PARMn), `ctx_array` (ctx[i]
    of a BTF-typed trampoline / LSM program), `none` (a nop argument)."""

    source: str
    index: int = 0
    member: str = ""  # tp_field: the trace_event_raw_* member

    @property
    def data_loc(self) -> bool:
        return self.source == "tp_field" and self.member.startswith("__data_loc_")


@dataclass(frozen=True)
class ResolveStep:
    """`struct <struct> *r<var> = BPF_CORE_READ(r<var-1>, <access>)`."""

    var: int
    struct: str
    access: str


@dataclass(frozen=True)
class Resolve:
    """Tetragon's `resolve: a.b.c`: typed pointers from the argument's BTF type; `final`
    is `read` (BPF_CORE_READ of the member), `struct` (its address) or `array` (address of
    a char array, captured as a string)."""

    base: str
    steps: tuple[ResolveStep, ...]
    final: str
    var: int
    access: str


@dataclass(frozen=True)
class Capture:
    """One argument copied into the event. `how` names the capture macro (int, str,
    bytes, data_loc, cred, userns, module, sock, socket, skb, sockaddr, net_device, file,
    path, dentry, binprm, nop)."""

    site: Site
    slot: int
    label: str
    type: str
    how: str
    read: ArgRead
    user: bool = False
    ctype: str = ""  # int: the C integer type the value is truncated to
    signed: bool = True
    size: ArgRead | None = None  # char_buf: sizeArgIndex
    resolve: Resolve | None = None
    # returnCopy (Tetragon): the buffer is read when the function returns, `ret` bytes.
    # `ret_copy` is where this program does it: "" (not returnCopy), "pointer" (an entry
    # program keeps the raw pointer in the event), "at_exit" (fexit: read it now, with
    # the return value as its size), "stored" (a return program reads the kept pointer).
    ret_copy: str = ""
    # maxData (Tetragon): besides the TP_STR_MAX bytes in the event, up to MAX_DATA bytes
    # travel after the event in the same ring-buffer record (capture.py).
    max_data: bool = False


# ------------------------------------------------------------------------ matchers


@dataclass(frozen=True)
class IntValue:
    """The integer a matcher compares: `arg` (event slot), `pid`, `ns_tgid`, `ns_inum`."""

    source: str
    slot: int = 0
    unsigned: bool = True
    namespace: str = ""
    direct: Capture | None = None  # filter first: read the argument itself, not the event copy


@dataclass(frozen=True)
class IntMatch:
    site: Site
    text: str
    value: IntValue
    op: str  # Equal, NotEqual, GT, LT, Mask, InRange, NotInRange (In/NotIn folded)
    values: tuple[int, ...] = ()
    ranges: tuple[tuple[int, int], ...] = ()
    guard_ns_tgid: bool = False
    node: str = "int"


@dataclass(frozen=True)
class StringMatch:
    """Any of the literal helpers matches `buffer` (arg, binary, parent)."""

    site: Site
    text: str
    buffer: str
    slot: int
    negate: bool
    literals: tuple[str, ...]
    node: str = "string"
    # Filter first: a plain char * argument is read straight into per-CPU scratch, only
    # `need` bytes (longest Prefix/Equal literal + 2; MAX_MATCH_STRING for Postfix).
    direct: Capture | None = None
    need: int = 0
    tail: bool = False  # a Postfix literal: uncomparable when the string fills its buffer
    # matchBinaries followChildren (buffer "parent", scratch): the process's executable,
    # else its ancestors' up `real_parent`, at most this many tasks in all (0: not followed).
    follow: int = 0
    # ... and Equal helpers of the listed paths' file names: an ancestor's executable is
    # walked to a full path only when its file name is one of them (empty: always walked).
    follow_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetTerm:
    """One value of a network operator: `addr` (masked words), `port`/`range`, `priv`,
    `named` (family/protocol/state number)."""

    form: str
    field: str
    v4: bool = True
    words: tuple[tuple[int, int, int], ...] = ()  # (index, mask, value), nonzero masks
    lo: int = 0
    hi: int = 0


@dataclass(frozen=True)
class NetMatch:
    site: Site
    text: str
    slot: int
    negate: bool
    terms: tuple[NetTerm, ...]
    node: str = "net"


@dataclass(frozen=True)
class PidTreeMatch:
    """matchPIDs followForks: the PID (namespace PID) or an ancestor's is one of `pids`."""

    site: Site
    text: str
    pids: tuple[int, int, int, int]
    namespace: bool
    negate: bool
    node: str = "pid_tree"


@dataclass(frozen=True)
class CapsMatch:
    site: Site
    text: str
    which: str  # cap_effective, cap_permitted, cap_inheritable
    mask: int
    negate: bool
    outside_host_userns: int | None  # the host user namespace inum when isNamespaceCapability
    node: str = "caps"


Matcher = IntMatch | StringMatch | NetMatch | PidTreeMatch | CapsMatch


# ------------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Effect:
    """A side effect in policy order: `signal` (number) or `override_return` (kprobe)."""

    site: Site
    action: str
    value: int


@dataclass(frozen=True)
class Post:
    kernel_stack: bool = False
    user_stack: bool = False
    rate_limit_s: int | None = None
    rate_scope: str = "thread"  # thread, process, global
    rate_tunable: str = ""  # the const volatile rodata name of the window
    store: bool = False  # a return: true entry program keeps the event for its return half


@dataclass(frozen=True)
class Actions:
    bits: int
    names: tuple[str, ...]
    post: Post | None
    effects: tuple[Effect, ...]
    verdict: str  # pass, lsm_error, fmod_ret_error
    error: int = 0


@dataclass
class Selector:
    site: Site
    index: int
    matchers: list[Matcher]
    actions: Actions
    # return: true with a kept event (kretprobe, sys_exit_* pair): matchReturnArgs, then
    # matchReturnActions (or the selector's Post) run in the return program.
    ret_matchers: list[IntMatch] = field(default_factory=list)
    ret_actions: Actions | None = None

    @property
    def scratch(self) -> bool:
        return any(isinstance(m, StringMatch) and m.buffer == "parent" for m in self.matchers)


# ------------------------------------------------------------------------ programs


@dataclass(frozen=True)
class Literal:
    """One byte-compare helper per (operator, value), shared by every matcher using it."""

    name: str
    op: str  # Equal, Prefix, Postfix
    value: str
    data: bytes


@dataclass
class Program:
    """One BPF program: a hook (or its enter/exit half) on one backend."""

    name: str
    sec: str
    kind: str  # the backend
    hook_id: int
    site: Site
    title: str
    why: str
    ctx: str  # pt_regs, raw_tp, sys_enter, sys_exit, tp_struct, void, u64_array
    tp_event: str = ""  # ctx == tp_struct
    verdict_index: int | None = None  # LSM: ctx[n] holds earlier LSMs' verdict
    retval_index: int | None = None  # fexit: ctx[n] holds the return value
    syscall_regs: str = ""  # kprobe / trampoline: the syscall wrapper's pt_regs
    captures: list[Capture] = field(default_factory=list)
    selectors: list[Selector] = field(default_factory=list)
    early: list[Capture] = field(default_factory=list)  # captured before selectors (matched copies)
    late: list[Capture] = field(default_factory=list)  # captured only when an event is posted
    nothing_to_enforce: bool = False
    # return: true split in two programs (kretprobe / sys_exit_* tracepoint): "store" is the
    # entry half (keeps the event per task in tp_ret_map), "stored" the return half.
    ret_mode: str = ""
    ret_read: str = ""  # stored: how the return value is read (kretprobe: regs_rc, sys_exit: tp_ret)

    @property
    def scratch(self) -> bool:
        """A selector reads into tp_scratch (direct string reads, the parent's binary)."""
        return any(isinstance(m, StringMatch) and (m.buffer == "parent" or m.direct is not None)
                   for s in self.selectors for m in s.matchers)

    @property
    def pass_ret(self) -> str:
        return "lsm" if self.verdict_index is not None else "zero"


@dataclass(frozen=True)
class Tunable:
    """A per-policy constant as `const volatile` rodata."""

    name: str
    ctype: str
    value: int
    why: str


@dataclass
class Uses:
    """Which optional helpers and maps the generated C needs."""

    rate_limit: bool = False
    parent_binary: bool = False
    sock: bool = False
    cred: bool = False
    pid_tree: bool = False
    stacks: bool = False
    ret_store: bool = False  # tp_ret_map: events kept from a function's entry to its return
    data: bool = False  # maxData: tp_data_map and the event + data record
