"""A small reader for kernel BTF (`/sys/kernel/btf/vmlinux`): just what the TracingPolicy
compiler needs to choose backends without the kernel's help.

* which functions exist (`security_X`, `bpf_lsm_X`, plain functions for fentry), and how
  many parameters they take (the LSM/fexit return value sits after the last one);
* the members of `struct trace_event_raw_<event>` (tracepoint field index -> name).

The file is world-readable, so this works unprivileged; it is parsed once per BTF hash.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

BTF_MAGIC = 0xEB9F
# kind -> size of the data following `struct btf_type` (vlen-scaled where noted)
_KIND_INT, _KIND_ARRAY, _KIND_STRUCT, _KIND_UNION, _KIND_ENUM = 1, 3, 4, 5, 6
_KIND_FUNC, _KIND_FUNC_PROTO, _KIND_VAR, _KIND_DATASEC = 12, 13, 14, 15
_KIND_DECL_TAG, _KIND_ENUM64 = 17, 19


@dataclass
class Btf:
    funcs: dict[str, int] = field(default_factory=dict)  # name -> parameter count
    structs: dict[str, list[str]] = field(default_factory=dict)  # trace_event_raw_* members
    digest: str = ""


def parse(data: bytes) -> Btf:
    magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != BTF_MAGIC:
        raise ValueError("not BTF (bad magic)")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    types = data[hdr_len + type_off: hdr_len + type_off + type_len]
    strs = data[hdr_len + str_off: hdr_len + str_off + str_len]

    def name(off: int) -> str:
        end = strs.index(b"\0", off)
        return strs[off:end].decode(errors="replace")

    protos: dict[int, int] = {}  # type id -> vlen (FUNC_PROTO)
    func_refs: list[tuple[str, int]] = []
    out = Btf()
    pos, tid = 0, 1
    while pos < len(types):
        name_off, info, size_or_type = struct.unpack_from("<III", types, pos)
        pos += 12
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind in (_KIND_INT, _KIND_VAR, _KIND_DECL_TAG):
            pos += 4
        elif kind == _KIND_ARRAY:
            pos += 12
        elif kind in (_KIND_STRUCT, _KIND_UNION):
            sname = name(name_off) if name_off else ""
            if kind == _KIND_STRUCT and sname.startswith("trace_event_raw_"):
                out.structs[sname] = [name(struct.unpack_from("<I", types, pos + 12 * m)[0])
                                      for m in range(vlen)]
            pos += 12 * vlen
        elif kind == _KIND_ENUM:
            pos += 8 * vlen
        elif kind == _KIND_FUNC_PROTO:
            protos[tid] = vlen
            pos += 8 * vlen
        elif kind in (_KIND_DATASEC, _KIND_ENUM64):
            pos += 12 * vlen
        elif kind == _KIND_FUNC:
            func_refs.append((name(name_off), size_or_type))
        tid += 1
    for fname, proto in func_refs:
        out.funcs[fname] = protos.get(proto, 0)
    return out


@cache
def _load(path: str, digest: str) -> Btf:
    btf = parse(Path(path).read_bytes())
    btf.digest = digest
    return btf


def load(path: Path) -> Btf:
    data = path.read_bytes()
    return _load(str(path), hashlib.sha256(data).hexdigest()[:16])


def host_btf(path: Path = Path("/sys/kernel/btf/vmlinux")) -> Btf | None:
    """This host's BTF, or None when the kernel has none (or it cannot be read)."""
    try:
        return load(path)
    except (OSError, ValueError, struct.error):
        return None


# ------------------------------------------------------------------ target kernels

_XZ = b"\xfd7zXZ\x00"
_ZSTD = b"\x28\xb5\x2f\xfd"
_GZ = b"\x1f\x8b\x08\x00"


def btf_from_vmlinuz(path: Path) -> bytes | None:
    """The `.BTF` section of a compressed kernel image (what extract-vmlinux does: find
    the payload by its magic, decompress, read the ELF section)."""
    import lzma
    import subprocess
    import zlib

    data = path.read_bytes()
    for magic in (_ZSTD, _XZ, _GZ):
        start = data.find(magic)
        while start >= 0:
            try:
                if magic == _XZ:
                    elf = lzma.LZMADecompressor().decompress(data[start:])
                elif magic == _GZ:
                    elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[start:])
                else:
                    elf = subprocess.run(["zstd", "-dcq"], input=data[start:], capture_output=True,
                                         check=False).stdout
            except (lzma.LZMAError, zlib.error, OSError):
                elf = b""
            btf = _elf_section(elf, b".BTF") if elf[:4] == b"\x7fELF" else None
            if btf:
                return btf
            start = data.find(magic, start + 1)
    return None


def _elf_section(elf: bytes, wanted: bytes) -> bytes | None:
    if elf[4] != 2:  # ELFCLASS64 only
        return None
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", elf, base)
        off, size = struct.unpack_from("<QQ", elf, base + 0x18)
        return name, off, size

    _, str_off, _ = header(shstrndx)
    for i in range(shnum):
        name, off, size = header(i)
        end = elf.index(b"\0", str_off + name)
        if elf[str_off + name:end] == wanted:
            return elf[off:off + size]
    return None


def target_btf(kernel: tuple[int, int]) -> Btf | None:
    """BTF of a matrix kernel whose image the kernel-test cache holds (paths.cache_dir()/
    kernels/<X.Y or X>/vmlinuz), extracted once; None when it is not cached."""
    from ..paths import cache_dir

    base = cache_dir() / "kernels"
    for key in (f"{kernel[0]}.{kernel[1]}", f"{kernel[0]}"):
        image = base / key / "vmlinuz"
        if not image.is_file():
            continue
        out = cache_dir() / "btf" / f"{key}-{image.stat().st_size}-{int(image.stat().st_mtime)}.btf"
        if not out.exists():
            raw = btf_from_vmlinuz(image)
            if raw is None:
                return None
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_bytes(raw)
            tmp.replace(out)
        try:
            return load(out)
        except (OSError, ValueError, struct.error):
            return None
    return None
