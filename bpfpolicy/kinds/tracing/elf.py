"""Just enough ELF64 (little-endian) to place a uprobe: function symbols (`.symtab` and
`.dynsym`) with their file offsets, and the `.note.stapsdt` USDT notes.

A uprobe is attached at a *file offset* (the kernel maps it through the inode), so a
symbol's virtual address is turned into an offset through the PT_LOAD segment holding it,
the way libbpf's `elf_find_func_offset` does. Written with `struct` to keep the package
free of an ELF dependency for these two tables.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
ELFCLASS64, ELFDATA2LSB = 2, 1
PT_LOAD = 1
SHT_SYMTAB, SHT_DYNSYM, SHT_NOTE = 2, 11, 7
STT_FUNC, STT_GNU_IFUNC = 2, 10
SHN_UNDEF = 0
# A binary larger than this is not read whole (a uprobe target is an executable or a
# shared library; 1 GiB bounds the memory a hostile path could make us use).
MAX_ELF_BYTES = 1 << 30


class ElfError(ValueError):
    """The file is not an ELF64 little-endian object we can read."""


@dataclass(frozen=True)
class UsdtNote:
    """One `.note.stapsdt` probe: where to attach (file offset), its semaphore's file
    offset (0 when it has none) and its argument spec (`-4@%edi 8@-8(%rbp)`)."""

    provider: str
    name: str
    offset: int
    semaphore: int
    args: str


class Elf:
    def __init__(self, data: bytes) -> None:
        if data[:4] != ELF_MAGIC or len(data) < 64:
            raise ElfError("not an ELF file")
        if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
            raise ElfError("only 64-bit little-endian ELF objects are supported")
        self.data = data
        (self.phoff, self.shoff, _flags, _ehsize, self.phentsize, self.phnum, self.shentsize,
         self.shnum, self.shstrndx) = struct.unpack_from("<QQIHHHHHH", data, 0x20)
        self.sections = [self._section(i) for i in range(self.shnum)]
        self.segments = [struct.unpack_from("<IIQQQQQQ", data, self.phoff + i * self.phentsize)
                         for i in range(self.phnum)]

    @classmethod
    def open(cls, path: str | Path) -> Elf:
        p = Path(path)
        if p.stat().st_size > MAX_ELF_BYTES:
            raise ElfError(f"larger than {MAX_ELF_BYTES} bytes")
        return cls(p.read_bytes())

    def _section(self, i: int) -> tuple[int, int, int, int, int, int]:
        """(name offset, type, addr, offset, size, link) of section header i."""
        name, stype, _fl, addr, off, size, link, _info, _al, _ent = struct.unpack_from(
            "<IIQQQQIIQQ", self.data, self.shoff + i * self.shentsize)
        return name, stype, addr, off, size, link

    def _str(self, table: int, off: int) -> str:
        start = self.sections[table][3] + off
        end = self.data.index(b"\0", start)
        return self.data[start:end].decode(errors="replace")

    def section_name(self, i: int) -> str:
        return self._str(self.shstrndx, self.sections[i][0])

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        for ptype, _flags, off, va, _pa, filesz, _memsz, _align in self.segments:
            if ptype == PT_LOAD and va <= vaddr < va + filesz:
                return vaddr - va + off
        return None

    def functions(self) -> dict[str, int]:
        """Defined function symbols -> file offset (versions like `@@GLIBC_2.2.5` dropped)."""
        out: dict[str, int] = {}
        for _name, stype, _addr, off, size, link in self.sections:
            if stype not in (SHT_SYMTAB, SHT_DYNSYM):
                continue
            for k in range(size // 24):
                st_name, info, _other, shndx, value, _sz = struct.unpack_from("<IBBHQQ", self.data, off + k * 24)
                if info & 0xF not in (STT_FUNC, STT_GNU_IFUNC) or shndx == SHN_UNDEF or not value:
                    continue
                name = self._str(link, st_name).split("@", 1)[0]
                fo = self.vaddr_to_offset(value)
                if name and fo is not None:
                    out.setdefault(name, fo)
        return out

    def symbol_at_offset(self, file_offset: int) -> tuple[str, int] | None:
        """The function whose body holds `file_offset` (a mapped address minus the mapping
        start plus its file offset), as (name, offset into it): stack symbolisation."""
        vaddr = self.offset_to_vaddr(file_offset)
        if vaddr is None:
            return None
        starts, table = self._sorted_functions()
        k = bisect.bisect_right(starts, vaddr) - 1
        if k < 0:
            return None
        start, size, name = table[k]
        return (name, vaddr - start) if vaddr < start + max(size, 1) else None

    def offset_to_vaddr(self, file_offset: int) -> int | None:
        for ptype, _flags, off, va, _pa, filesz, _memsz, _align in self.segments:
            if ptype == PT_LOAD and off <= file_offset < off + filesz:
                return file_offset - off + va
        return None

    def _sorted_functions(self) -> tuple[list[int], list[tuple[int, int, str]]]:
        """(start vaddrs, [(start, size, name)]) of defined functions, sorted; built once."""
        cached = self.__dict__.get("_by_addr")
        if cached is None:
            rows: dict[int, tuple[int, int, str]] = {}
            for _name, stype, _addr, off, size, link in self.sections:
                if stype not in (SHT_SYMTAB, SHT_DYNSYM):
                    continue
                for k in range(size // 24):
                    st_name, info, _o, shndx, value, sz = struct.unpack_from("<IBBHQQ", self.data, off + k * 24)
                    if info & 0xF in (STT_FUNC, STT_GNU_IFUNC) and shndx != SHN_UNDEF and value:
                        rows.setdefault(value, (value, sz, self._str(link, st_name).split("@", 1)[0]))
            table = sorted(rows.values())
            cached = self.__dict__["_by_addr"] = ([r[0] for r in table], table)
        return cached

    def usdt_notes(self) -> list[UsdtNote]:
        """`.note.stapsdt` entries (type 3, owner "stapsdt"): pc, base, semaphore, then
        provider, name, args as C strings. The pc is adjusted by the `.stapsdt.base`
        section's address (prelink) as systemtap's sdt.h documents."""
        base_addr = next((s[2] for i, s in enumerate(self.sections)
                          if self.section_name(i) == ".stapsdt.base"), None)
        notes: list[UsdtNote] = []
        for i, (_n, stype, _addr, off, size, _link) in enumerate(self.sections):
            if stype != SHT_NOTE or self.section_name(i) != ".note.stapsdt":
                continue
            pos, end = off, off + size
            while pos + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from("<III", self.data, pos)
                owner = self.data[pos + 12:pos + 12 + namesz].rstrip(b"\0")
                desc = pos + 12 + _align4(namesz)
                if ntype == 3 and owner == b"stapsdt":
                    notes.append(self._note(desc, descsz, base_addr))
                pos = desc + _align4(descsz)
        return notes

    def _note(self, desc: int, descsz: int, base_addr: int | None) -> UsdtNote:
        pc, base, sema = struct.unpack_from("<QQQ", self.data, desc)
        provider, name, args = self.data[desc + 24:desc + descsz].split(b"\0")[:3]
        if base_addr is not None:
            pc += base_addr - base
            if sema:
                sema += base_addr - base
        offset = self.vaddr_to_offset(pc)
        sem_off = self._sema_offset(sema) if sema else 0
        return UsdtNote(provider.decode(), name.decode(), offset or 0, sem_off, args.decode())

    def _sema_offset(self, vaddr: int) -> int:
        """The semaphore lives in `.probes` (a data section): its file offset is the one
        the kernel's ref_ctr_offset expects."""
        for _n, stype, addr, off, size, _link in self.sections:
            if stype != 8 and addr <= vaddr < addr + size:  # 8 = SHT_NOBITS
                return vaddr - addr + off
        return self.vaddr_to_offset(vaddr) or 0


def _align4(n: int) -> int:
    return (n + 3) & ~3
