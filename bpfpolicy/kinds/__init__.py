"""Policy kinds. Each import registers one kind (see base.Kind.__init_subclass__)."""

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
