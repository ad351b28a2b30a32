#!/usr/bin/env bash
# Development tools beyond a host's needs and the test suite's (scripts/setup.sh does
# those first): benchmarks (bench/*.py: nftables, xdp-tools, ethtool as baselines to
# compare against), 32-bit builds for seccomp experiments (gcc-multilib), Vagrant-free
# kernel matrix extras. Idempotent. Other sections append below.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

DEV_PACKAGES=(nftables xdp-tools ethtool gcc-multilib)
missing=()
for p in "${DEV_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup-dev: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
dpkg-query -W -f='${Status}' bpftrace 2>/dev/null | grep -q "install ok installed" || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace >/dev/null  # bench/tracing.py compares against bpftrace
