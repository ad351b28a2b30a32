#!/usr/bin/env bash
# Installs everything bpfpolicy needs on a fresh Debian 12 host (idempotent; quick when
# already done): the BPF toolchain and kernel tools from apt, a venv with the package,
# and the bpffs/tracefs mounts libbpf expects.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  clang llvm libbpf-dev libbpf1 bpftool linux-libc-dev gcc-multilib
  iproute2 nftables ethtool xdp-tools
  python3 python3-venv python3-dev python3-seccomp libseccomp-dev
  qemu-system-x86 busybox-static cpio zstd git make iputils-ping
  libelf-dev zlib1g-dev libzstd-dev gnupg openssh-client
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Debian's python3 with system site-packages, so python3-seccomp (libseccomp's own
# binding, our benchmark and differential-test anchor) is importable in the venv.
if [[ ! -x .venv/bin/python ]]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.bpfpolicy-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi

mountpoint -q /sys/fs/bpf || mount -t bpf bpffs /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
echo "setup: ok ($(.venv/bin/bpfpolicy --version 2>/dev/null || echo 'bpfpolicy not importable yet'))"
