#!/usr/bin/env bash
# Installs what bpfpolicy needs on a Debian 12 host (idempotent; quick when already done).
#
#   scripts/setup.sh          host run-time needs + what the test suite needs (CI runs this)
#   scripts/setup.sh --host   only the host's run-time needs (a production host)
#
# The host's system needs are named once, in bpfpolicy/hostreqs.py (`bpfpolicy doctor`
# checks the same list). Benchmarks, the full kernel matrix and cross builds need more:
# scripts/setup-dev.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
[[ ${1:-} == --host ]] && mode=host

# What the test suite itself runs: QEMU + initramfs tools for the one-kernel matrix smoke,
# gcc for the seccomp test programs, llvm-objdump/objcopy, ping, gpg/ssh-keygen for signed
# commits, python3-seccomp (libseccomp's own binding, the differential-test anchor),
# Prometheus for the fleet test, systemd-analyze for the unit checks, setpriv (util-linux).
TEST_PACKAGES=(
  llvm gcc make python3-dev python3-seccomp libseccomp-dev
  qemu-system-x86 busybox-static cpio zstd iputils-ping gnupg openssh-client
  libelf-dev zlib1g-dev libzstd-dev prometheus systemd util-linux
  jq  # Tetragon's documented jq filters run on `bpfpolicy events` output (tests/controller/test_process_sensor.py)
  systemtap-sdt-dev  # <sys/sdt.h>: the USDT test program (tests/kinds/tracing/test_tracing_usdt.py)
)

apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

apt_install python3 python3-venv
read -r -a HOST_PACKAGES <<<"$(/usr/bin/python3 bpfpolicy/hostreqs.py)"
if [[ $mode == host ]]; then
  apt_install "${HOST_PACKAGES[@]}"
else
  apt_install "${HOST_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
fi

# Debian's python3 with system site-packages, so python3-seccomp is importable in the venv.
if [[ ! -x .venv/bin/python ]]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
extras="[test]" stamp=.venv/.bpfpolicy-installed
if [[ $mode == host ]]; then extras="" stamp=.venv/.bpfpolicy-installed-host; fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".$extras"
  touch "$stamp"
fi

mountpoint -q /sys/fs/bpf || mount -t bpf bpffs /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
echo "setup: ok ($(.venv/bin/bpfpolicy --version 2>/dev/null || echo 'bpfpolicy not importable yet'))"
