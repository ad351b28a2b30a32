"""Debian kernels for the matrix: resolve, download, extract, cache.

The kernels come from Debian's own archive (the fleet runs distro kernels, not
upstream builds), fetched with `apt-get download` against a PRIVATE sources list,
lists and cache under the cache directory, so the host's apt configuration is
never read or changed. Only `vmlinuz`, the few modules the runner needs and the
package's `config` and `System.map` (the kernel's own facts, for the compilers) are
kept; with a warm cache no network is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..kinds.target import parse_kernel_version
from ..resources import cache_dir

MIRROR = os.environ.get("BPFPOLICY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("BPFPOLICY_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# Built as modules by Debian: clsact (tc attach on kernels without tcx) and veth (the
# live-traffic stage's pair). `attach` lines use `lo` (generic XDP) and need neither.
MODULES = ("sch_ingress", "cls_bpf", "veth")
LISTS_MAX_AGE = 24 * 3600
# Kept from the package next to vmlinuz: the TracingPolicy compiler reads a target
# kernel's features from its own build config and its error-injection list from
# System.map (kinds/target.py matrix_facts) — without them `compile --kernel X` on a
# fresh machine would have to guess.
FACT_FILES = ("config", "System.map")


@dataclass(frozen=True)
class KernelSpec:
    """One Debian release's stock kernel for one architecture."""

    name: str  # matrix label: 5.10, 6.1, 6.12, 7
    suite: str  # Debian suite whose linux-image-<arch> we follow
    suites: tuple[str, ...]  # suites searched (incl. -security)
    arch: str = "amd64"  # Debian architecture: amd64 | arm64

    @property
    def dir(self) -> Path:
        """kernels/<member> for amd64 (the TracingPolicy compiler reads that layout),
        kernels/<member>-<arch> for the others."""
        return kernels_dir() / (self.name if self.arch == "amd64" else f"{self.name}-{self.arch}")

    def for_arch(self, arch: str) -> KernelSpec:
        return dataclasses.replace(self, arch=arch)


KERNELS: dict[str, KernelSpec] = {
    "5.10": KernelSpec("5.10", "bullseye", ("bullseye", "bullseye-security")),
    "6.1": KernelSpec("6.1", "bookworm", ("bookworm", "bookworm-security")),
    "6.12": KernelSpec("6.12", "trixie", ("trixie", "trixie-security")),
    "7": KernelSpec("7", "sid", ("sid",)),
}


@dataclass
class Kernel:
    """A fetched kernel: what to boot, and which Debian package it came from."""

    spec: KernelSpec
    vmlinuz: Path
    modules: list[Path]
    release: str  # uname -r, e.g. 6.12.117+deb13-amd64
    package: str  # e.g. linux-image-6.12.117+deb13-amd64=6.12.117-1

    @property
    def version(self) -> tuple[int, int]:
        return parse_kernel_version(self.release) or (0, 0)


class FetchError(RuntimeError):
    """The kernel is not cached and could not be downloaded (e.g. no network)."""


def kernels_dir() -> Path:
    """$BPFPOLICY_CACHE/kernels (default ~/.cache/bpfpolicy/kernels)."""
    return cache_dir() / "kernels"


def cached(spec: KernelSpec) -> Kernel | None:
    meta_file = spec.dir / "kernel.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    vmlinuz = spec.dir / "vmlinuz"
    if not vmlinuz.is_file():
        return None
    if not {f"{m}.ko" for m in MODULES} <= set(meta.get("modules", [])):
        return None  # cached before a module was added to MODULES: fetch again
    if not all((spec.dir / name).is_file() for name in FACT_FILES):
        return None  # cached before the package's config/System.map were kept: fetch again
    modules = [spec.dir / "modules" / m for m in meta.get("modules", [])]
    return Kernel(spec, vmlinuz, [m for m in modules if m.is_file()], meta["release"], meta["package"])


