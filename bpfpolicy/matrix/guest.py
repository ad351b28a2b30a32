"""Run artifacts on a kernel: build the static runner, pack an initramfs, boot QEMU —
or, for the `host` member, run the same runner directly on the running kernel.

The guest is deliberately tiny (busybox + one static C binary + the artifacts, a few
MB): no Python, no 9p, no disk image, so a boot-and-test is seconds even under TCG.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..resources import MATRIX_DATA_DIR, cache_dir
from .artifacts import ArtifactDir
from .kernels import Kernel

RUNNER_DIR = MATRIX_DATA_DIR
INIT_SCRIPT = MATRIX_DATA_DIR / "init.sh"
RUNNER_LIBS = ["-lbpf", "-lelf", "-lz", "-lzstd"]
CMDLINE = "console=ttyS0 lsm=lockdown,capability,yama,bpf panic=-1 quiet"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


@dataclass(frozen=True)
class ArchTools:
    """What building and booting a guest of one Debian architecture takes on this host."""

    gcc: str  # C compiler for the static runner
    libdir: str  # where its libbpf.a, libelf.a, libz.a, libzstd.a are (multiarch)
    qemu: str
    machine: tuple[str, ...]  # qemu options choosing the machine and CPU (TCG)
    console: str  # serial console device for the kernel command line
    setup_hint: str  # what installs the above (scripts/setup-dev.sh)


ARCHES: dict[str, ArchTools] = {
    "amd64": ArchTools("gcc", "/usr/lib/x86_64-linux-gnu", "qemu-system-x86_64", ("-cpu", "max"), "ttyS0",
                       "apt-get install gcc libbpf-dev libelf-dev zlib1g-dev libzstd-dev qemu-system-x86"),
    "arm64": ArchTools("aarch64-linux-gnu-gcc", "/usr/lib/aarch64-linux-gnu", "qemu-system-aarch64",
                       ("-M", "virt", "-cpu", "max"), "ttyAMA0", "scripts/setup-matrix-dev.sh arm64 (gcc-aarch64-linux-gnu, "
                       "libbpf-dev:arm64 libelf-dev:arm64 zlib1g-dev:arm64 libzstd-dev:arm64, qemu-system-arm)"),
}


class GuestError(RuntimeError):
    """Something the matrix needs on this machine is missing (gcc, busybox, qemu)."""


@dataclass
class RunOutput:
    """Console text of one kernel's run plus how it went."""

    console: str
    seconds: float
    accel: str  # kvm | tcg | host
    error: str | None = None  # boot timeout, qemu failure, ...


# ---- the runner --------------------------------------------------------------------

def build_runner(arch: str = "amd64") -> Path:
    """gcc -static the runner (a cross gcc for arm64); cached by a hash of its source,
    flags and the static libraries."""
    tools = ARCHES[arch]
    source = RUNNER_DIR / "kt-runner.c"
    flags = ["-O2", "-Wall", "-static"]
    if arch != "amd64":  # libbpf's headers are arch-independent, in /usr/include/bpf
        flags += ["-idirafter", "/usr/include", "-L", tools.libdir]
    h = hashlib.sha256(source.read_bytes() + " ".join(flags + RUNNER_LIBS).encode())
    for lib in ("libbpf.a", "libelf.a"):
        for d in (tools.libdir, "/usr/lib64", "/usr/lib"):
            if os.path.exists(os.path.join(d, lib)):
                h.update(Path(d, lib).read_bytes())
                break
    suffix = "" if arch == "amd64" else f"-{arch}"
    out = cache_dir() / "kernel-test" / f"kt-runner{suffix}-{h.hexdigest()[:16]}"
    if out.is_file():
        return out
    if shutil.which(tools.gcc) is None:
        raise GuestError(f"{tools.gcc} is not installed (needed to build the static in-guest runner; "
                         f"{tools.setup_hint})")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    proc = subprocess.run([tools.gcc, *flags, "-o", str(tmp), str(source), *RUNNER_LIBS],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise GuestError(f"building kt-runner for {arch} failed (needs {tools.setup_hint}):"
                         f"\n{proc.stderr[-2000:]}")
    os.replace(tmp, out)
    return out


def busybox(arch: str = "amd64") -> Path:
    if arch != "amd64":
        return _foreign_busybox(arch)
    for cand in BUSYBOX_CANDIDATES:
        p = Path(cand)
        if p.is_file() and _is_static_elf(p):
            return p
    raise GuestError("no static busybox (apt-get install busybox-static)")


def _foreign_busybox(arch: str) -> Path:
    """busybox-static of another architecture, from Debian (bookworm) through the same
    private apt state as the kernels; installing it would replace the host's own."""
    from .kernels import FetchError, PrivateApt, kernels_dir

    out = cache_dir() / "kernel-test" / f"busybox-{arch}"
    if out.is_file():
        return out
    apt = PrivateApt(kernels_dir() / "apt" / f"busybox-{arch}", ("bookworm",), arch)
    try:
        apt.update()
        with tempfile.TemporaryDirectory() as tmp:
            debs = apt.download(["busybox-static"], Path(tmp) / "debs")
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "root")], check=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / "root" / "bin" / "busybox", out)
    except (FetchError, OSError, IndexError, subprocess.CalledProcessError) as e:
        raise GuestError(f"no static busybox for {arch}: {e}") from e
    return out


