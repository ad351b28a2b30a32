"""Tetragon TracingPolicy vocabulary: operators, actions, argument types and limits.

Facts are Tetragon's (`pkg/selectors/kernel.go`, `pkg/k8s/apis/cilium.io/v1alpha1/types.go`,
main after v1.7.0; see docs/upstream.md §2). Where Tetragon's code and docs disagree, the code
spelling is accepted and the docs spelling is answered with a did-you-mean.

`IMPLEMENTED_*` say what bpfpolicy compiles today; everything else Tetragon knows is
*recognised* and reported as unsupported with a precise reason, never as "unknown".
"""

from __future__ import annotations

# ------------------------------------------------------------------ hook sections
HOOK_SECTIONS = ("kprobes", "tracepoints", "lsmhooks", "uprobes", "usdts", "fentries")

# ------------------------------------------------------------------ operators (id)
OPERATORS: dict[str, int] = {
    "GT": 1, "LT": 2, "Equal": 3, "NotEqual": 4, "In": 5, "NotIn": 6, "Prefix": 8,
    "Postfix": 9, "InMap": 10, "NotInMap": 11, "Mask": 12, "SAddr": 13, "DAddr": 14,
    "SPort": 15, "DPort": 16, "Protocol": 17, "NotSPort": 18, "NotDPort": 19,
    "SPortPriv": 20, "NotSportPriv": 21, "DPortPriv": 22, "NotDPortPriv": 23,
    "NotSAddr": 24, "NotDAddr": 25, "NotPrefix": 26, "NotPostfix": 27, "Family": 28,
    "State": 29, "CapabilitiesGained": 30, "InRange": 31, "NotInRange": 32,
    "SubString": 33, "SubStringIgnCase": 34, "CelExpr": 35, "FileType": 36,
    "NotFileType": 37,
}
# Spellings used by Tetragon's docs (or natural guesses) that its code rejects.
OPERATOR_DOC_SPELLINGS = {
    "SubStringIgnoreCase": "SubStringIgnCase",
    "NotSPortPriv": "NotSportPriv",
}
NETWORK_OPERATORS = frozenset({
    "SAddr", "DAddr", "SPort", "DPort", "Protocol", "NotSPort", "NotDPort", "SPortPriv",
    "NotSportPriv", "DPortPriv", "NotDPortPriv", "NotSAddr", "NotDAddr", "Family", "State",
})
INT_OPERATORS = frozenset({"GT", "LT", "Equal", "NotEqual", "In", "NotIn", "Mask", "InRange",
                           "NotInRange"})
STRING_OPERATORS = frozenset({"Equal", "NotEqual", "In", "NotIn", "Prefix", "NotPrefix",
                              "Postfix", "NotPostfix"})
# What bpfpolicy compiles to straight-line C today.
IMPLEMENTED_INT_OPERATORS = frozenset({"GT", "LT", "Equal", "NotEqual", "In", "NotIn", "Mask",
                                       "InRange", "NotInRange"})
IMPLEMENTED_STRING_OPERATORS = STRING_OPERATORS

BINARY_OPERATORS = ("In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix")
PID_OPERATORS = ("In", "NotIn")
NAMESPACE_OPERATORS = ("In", "NotIn")
NAMESPACES = ("Uts", "Ipc", "Mnt", "Pid", "PidForChildren", "Net", "Time", "TimeForChildren",
              "Cgroup", "User")
# Inode numbers of the initial namespaces (include/linux/proc_ns.h); `host_ns` compiles to
# these. Mnt and Net have no fixed number, so `host_ns` is not available for them.
HOST_NS_INUM = {"Ipc": 0xEFFFFFFF, "Uts": 0xEFFFFFFE, "User": 0xEFFFFFFD, "Pid": 0xEFFFFFFC,
                "PidForChildren": 0xEFFFFFFC, "Cgroup": 0xEFFFFFFB, "Time": 0xEFFFFFFA,
                "TimeForChildren": 0xEFFFFFFA}
CAPABILITY_TYPES = ("Effective", "Inheritable", "Permitted")

# ------------------------------------------------------------------ actions (id)
ACTIONS: dict[str, int] = {
    "Post": 0, "Sigkill": 2, "Override": 4, "GetUrl": 6, "DnsLookup": 7, "NoPost": 8,
    "Signal": 9, "TrackSock": 10, "UntrackSock": 11, "NotifyEnforcer": 12,
    "CleanupEnforcerNotification": 13, "Set": 14,
}
REMOVED_ACTIONS = {"FollowFD": 1, "UnfollowFD": 3, "CopyFD": 5}
# The event's `actions` word: bit (1 << id) per action of the matched selector, and in
# bits 16-20 the id + 1 of the last one in policy order: Tetragon reports that one
# (do_action sets msg->action per action run). Ids stay below 16; bits 30/31 are flags.
LAST_ACTION_SHIFT = 16
LAST_ACTION_MASK = 0x1F << LAST_ACTION_SHIFT
LSM_ACTIONS = frozenset({"Sigkill", "Signal", "NoPost", "Override", "Post"})
IMPLEMENTED_ACTIONS = frozenset({"Post", "NoPost", "Sigkill", "Signal", "Override"})
UNSUPPORTED_ACTIONS = {
    "GetUrl": "GetUrl makes the node fetch a URL when the selector matches; a single host "
              "has no event relay for it",
    "DnsLookup": "DnsLookup makes the node resolve a name when the selector matches; a "
                 "single host has no event relay for it",
    "TrackSock": "socket tracking (TrackSock) is not implemented: it needs Tetragon's "
                 "socktrack map shared between hooks",
    "UntrackSock": "socket tracking (UntrackSock) is not implemented: it needs Tetragon's "
                   "socktrack map shared between hooks",
    "NotifyEnforcer": "NotifyEnforcer needs spec.enforcers, which are not implemented",
    "CleanupEnforcerNotification": "CleanupEnforcerNotification needs spec.enforcers, which "
                                   "are not implemented",
    "Set": "the Set action (USDT argument rewrite into user memory) is not implemented",
}