class PrivateApt:
    """apt-get/apt-cache bound to our own sources.list, lists and cache directories —
    one per matrix member, so fetching one kernel reads only its suites' indexes."""

    def __init__(self, root: Path, suites: tuple[str, ...], arch: str = "amd64") -> None:
        self.root = root
        self.suites = suites
        self.arch = arch
        self.sources = root / "sources.list"
        self.lists = root / "lists"
        self.cache = root / "cache"
        self.warnings = ""  # what the last `apt-get update` could not fetch

    def options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.sources}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={self.lists}",
            "-o", f"Dir::Cache={self.cache}",
            "-o", "Dir::State::Status=/dev/null",
            "-o", f"APT::Architecture={self.arch}",
            "-o", f"APT::Architectures={self.arch}",
            "-o", "APT::Sandbox::User=root",
            "-o", "Acquire::Retries=2",
        ]

    def write_sources(self) -> None:
        lines = []
        for suite in self.suites:
            url = SECURITY_MIRROR if suite.endswith("-security") else MIRROR
            lines.append(f"deb [signed-by={KEYRING}] {url} {suite} main")
        text = "\n".join(lines) + "\n"
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.sources.exists() or self.sources.read_text() != text:
            self.sources.write_text(text)
            shutil.rmtree(self.lists, ignore_errors=True)

    def update(self) -> None:
        """Refresh the private package lists (at most once a day)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.root / ".update.lock"):
            self.write_sources()
            (self.lists / "partial").mkdir(parents=True, exist_ok=True)
            (self.cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
            stamp = self.root / "lists.stamp"
            if stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE:
                return
            out = self._run(["apt-get", "-q", *self.options(), "update"], "apt-get update", stderr=True)
            failed = [ln.strip() for ln in out.splitlines() if ln.startswith(("Err:", "W: Failed"))]
            if failed:  # one unreachable suite must not hide the others; retry next time
                self.warnings = " / ".join(failed[:3])
            else:
                stamp.touch()

    def _run(self, cmd: list[str], what: str, cwd: Path | None = None, stderr: bool = False) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FetchError(f"{what}: {e}") from e
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise FetchError(f"{what} failed: {' / '.join(tail)}")
        return proc.stdout + (proc.stderr if stderr else "")

    def madison(self, package: str) -> list[tuple[str, str]]:
        """(version, suite) pairs for a package, as apt-cache madison lists them."""
        out = self._run(["apt-cache", *self.options(), "madison", package], "apt-cache madison")
        rows = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3:
                suite = parts[2].split()[1].split("/")[0] if len(parts[2].split()) > 1 else ""
                rows.append((parts[1], suite))
        return rows

    def depends(self, package: str) -> list[str]:
        out = self._run(["apt-cache", *self.options(), "show", package], "apt-cache show")
        for line in out.splitlines():
            if line.startswith("Depends:"):
                return [d.strip() for d in line[len("Depends:"):].split(",")]
        return []

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        self._run(["apt-get", "-q", *self.options(), "download", *packages], "apt-get download", cwd=dest)
        return sorted(dest.glob("*.deb"))


def _dep_name(dep: str) -> tuple[str, str | None]:
    """'linux-image-6.1.0-50-amd64 (= 6.1.176-1)' -> (name, version)."""
    m = re.match(r"([^\s(|]+)\s*(?:\(=\s*([^)]+)\))?", dep.strip())
    return (m[1], m[2]) if m else (dep, None)


def resolve(apt: PrivateApt, spec: KernelSpec, older: int = 0) -> tuple[str, list[str]]:
    """The newest linux-image-<arch> of the suite (or the `older`-th before it) ->
    (release, packages to download).

    Bullseye..trixie ship everything in linux-image-<release>; sid 7.x split it into
    linux-binary-<release> (vmlinuz), linux-modules-<release> and linux-base-<release>
    (config, System.map)."""
    meta = f"linux-image-{spec.arch}"
    versions = [v for v, suite in apt.madison(meta) if suite in spec.suites]
    if not versions:
        why = f" (apt-get update: {apt.warnings})" if apt.warnings else ""
        raise FetchError(f"{spec.name}: no {meta} in {', '.join(spec.suites)}{why}")
    ranked = sorted(set(versions), key=_debian_version_key, reverse=True)
    best = ranked[min(older, len(ranked) - 1)]
    image = None
    for dep in apt.depends(f"{meta}={best}"):
        name, version = _dep_name(dep)
        if name.startswith("linux-image-") and name.endswith(f"-{spec.arch}"):
            image = (name, version or best)
    if image is None:
        raise FetchError(f"{spec.name}: {meta}={best} names no linux-image-*-{spec.arch}")
    release = image[0][len("linux-image-"):]
    names = [_dep_name(d)[0] for d in apt.depends(f"{image[0]}={image[1]}")]
    split = [f"linux-{part}-{release}" for part in ("binary", "modules", "base")]
    if all(s in names for s in split):
        return release, [f"{s}={image[1]}" for s in split]
    return release, [f"{image[0]}={image[1]}"]


def _debian_version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+~-]", version)]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """flock: concurrent test runs sharing the cache download each kernel once."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(spec: KernelSpec, apt: PrivateApt | None = None) -> Kernel:
    """Return the cached kernel, downloading and extracting it first if needed."""
    hit = cached(spec)
    if hit:
        return hit
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FetchError(f"{spec.name}: not cached and apt-get/dpkg-deb are unavailable")
    kernels_dir().mkdir(parents=True, exist_ok=True)
    with _file_lock(kernels_dir() / f".{spec.dir.name}.lock"):
        return cached(spec) or _download(spec, apt)