def _is_static_elf(path: Path) -> bool:
    """A 64-bit ELF without a PT_INTERP program header (checked without `file(1)`): it
    runs in a guest that has no dynamic loader."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return not any(int.from_bytes(table[i * phentsize:i * phentsize + 4], "little") == pt_interp
                   for i in range(phnum))


# ---- initramfs (cpio newc, written here: no cpio(1), no root needed for /dev nodes) --

class Cpio:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(name.encode() + b"\0")
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name.strip("/"), stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name.strip("/"), stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(dest: Path, runner: Path, artifacts: list[ArtifactDir], modules: list[Path],
                    artifact_timeout: float = 90.0, arch: str = "amd64") -> Path:
    """busybox + runner + init + modules + artifacts (each under /artifacts/NNN/)."""
    c = Cpio()
    c.file("kt-config", f"KT_ARTIFACT_TIMEOUT={max(1, int(artifact_timeout))}\n".encode())
    for d in ("bin", "dev", "proc", "sys", "tmp", "run", "etc", "artifacts", "modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.file("bin/busybox", busybox(arch).read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    c.file("bin/kt-runner", runner.read_bytes(), 0o755)
    c.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    for mod in modules:
        c.file(f"modules/{mod.name}", mod.read_bytes())
    for i, art in enumerate(artifacts):
        base = f"artifacts/{i:03d}"
        c.file(f"{base}/.kt-name", art.name.encode() + b"\n")
        c.file(f"{base}/kernel-test.txt", art.script.encode())
        for path in sorted(art.path.rglob("*")) if art.path else ():
            rel = path.relative_to(art.path).as_posix()
            if path.is_file() and rel != "kernel-test.txt":
                c.file(f"{base}/{rel}", path.read_bytes())
    dest.write_bytes(gzip.compress(c.finish(), compresslevel=1))
    return dest


# ---- QEMU ------------------------------------------------------------------------------

def kvm_usable() -> bool:
    """True when /dev/kvm opens and answers KVM_GET_API_VERSION (== 12)."""
    forced = os.environ.get("BPFPOLICY_QEMU_ACCEL")
    if forced:
        return forced == "kvm"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, 0xAE00) == 12
    except OSError:
        return False
    finally:
        os.close(fd)


def qemu_command(kernel: Kernel, initrd: Path, accel: str) -> list[str]:
    tools = ARCHES[kernel.spec.arch]
    machine = ["-cpu", "host"] if accel == "kvm" else list(tools.machine)
    return [tools.qemu, "-accel", accel, *machine, "-m", "512M", "-smp", "1",
            "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor", "none",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
            "-append", CMDLINE.replace("ttyS0", tools.console)]


def boot(kernel: Kernel, runner: Path, artifacts: list[ArtifactDir], work: Path,
         artifact_timeout: float = 90.0) -> RunOutput:
    """Boot `kernel` with the artifacts; returns the console once the guest powers off.

    Each artifact gets `artifact_timeout` seconds inside the guest (a verifier chewing
    on a 1M-instruction program under TCG takes minutes); the whole boot is bounded by
    the sum plus a minute for booting."""
    arch = kernel.spec.arch
    tools = ARCHES[arch]
    if shutil.which(tools.qemu) is None:
        raise GuestError(f"{tools.qemu} is not installed ({tools.setup_hint})")
    work.mkdir(parents=True, exist_ok=True)
    initrd = build_initramfs(work / f"initrd-{kernel.spec.dir.name}.gz", runner, artifacts, kernel.modules,
                             artifact_timeout, arch)
    timeout = 60.0 + artifact_timeout * max(1, len(artifacts))
    accel = "kvm" if arch == "amd64" and kvm_usable() else "tcg"
    # A KVM boot takes seconds; nested KVM that does not work fails fast (or hangs, hence
    # the shorter limit) and the same guest is rerun under TCG.
    out = _run_qemu(qemu_command(kernel, initrd, accel), min(timeout, 60.0) if accel == "kvm" else timeout)
    if accel == "kvm" and out.error and "KT-KERNEL" not in out.console:
        out = _run_qemu(qemu_command(kernel, initrd, "tcg"), timeout)  # KVM unusable after all
        accel = "tcg"
    out.accel = accel
    return out


def _run_qemu(cmd: list[str], timeout: float) -> RunOutput:
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace")
        return RunOutput(text, time.monotonic() - start, "", f"guest did not power off within {timeout:.0f} s")
    text = proc.stdout.decode(errors="replace")
    error = None
    if proc.returncode != 0:
        error = f"qemu exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-300:]}"
    elif "KT-DONE" not in text:
        error = "guest stopped before the runner finished (kernel panic or init failure)"
    return RunOutput(text, time.monotonic() - start, "", error)


# ---- the host member ---------------------------------------------------------------

def run_on_host(runner: Path, artifacts: list[ArtifactDir], timeout: float = 90.0) -> RunOutput:
    """Run the same runner on the running kernel, as root, each artifact in its own
    network namespace (so XDP/tc never touch real interfaces) and under a scratch
    cgroup (so cgroup attaches never cover real workloads)."""
    start = time.monotonic()
    if os.geteuid() != 0:
        return RunOutput("", 0.0, "host", "the host member needs root (BPF loads, netns, cgroups)")
    lines = [f"KT-KERNEL {os.uname().release}"]
    cg_root = _cgroup2_mount() / f"bpfpolicy-kt-{os.getpid()}"
    env = dict(os.environ)
    try:
        cg_root.mkdir()
        env["KT_CGROUP_ROOT"] = str(cg_root)
    except OSError:
        pass
    try:
        with tempfile.TemporaryDirectory(prefix="bpfpolicy-kt-host-") as tmp:
            for i, art in enumerate(artifacts):
                adir = Path(tmp) / f"{i:03d}"
                if art.path is None:
                    continue
                shutil.copytree(art.path, adir)
                (adir / "kernel-test.txt").write_text(art.script)
                try:
                    proc = subprocess.run([str(runner), "--netns", str(adir), art.name], cwd=tmp,
                                          capture_output=True, text=True, timeout=timeout, env=env)
                    lines.append(proc.stdout)
                    if proc.returncode > 1 or proc.returncode < 0:
                        lines.append(f"RESULT {art.name} 0 runner fail kt-runner exited with status "
                                     f"{proc.returncode}: {proc.stderr.strip()[-200:]}")
                except subprocess.TimeoutExpired:
                    lines.append(f"RESULT {art.name} 0 runner fail timed out after {timeout:.0f} s")
    finally:
        _remove_cgroup_tree(cg_root)
    lines.append("KT-DONE")
    return RunOutput("\n".join(lines) + "\n", time.monotonic() - start, "host")


def _cgroup2_mount() -> Path:
    """Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts)."""
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    except OSError:
        pass
    return Path("/sys/fs/cgroup")


def _remove_cgroup_tree(path: Path) -> None:
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        pass