# ------------------------------------------------------------------ argument types
ARG_TYPES = (
    "auto", "int", "sint8", "int8", "uint8", "sint16", "int16", "uint16", "uint32", "sint32",
    "int32", "ulong", "uint64", "size_t", "long", "sint64", "int64", "char_buf", "char_iovec",
    "skb", "sock", "sockaddr", "socket", "sockaddr_un", "string", "fd", "file", "filename",
    "path", "nop", "bpf_attr", "perf_event", "bpf_map", "user_namespace", "capability",
    "kiocb", "iov_iter", "cred", "const_buf", "load_info", "module", "syscall64",
    "kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective", "linux_binprm",
    "data_loc", "net_device", "bpf_cmd", "dentry", "bpf_prog",
)
# Integer types: C type, signedness. `fd`, `capability`, `bpf_cmd` are integers too.
INT_TYPES: dict[str, tuple[int, bool]] = {
    "int": (4, True), "sint8": (1, True), "int8": (1, True), "uint8": (1, False),
    "sint16": (2, True), "int16": (2, True), "uint16": (2, False), "uint32": (4, False),
    "sint32": (4, True), "int32": (4, True), "ulong": (8, False), "uint64": (8, False),
    "size_t": (8, False), "long": (8, True), "sint64": (8, True), "int64": (8, True),
    "fd": (4, True), "capability": (4, True), "bpf_cmd": (4, True), "syscall64": (8, False),
}
STRING_TYPES = frozenset({"string", "filename", "char_buf", "data_loc"})
PATH_TYPES = frozenset({"file", "path", "dentry", "linux_binprm"})
# Types bpfpolicy captures and matches; the rest are recognised and reported.
NET_TYPES = frozenset({"sock", "skb", "sockaddr", "socket"})
# Reported in events but not matchable (Tetragon has no operators for them either).
REPORT_ONLY_TYPES = frozenset({"cred", "user_namespace"})
IMPLEMENTED_TYPES = (frozenset(INT_TYPES) | STRING_TYPES | PATH_TYPES | NET_TYPES | REPORT_ONLY_TYPES
                     | {"nop", "net_device", "module"})

# ------------------------------------------------------------------ limits (code)
MAX_SELECTORS = 5
MAX_ARG_MATCHERS = 5  # matchArgs + matchData per selector
MAX_ACTIONS = 3
MAX_INT_VALUES = 4
MAX_PID_VALUES = 4
MAX_BINARY_SELECTORS = 1
MAX_ARGS = 5  # args + data per hook
MAX_ARG_INDEX = 4  # kprobe / lsm arg index (0-based, 5 args)
MAX_RAW_TP_INDEX = 5
MAX_STRING_EQUAL = 4096  # >= 5.11 (510 before, 144 before 5.4)
MAX_PREFIX = 256
MAX_POSTFIX = 127
MAX_FILE_VALUES = 8
MAX_MESSAGE = 256
MAX_TAGS = 16
MAX_NS_VALUES = 4
# Integer operands longer than this are not numbers any argument can hold (a uint64 is
# 20 digits, 0x + 16 hex, 0b + 64 bits); refusing them early keeps int() cheap.
MAX_INT_TEXT = 80
# Tracepoint `args` index counts the format's fields; 0..3 are the common_* header fields
# (common_type, common_flags, common_preempt_count, common_pid), which are not decoded.
TP_FIRST_FIELD = 4
# Widths of the socket fields network operators compare: skc_family and sk_protocol are
# 16-bit, skc_state is an unsigned char.
NET_FIELD_MAX = {"Family": 0xFFFF, "Protocol": 0xFFFF, "State": 0xFF}
# rateLimit windows are compared in nanoseconds in a __u64: 2^64 ns is ~584 years.
MAX_RATE_LIMIT_S = (2**64 - 1) // 1_000_000_000
# PIDs are compared as 32-bit unsigned values (tgid); the kernel's limit is 2^22.
MAX_PID = 0xFFFFFFFF
# matchBinaries followChildren: the executables compared are the process's and its
# ancestors' up `real_parent`, this many tasks in all — the bound followForks walks too
# (Tetragon's execve_map walk), a loop the verifier accepts with a path walk per level.
FOLLOW_CHILDREN_DEPTH = 10
# bpfpolicy's own capture sizes (the ring-buffer event layout).
CAPTURE_STRING = 256  # bytes of a string / path argument kept in events and compared
