#!/usr/bin/env python3
"""Generate bpfpolicy/syscalls/tables.py from Linux UAPI headers.

The syscall numbers come from Debian's `linux-libc-dev` (which, since 6.x, is an
Architecture: all package carrying the UAPI headers of every architecture). Bookworm
ships 6.1, too old for the tables we want (>= 6.18), so by default this script fetches
the package from a newer suite with a *private* apt configuration in a temp dir: the
host's sources and package state are not touched.

    python3 scripts/gen_syscall_tables.py                 # fetch from sid, write the module
    python3 scripts/gen_syscall_tables.py --suite forky
    python3 scripts/gen_syscall_tables.py --uapi DIR      # DIR = .../usr/lib/linux/uapi

Sources per ABI (all `#define __NR_<name> <nr>` lines):
  x86_64  x86/asm/unistd_64.h
  i386    x86/asm/unistd_32.h
  x32     x86/asm/unistd_x32.h   (`__X32_SYSCALL_BIT + n`; stored with the bit set)
  aarch64 arm64/asm/unistd_64.h  (generated from the asm-generic table since 6.11),
          cross-checked against asm-generic/unistd.h preprocessed with arm64's
          __ARCH_WANT_* (the script fails if they disagree)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bpfpolicy" / "syscalls" / "tables.py"
X32_SYSCALL_BIT = 0x40000000
_DEFINE = re.compile(r"^#define\s+__NR_(\w+)\s+(?:\(__X32_SYSCALL_BIT\s*\+\s*)?(\d+)\)?\s*$")
# arm64's choices for the generic table (arch/arm64/include/uapi/asm/unistd.h).
ARM64_WANTS = ["__ARCH_WANT_RENAMEAT", "__ARCH_WANT_NEW_STAT", "__ARCH_WANT_SET_GET_RLIMIT",
               "__ARCH_WANT_SYS_CLONE3", "__ARCH_WANT_MEMFD_SECRET"]


def fetch_uapi(suite: str, work: Path) -> tuple[Path, str]:
    """Download linux-libc-dev from `suite` with a private apt state; return (uapi dir, version)."""
    (work / "lists" / "partial").mkdir(parents=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True)
    sources = work / "sources.list"
    sources.write_text(
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        f"http://deb.debian.org/debian {suite} main\n"
    )
    opts = [f"-oDir::Etc::SourceList={sources}", "-oDir::Etc::SourceParts=/nonexistent",
            f"-oDir::State::Lists={work / 'lists'}", f"-oDir::Cache={work / 'cache'}",
            "-oAPT::Sandbox::User=root"]
    subprocess.run(["apt-get", *opts, "-qq", "update"], check=True)
    subprocess.run(["apt-get", *opts, "-qq", "download", "linux-libc-dev"], check=True, cwd=work)
    deb = next(work.glob("linux-libc-dev_*.deb"))
    version = deb.name.split("_")[1]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
    return work / "x" / "usr" / "lib" / "linux" / "uapi", version


def parse_defines(text: str, x32: bool = False) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _DEFINE.match(line.strip())
        if not m or m.group(1).startswith(("syscalls", "arch_specific")):
            continue
        nr = int(m.group(2))
        out[m.group(1)] = nr | X32_SYSCALL_BIT if x32 else nr
    return out


def aarch64_table(uapi: Path) -> dict[str, int]:
    """arm64's generated unistd_64.h, cross-checked against asm-generic/unistd.h
    preprocessed with arm64's configuration (the source both come from)."""
    generic = asm_generic_table(uapi)
    direct = uapi / "arm64" / "asm" / "unistd_64.h"
    table = parse_defines(direct.read_text()) if direct.exists() else {}
    if table and generic and table != generic:
        diff = sorted(set(table.items()) ^ set(generic.items()))[:8]
        raise SystemExit(f"gen_syscall_tables: arm64 unistd_64.h and asm-generic disagree: {diff}")
    return table or generic


def asm_generic_table(uapi: Path) -> dict[str, int]:
    include = uapi.parent.parent.parent / "include"
    generic = include / "asm-generic" / "unistd.h"
    if not generic.exists():
        return {}
    cmd = ["gcc", "-E", "-dM", "-P", "-undef", "-D__aarch64__=1", "-D__CHAR_BIT__=8",
           *[f"-D{w}=1" for w in ARM64_WANTS if "=" not in w],
           f"-I{include / 'aarch64-linux-gnu'}", f"-I{include}", str(generic)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    raw: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^#define\s+__NR(3264)?_(\w+)\s+(\S+)\s*$", line)
        if m:
            raw[("3264_" if m.group(1) else "") + m.group(2)] = m.group(3)
    table: dict[str, int] = {}
    for name, value in raw.items():
        if name.startswith("3264_") or name in ("syscalls", "arch_specific_syscall"):
            continue
        alias = re.match(r"^__NR3264_(\w+)$", value)
        if alias:
            value = raw.get("3264_" + alias.group(1), "")
        if value.isdigit():
            table[name] = int(value)
    return table


def render(tables: dict[str, dict[str, int]], provenance: str) -> str:
    lines = [
        f'"""Syscall tables GENERATED by scripts/gen_syscall_tables.py -- do not edit.\n\n{provenance}\n"""',
        "",
        "# ABI -> {syscall name: number}; x32 numbers include __X32_SYSCALL_BIT (0x40000000).",
        "TABLES: dict[str, dict[str, int]] = {",
    ]
    for abi, table in tables.items():
        lines.append(f"    {abi!r}: {{")
        for name, nr in sorted(table.items(), key=lambda kv: (kv[1], kv[0])):
            lines.append(f"        {name!r}: {nr:#x}," if abi == "x32" else f"        {name!r}: {nr},")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="sid", help="Debian suite to take linux-libc-dev from")
    ap.add_argument("--uapi", type=Path, help="use an extracted .../usr/lib/linux/uapi instead")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bpfpolicy-uapi.") as tmp:
        if args.uapi:
            uapi, version = args.uapi, "unknown (--uapi)"
        else:
            uapi, version = fetch_uapi(args.suite, Path(tmp))
        x86 = uapi / "x86" / "asm"
        tables = {
            "x86_64": parse_defines((x86 / "unistd_64.h").read_text()),
            "i386": parse_defines((x86 / "unistd_32.h").read_text()),
            "x32": parse_defines((x86 / "unistd_x32.h").read_text(), x32=True),
            "aarch64": aarch64_table(uapi),
        }
    for abi, table in tables.items():
        if len(table) < 250:
            print(f"gen_syscall_tables: {abi}: only {len(table)} syscalls parsed", file=sys.stderr)
            return 1
    if "listns" not in tables["x86_64"]:  # listns (470) arrived in 6.18
        print("gen_syscall_tables: headers older than Linux 6.18 (no listns)", file=sys.stderr)
        return 1
    provenance = (
        f"Source: Debian linux-libc-dev {version} (suite {args.suite}), UAPI headers\n"
        "x86/asm/unistd_64.h, unistd_32.h, unistd_x32.h and arm64/asm/unistd_64.h.\n"
        "Regenerate: python3 scripts/gen_syscall_tables.py [--suite SUITE]\n"
        + "Counts: " + ", ".join(f"{abi} {len(t)}" for abi, t in tables.items())
    )
    args.out.write_text(render(tables, provenance))
    print(f"wrote {args.out} ({provenance.splitlines()[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
