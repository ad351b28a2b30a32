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


_KIND_PTR, _KIND_TYPEDEF, _KIND_VOLATILE, _KIND_CONST, _KIND_RESTRICT = 2, 8, 9, 10, 11
_KIND_TYPE_TAG = 18


@dataclass
class Member:
    name: str
    kind: str  # "ptr" (to struct `target`), "struct" (embedded `target`), "array", "int", "other"
    target: str = ""  # struct/union name for ptr/struct members


@dataclass
class Btf:
    funcs: dict[str, int] = field(default_factory=dict)  # name -> parameter count
    structs: dict[str, list[str]] = field(default_factory=dict)  # trace_event_raw_* members
    digest: str = ""
    # Raw sections and per-type offsets, decoded on demand (resolve paths, parameter types).
    _types: bytes = b""
    _strs: bytes = b""
    _pos: list[int] = field(default_factory=list)  # type id -> offset in _types
    _func_proto: dict[str, int] = field(default_factory=dict)  # function -> FUNC_PROTO id
    _struct_ids: dict[str, int] = field(default_factory=dict)  # struct/union name -> type id

    def _name(self, off: int) -> str:
        end = self._strs.index(b"\0", off)
        return self._strs[off:end].decode(errors="replace")

    def _header(self, tid: int) -> tuple[int, int, int, int]:
        """(name_off, kind, vlen, size_or_type) of type `tid`."""
        name_off, info, size_or_type = struct.unpack_from("<III", self._types, self._pos[tid])
        return name_off, (info >> 24) & 0x1F, info & 0xFFFF, size_or_type

    def _strip(self, tid: int) -> int:
        """Skip typedefs and qualifiers."""
        for _ in range(32):
            if tid <= 0 or tid >= len(self._pos):
                return 0
            _, kind, _, ref = self._header(tid)
            if kind not in (_KIND_TYPEDEF, _KIND_VOLATILE, _KIND_CONST, _KIND_RESTRICT, _KIND_TYPE_TAG):
                return tid
            tid = ref
        return 0

    def _describe(self, tid: int) -> Member:
        tid = self._strip(tid)
        if not tid:
            return Member("", "other")
        name_off, kind, _, ref = self._header(tid)
        if kind == _KIND_PTR:
            target = self._strip(ref)
            if target:
                t_name, t_kind, _, _ = self._header(target)
                if t_kind in (_KIND_STRUCT, _KIND_UNION) and t_name:
                    return Member("", "ptr", self._name(t_name))
            return Member("", "ptr")
        if kind in (_KIND_STRUCT, _KIND_UNION):
            return Member("", "struct", self._name(name_off) if name_off else f"#{tid}")
        if kind == _KIND_ARRAY:
            return Member("", "array")
        if kind in (_KIND_INT, _KIND_ENUM, _KIND_ENUM64):
            return Member("", "int")
        return Member("", "other")

    def param(self, func: str, index: int) -> Member | None:
        """The type of parameter `index` of `func`."""
        proto = self._func_proto.get(func)
        if proto is None:
            return None
        _, _, vlen, _ = self._header(proto)
        if index >= vlen:
            return None
        _, ptype = struct.unpack_from("<II", self._types, self._pos[proto] + 12 + 8 * index)
        return self._describe(ptype)

    def member(self, struct_name: str, name: str) -> Member | None:
        """Member `name` of a struct/union, looking into anonymous members as C does."""
        tid = self._struct_ids.get(struct_name)
        if tid is None and struct_name.startswith("#"):
            tid = int(struct_name[1:])
        return self._member(tid, name, 0) if tid else None

    def _member(self, tid: int, name: str, depth: int) -> Member | None:
        _, kind, vlen, _ = self._header(tid)
        if kind not in (_KIND_STRUCT, _KIND_UNION) or depth > 4:
            return None
        base = self._pos[tid] + 12
        for m in range(vlen):
            m_name_off, m_type, _ = struct.unpack_from("<III", self._types, base + 12 * m)
            m_name = self._name(m_name_off) if m_name_off else ""
            if m_name == name:
                d = self._describe(m_type)
                return Member(name, d.kind, d.target)
            if not m_name:
                inner = self._strip(m_type)
                found = self._member(inner, name, depth + 1) if inner else None
                if found:
                    return found
        return None


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
    out = Btf(_types=types, _strs=strs, _pos=[0])
    pos, tid = 0, 1
    while pos < len(types):
        out._pos.append(pos)
        name_off, info, size_or_type = struct.unpack_from("<III", types, pos)
        pos += 12
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind in (_KIND_INT, _KIND_VAR, _KIND_DECL_TAG):
            pos += 4
        elif kind == _KIND_ARRAY:
            pos += 12
        elif kind in (_KIND_STRUCT, _KIND_UNION):
            sname = name(name_off) if name_off else ""
            if sname and vlen:
                out._struct_ids.setdefault(sname, tid)
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
        out._func_proto[fname] = proto
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
    from ..resources import cache_dir

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
