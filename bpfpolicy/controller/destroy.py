"""Remove everything bpfpolicy loaded: the inventory's policies first (detach, unpin,
forget), then every pin left under the bpffs root. bpffs has no recursive rmdir, so
`rmtree_pins` is also what staging GC and prune use to clear a pin directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import HostConfig
from .paths import check_inside


def rmtree_pins(d: Path, root: Path | None = None) -> None:
    """bpffs has no recursive rmdir: unlink pins, then remove directories bottom-up.
    With `root`, `d` must resolve inside it (a symlinked policy dir is never followed
    out of the bpffs root); os.walk does not follow symlinks below `d`."""
    top = root is not None and Path(d) == Path(root)
    if root is not None:
        check_inside(d.parent if d.is_symlink() and not top else d, root)
    if d.is_symlink() and not top:
        with contextlib.suppress(OSError):
            os.unlink(d)
        return
    if not d.exists():
        return
    for dirpath, dirnames, filenames in os.walk(d, topdown=False):
        for f in filenames:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(dirpath, f))
        for sub in dirnames:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(dirpath, sub))
    with contextlib.suppress(OSError):
        os.rmdir(d)


@dataclass
class DestroyResult:
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def destroy(cfg: HostConfig, on_removed: Callable[[str], None] | None = None,
            on_error: Callable[[str], None] | None = None) -> DestroyResult:
    """Prune every inventory policy (each logged as `Pruned`), then clear the bpffs root
    and the status; one policy that cannot be pruned does not stop the others."""
    from . import events
    from .apply import ApplyError, gc_staging, prune
    from .state import Store

    store = Store(cfg.state_dir)
    result = DestroyResult()
    with store.lock():
        gc_staging(cfg)
        for key, entry in store.inventory().items():
            try:  # every path prune touches is derived from the roots and checked (controller/paths.py)
                prune(cfg, key, entry, store)
            except ApplyError as e:
                result.errors.append(str(e))
                if on_error:
                    on_error(str(e))
                continue
            result.removed.append(key)
            if on_removed:
                on_removed(key)
            events.emit(cfg.events_path, "Pruned", "destroy", policy=key)
        rmtree_pins(cfg.bpffs_root, cfg.bpffs_root)
        status = store.status()
        status["policies"] = {}
        store.save_status(status)
    return result
