"""What filesystem a path lies on (statfs magic), for the bpffs-root checks."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

BPF_FS_MAGIC = 0xCAFE4A11


def statfs_magic(path: Path | str) -> int | None:
    """`statfs(2)` f_type of the filesystem holding `path`; None when statfs fails."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is the first word
    if libc.statfs(os.fsencode(str(path)), buf) != 0:
        return None
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def is_bpffs(path: Path | str) -> bool:
    return statfs_magic(path) == BPF_FS_MAGIC
