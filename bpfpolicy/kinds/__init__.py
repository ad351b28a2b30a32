"""Policy kinds: one package per kind, each registered by one import line below
(subclassing base.Kind registers it). Kinds never import each other.

    base     the Kind contract (parse, check, compile), Reporter, CompileContext, Artifact
    target   the target kernel in one place: version, arch, BTF, probed features
    btf      a small reader for kernel BTF (used by the tracing kind and target)
    vectors  shared test vectors: one Ethernet frame builder, one kernel-test.txt writer
    xdp/     XDPBlocklist         netpol/   NetworkPolicy (Cilium L3/L4)
    seccomp/ SeccompProfile       tracing/  TracingPolicy (Tetragon)

A new kind is one package here plus one registration line (docs/ARCHITECTURE.md).
"""

from .base import (
    KINDS,
    Artifact,
    CompileContext,
    ForeignFormat,
    Identified,
    Kind,
    Reporter,
    identify,
)

__all__ = [
    "KINDS", "Artifact", "CompileContext", "ForeignFormat", "Identified", "Kind", "Reporter", "identify",
]

# Registration: one line per kind (kept one import per line on purpose).
# isort: skip_file
from .seccomp import kind as seccomp_profile  # noqa: F401
from .netpol import kind as network_policy  # noqa: F401
from .tracing import kind as tracing_policy  # noqa: F401
from .xdp import kind as xdp_blocklist  # noqa: F401
