#!/usr/bin/env bash
# Developer-only setup for the kernel matrix beyond what scripts/setup.sh installs for
# users (that one stays host-only: clang, libbpf, busybox-static, qemu-system-x86).
# Run as root on Debian 12; only the matrix make targets call it. Kept apart from
# scripts/setup-dev.sh on purpose: that one installs gcc-multilib, which Debian declares
# in conflict with gcc-12-aarch64-linux-gnu (installing one removes the other).
#
#   scripts/setup-matrix-dev.sh arm64     # arm64 guests: qemu-system-aarch64, a cross gcc and
#                                  # multiarch static libraries for the runner
#   scripts/setup-matrix-dev.sh vagrant   # Vagrant + libvirt + what scripts/build-vagrant-box.sh needs
#   scripts/setup-matrix-dev.sh all
#
# The arm64 busybox for the initramfs is NOT installed (busybox-static:arm64 would
# replace the host's amd64 one): bpfpolicy fetches it into its cache with a private apt
# state, like the kernels.
set -euo pipefail

want=${1:-all}
apt_install() {
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "$@"
}

arm64() {
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		dpkg --add-architecture arm64
		apt-get update -q
	fi
	apt_install qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
		libbpf-dev:arm64 libelf-dev:arm64 zlib1g-dev:arm64 libzstd-dev:arm64
}

vagrant_libvirt() {
	apt_install vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 \
		qemu-utils debootstrap dnsmasq-base ebtables openssh-client
}

case "$want" in
	arm64) arm64 ;;
	vagrant) vagrant_libvirt ;;
	all) arm64; vagrant_libvirt ;;
	*) echo "usage: $0 [arm64|vagrant|all]" >&2; exit 2 ;;
esac