def _download(spec: KernelSpec, apt: PrivateApt | None) -> Kernel:
    apt = apt or PrivateApt(kernels_dir() / "apt" / spec.dir.name, spec.suites, spec.arch)
    apt.update()
    kernels_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".fetch-{spec.name}-", dir=kernels_dir()) as tmp:
        work = Path(tmp)
        release, packages, debs = _resolve_and_download(apt, spec, work / "debs")
        root = work / "root"
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        stage = work / "kernel"
        (stage / "modules").mkdir(parents=True)
        _copy_kernel_image(_find_vmlinuz(root, release), stage / "vmlinuz")
        mods = _extract_modules(root, release, stage / "modules")
        _keep_facts(root, release, stage)
        meta = {"release": release, "package": " ".join(packages), "modules": mods,
                "suite": spec.suite, "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (stage / "kernel.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.rmtree(spec.dir, ignore_errors=True)
        os.rename(stage, spec.dir)
    kernel = cached(spec)
    assert kernel is not None
    return kernel


def _resolve_and_download(apt: PrivateApt, spec: KernelSpec, dest: Path) -> tuple[str, list[str], list[Path]]:
    """The newest kernel whose packages the mirror actually serves: an index can name a
    build its pool does not have yet (bullseye-security's arm64 5.10.262, Dec 2026: 404)."""
    first_error: FetchError | None = None
    for older in range(3):
        release, packages = resolve(apt, spec, older)
        try:
            return release, packages, apt.download(packages, dest)
        except FetchError as e:
            first_error = first_error or e
            shutil.rmtree(dest, ignore_errors=True)
    assert first_error is not None
    raise first_error


def _find_vmlinuz(root: Path, release: str) -> Path:
    for cand in (root / "boot" / f"vmlinuz-{release}",
                 root / "usr/lib/modules" / release / "vmlinuz",
                 root / "lib/modules" / release / "vmlinuz"):
        if cand.is_file():
            return cand
    raise FetchError(f"no vmlinuz for {release} in the downloaded packages")


def _keep_facts(root: Path, release: str, stage: Path) -> None:
    """boot/config-<release> and boot/System.map-<release> (or the usr/lib/modules copies
    newer packages ship) into the cache as FACT_FILES; a package without them is an error,
    not a cache that silently lacks the facts."""
    for name in FACT_FILES:
        for cand in (root / "boot" / f"{name}-{release}",
                     root / "usr/lib/modules" / release / name,
                     root / "lib/modules" / release / name):
            if cand.is_file():
                shutil.copyfile(cand, stage / name)
                break
        else:
            raise FetchError(f"no {name}-{release} in the downloaded packages")


def _extract_modules(root: Path, release: str, dest: Path) -> list[str]:
    """Copy MODULES out of the package, decompressed (busybox insmod takes plain .ko)."""
    found = []
    for base in (root / "usr/lib/modules" / release, root / "lib/modules" / release):
        if not base.is_dir():
            continue
        for mod in _with_dependencies(base, MODULES):
            for path in base.rglob(f"{mod}.ko*"):
                out = dest / f"{mod}.ko"
                data = path.read_bytes()
                if path.name.endswith(".xz"):
                    data = lzma.decompress(data)
                elif path.name.endswith(".zst"):
                    data = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
                elif path.name.endswith(".gz"):
                    import gzip

                    data = gzip.decompress(data)
                out.write_bytes(data)
                found.append(out.name)
                break
    return sorted(set(found))


def _with_dependencies(base: Path, wanted: tuple[str, ...]) -> list[str]:
    """`wanted` plus the modules they need (modules.dep), dependencies first."""
    deps: dict[str, list[str]] = {}
    try:
        for line in (base / "modules.dep").read_text().splitlines():
            mod, _, needs = line.partition(":")
            deps[_module_name(mod)] = [_module_name(n) for n in needs.split()]
    except OSError:
        return list(wanted)
    ordered: list[str] = []

    def visit(name: str) -> None:
        for dep in deps.get(name, []):
            visit(dep)
        if name not in ordered:
            ordered.append(name)

    for name in wanted:
        visit(name)
    return ordered


def _module_name(path: str) -> str:
    """'kernel/drivers/net/veth.ko.xz' -> 'veth'."""
    return path.rsplit("/", 1)[-1].split(".ko", 1)[0]


def _copy_kernel_image(src: Path, dest: Path) -> None:
    """Debian's arm64 vmlinuz is a gzip'd Image, which QEMU's -kernel does not unpack on
    every version: store it decompressed (amd64 bzImages are copied as they are)."""
    import gzip

    data = src.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    dest.write_bytes(data)
