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
from . import seccomp_profile  # noqa: F401
from . import network_policy  # noqa: F401
from . import tracing_policy  # noqa: F401
from . import xdp_blocklist  # noqa: F401
