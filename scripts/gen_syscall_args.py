#!/usr/bin/env python3
"""Generate bpfpolicy/kinds/seccomp/argtypes.py: the C type and width of every syscall argument.

The kernel passes each syscall argument in a 64-bit register but a handler declared
`int flags` uses only the low 32 bits (`__se_sys_*` casts the long to the declared
type). A filter that compares all 64 bits of such an argument is bypassed by a caller
that sets the high word. This script derives, for each ABI we have a syscall table for,
which arguments the kernel declares narrower than 64 bits -- from the kernel's own
source, not from a hand-written list:

1. **Entry points**: which function serves each syscall of each ABI:
   x86_64 / x32  arch/x86/entry/syscalls/syscall_64.tbl (abi common/64 resp. common/x32)
   i386          arch/x86/entry/syscalls/syscall_32.tbl (the compat entry when there is
                 one: that is what a 64-bit kernel runs for i386 callers)
   aarch64       arch/arm64/tools/syscall_64.tbl (abi common, 64 and arm64's
                 renameat/rlimit/memfd_secret)
2. **Prototypes**: every `SYSCALL_DEFINEn(name, type, arg, ...)` and
   `COMPAT_SYSCALL_DEFINEn(...)` in the tree's .c files -- the arch's own directory
   first (arch/x86 without arch/x86/um, arch/arm64), then generic code (mm/nommu.c
   excluded).
3. **Typedefs resolved by the compiler**: each type name is looked up in the BTF of
   a 64-bit x86 kernel (`/sys/kernel/btf/vmlinux` or `--btf FILE`), following
   TYPEDEF/CONST/VOLATILE to an INT/ENUM/PTR and taking its size. C's own base types
   (`int`, `unsigned long`, ...) and pointers are sized by the LP64 model of the 64-bit
   ABIs (i386: every argument is a 32-bit register anyway; its entries only add the
   16-bit `old_uid_t` of the uid16 calls).

    python3 scripts/gen_syscall_args.py                 # fetch linux-source from sid
    python3 scripts/gen_syscall_args.py --src DIR       # an extracted kernel tree

The fetch uses a private apt configuration in a temp dir (the host's apt state is not
touched) to download Debian's `linux-source` of the same suite as the syscall tables.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bpfpolicy" / "kinds" / "seccomp" / "argtypes.py"
sys.path.insert(0, str(ROOT))

from bpfpolicy.syscalls.tables import TABLES  # noqa: E402

# widths of C's base types in the LP64 model (x86_64, x32's kernel side, aarch64)
BASE_BITS = {"char": 8, "short": 16, "int": 32, "long": 64, "long long": 64, "_Bool": 8, "bool": 8}
_QUAL = {"const", "volatile", "signed", "unsigned", "__user", "__force", "restrict", "__restrict"}
_DEFINE = re.compile(r"\b(COMPAT_)?SYSCALL_DEFINE([0-6])\s*\(")
ARM64_ABIS = {"common", "64", "renameat", "rlimit", "memfd_secret"}


def fetch_source(suite: str, work: Path) -> tuple[Path, str]:
    (work / "lists" / "partial").mkdir(parents=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True)
    sources = work / "sources.list"
    sources.write_text("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                       f"http://deb.debian.org/debian {suite} main\n")
    opts = [f"-oDir::Etc::SourceList={sources}", "-oDir::Etc::SourceParts=/nonexistent",
            f"-oDir::State::Lists={work / 'lists'}", f"-oDir::Cache={work / 'cache'}",
            "-oAPT::Sandbox::User=root"]
    subprocess.run(["apt-get", *opts, "-qq", "update"], check=True)
    dep = subprocess.run(["apt-cache", *opts, "depends", "linux-source"], check=True,
                         capture_output=True, text=True).stdout
    pkg = re.search(r"Depends: (linux-source-[\d.]+)", dep).group(1)
    subprocess.run(["apt-get", *opts, "-qq", "download", pkg], check=True, cwd=work)
    deb = next(work.glob(f"{pkg}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
    tarball = next((work / "x" / "usr" / "src").glob("linux-source-*.tar.xz"))
    subprocess.run(["tar", "-C", str(work), "-xJf", str(tarball), "--wildcards", "*.c", "*.tbl", "*/Makefile"],
                   check=True)
    return next(work.glob("linux-source-*/")), deb.name.split("_")[1]


# ---------------------------------------------------------------------------- BTF


def load_btf(path: Path) -> dict[str, int]:
    """typedef/enum name -> width in bits, resolved through the BTF type graph."""
    text = subprocess.run(["bpftool", "btf", "dump", "file", str(path)], check=True,
                          capture_output=True, text=True).stdout
    types: dict[int, tuple[str, str, dict[str, str]]] = {}
    for line in text.splitlines():
        m = re.match(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$", line)
        if m:
            attrs = dict(re.findall(r"(\w+)=(\S+)", m.group(4)))
            types[int(m.group(1))] = (m.group(2), m.group(3), attrs)

    def bits(tid: int, depth: int = 0) -> int | None:
        kind, _name, attrs = types.get(tid, ("VOID", "", {}))
        if kind in ("INT", "ENUM", "ENUM64"):
            return int(attrs["size"]) * 8
        if kind == "PTR":
            return 64
        if kind in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG") and depth < 32:
            return bits(int(attrs["type_id"]), depth + 1)
        return None  # struct/union/func: not an integer argument

    out: dict[str, int] = {}
    for tid, (kind, name, _attrs) in types.items():
        if kind in ("TYPEDEF", "ENUM", "ENUM64") and name != "(anon)":
            b = bits(tid)
            if b is not None:
                out.setdefault(("enum " if kind != "TYPEDEF" else "") + name, b)
    return out


def type_bits(ctype: str, btf: dict[str, int]) -> int:
    t = ctype.replace("*", " * ").split()
    if "*" in t:
        return 64
    words = [w for w in t if w not in _QUAL]
    if not words:  # "unsigned", "signed"
        return 32
    spelled = " ".join(words)
    if spelled in ("long long", "long long int"):
        return 64
    if words[0] in BASE_BITS and all(w in ("int", "long", "short", "char") for w in words):
        return BASE_BITS[words[0]]
    if words[0] == "enum":
        return btf.get(spelled, 32)
    if len(words) == 1 and words[0] in btf:
        return btf[words[0]]
    raise SystemExit(f"gen_syscall_args: cannot size the C type {ctype!r}")


# ---------------------------------------------------------------------------- source


def parse_defines(src: Path) -> dict[tuple[bool, str], list[tuple[str, list[str]]]]:
    """(compat?, name) -> [(file, [arg types])] for every *SYSCALL_DEFINEn in the tree."""
    out: dict[tuple[bool, str], list[tuple[str, list[str]]]] = {}
    for path in sorted(src.rglob("*.c")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if "SYSCALL_DEFINE" not in text:
            continue
        rel = str(path.relative_to(src))
        for m in _DEFINE.finditer(text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            parts = [p.strip() for p in re.sub(r"\s+", " ", text[m.end():i - 1]).split(",")]
            n = int(m.group(2))
            if len(parts) != 1 + 2 * n or not re.fullmatch(r"\w+", parts[0]):
                continue  # a macro's own definition, not a syscall
            out.setdefault((bool(m.group(1)), parts[0]), []).append((rel, parts[1::2]))
    return out


def pick(defs: dict, entry: str, arch_dir: str) -> tuple[str, list[str]] | None:
    compat = entry.startswith("compat_sys_")
    name = entry.removeprefix("compat_sys_") if compat else entry.removeprefix("sys_")
    cands = defs.get((compat, name), [])
    mine = [d for d in cands if d[0].startswith(arch_dir + "/") and not d[0].startswith("arch/x86/um/")]
    generic = [d for d in cands if not d[0].startswith("arch/") and d[0] != "mm/nommu.c"]
    for group in (mine, generic):
        if group:
            if len({tuple(d[1]) for d in group}) > 1:
                # config-dependent variants (clone's CLONE_BACKWARDS*): merged per position
                # by the caller, the widest type winning (all 64 bits compared)
                CONFLICTS.append(entry)
                n = max(len(d[1]) for d in group)
                merged = [max((d[1][i] for d in group if i < len(d[1])), key=_width_key) for i in range(n)]
                return group[0][0], merged
            return group[0]
    return None


CONFLICTS: list[str] = []
_BTF: dict[str, int] = {}


def _width_key(ctype: str) -> int:
    return type_bits(ctype, _BTF)


def read_tbl(path: Path, abis: set[str], compat_col: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        cols = line.split("#", 1)[0].split()
        if len(cols) >= 4 and cols[1] in abis:
            out[cols[2]] = cols[4] if compat_col and len(cols) >= 5 else cols[3]
    return out


def generate(src: Path, btf: dict[str, int]) -> tuple[dict[str, dict[str, tuple]], list[str]]:
    defs = parse_defines(src)
    _BTF.update(btf)
    tbl = src / "arch" / "x86" / "entry" / "syscalls"
    entries = {
        "x86_64": (read_tbl(tbl / "syscall_64.tbl", {"common", "64"}), "arch/x86"),
        "x32": (read_tbl(tbl / "syscall_64.tbl", {"common", "x32"}), "arch/x86"),
        "i386": (read_tbl(tbl / "syscall_32.tbl", {"i386"}, compat_col=True), "arch/x86"),
        "aarch64": (read_tbl(src / "arch" / "arm64" / "tools" / "syscall_64.tbl", ARM64_ABIS), "arch/arm64"),
    }
    result: dict[str, dict[str, tuple]] = {}
    missing: list[str] = []
    for abi, (table, arch_dir) in entries.items():
        result[abi] = {}
        for name in sorted(TABLES[abi]):
            entry = table.get(name)
            if not entry or entry == "sys_ni_syscall":
                continue
            d = pick(defs, entry, arch_dir)
            if d is None:
                missing.append(f"{abi}:{name} ({entry})")
                continue
            args = []
            for ctype in d[1]:
                bits = type_bits(ctype, btf)
                if abi == "i386":
                    bits = min(bits, 32)
                args.append((re.sub(r"\s*__user\s*", " ", ctype).replace(" *", "*").strip(), bits))
            result[abi][name] = (entry, d[0], tuple(args))
    return result, missing


def render(result: dict[str, dict[str, tuple]], provenance: str) -> str:
    lines = [
        f'"""Syscall argument types GENERATED by scripts/gen_syscall_args.py -- do not edit.\n\n{provenance}\n"""',
        "",
        "# ABI -> {syscall name: ((C type, width in bits), ...)} in argument order, as the",
        "# kernel function serving that ABI's entry declares them (see the generator).",
        "ARGS: dict[str, dict[str, tuple[tuple[str, int], ...]]] = {",
    ]
    for abi, table in result.items():
        lines.append(f"    {abi!r}: {{")
        for name, (_entry, _file, args) in sorted(table.items()):
            lines.append(f"        {name!r}: {tuple(args)!r},")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="sid", help="Debian suite to take linux-source from")
    ap.add_argument("--src", type=Path, help="use an extracted kernel source tree instead")
    ap.add_argument("--btf", type=Path, default=Path("/sys/kernel/btf/vmlinux"),
                    help="BTF of a 64-bit x86 kernel, to resolve typedefs")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    btf = load_btf(args.btf)
    with tempfile.TemporaryDirectory(prefix="bpfpolicy-ksrc.") as tmp:
        src = args.src or fetch_source(args.suite, Path(tmp))[0]
        version = "unknown"
        mk = src / "Makefile"
        if mk.exists():  # the tree's own version: --src and a fetch of it write the same file
            v = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL) = (\d+)", mk.read_text(), re.M))
            version = f"{v.get('VERSION')}.{v.get('PATCHLEVEL')}.{v.get('SUBLEVEL')}"
        result, missing = generate(src, btf)
    counts = {abi: sum(1 for _ in t) for abi, t in result.items()}
    if counts["x86_64"] < 300:
        print(f"gen_syscall_args: only {counts['x86_64']} x86_64 prototypes found", file=sys.stderr)
        return 1
    provenance = (
        f"Source: Debian linux-source {version}: *SYSCALL_DEFINEn prototypes of the entry\n"
        "points in arch/x86/entry/syscalls/syscall_{64,32}.tbl and arch/arm64/tools/syscall_64.tbl;\n"
        "typedefs sized through the BTF of an x86_64 kernel. i386 widths are capped at 32.\n"
        "Regenerate: python3 scripts/gen_syscall_args.py [--suite SUITE | --src DIR]\n"
        + "Prototypes: " + ", ".join(f"{abi} {n}" for abi, n in counts.items())
        + (f"\nConfig-dependent prototypes, widest type per argument: {', '.join(sorted(set(CONFLICTS)))}"
           if CONFLICTS else "")
        + ("\nNo SYSCALL_DEFINE (assembly or asmlinkage entries; all 64 bits compared): "
           + ", ".join(missing) if missing else "")
    )
    args.out.write_text(render(result, provenance))
    print(f"wrote {args.out} ({provenance.splitlines()[-1][:200]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
