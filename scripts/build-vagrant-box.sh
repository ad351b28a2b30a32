#!/usr/bin/env bash
# Build a libvirt Vagrant box for one kernel-matrix member locally, without downloading a
# box: debootstrap a minimal Debian of the member's suite (its stock linux-image-amd64 is
# the matrix kernel), write it into an ext4 qcow2 with mke2fs -d (no loop devices, no
# mounts), boot it by direct kernel boot (the suite's vmlinuz + initrd), and `vagrant box
# add` it as bpfpolicy/<member>. Air-gapped: point MIRROR at a local Debian mirror.
#
#   scripts/build-vagrant-box.sh [5.10|6.1|6.12|7] [OUT_DIR]     # default 6.1, out/vagrant-box
#
# Needs root, debootstrap, e2fsprogs (mke2fs -d), qemu-utils, vagrant (scripts/setup-matrix-dev.sh
# vagrant). The box logs in with Vagrant's well-known insecure key (Vagrant swaps it for a
# generated one on the first `vagrant up`).
set -euo pipefail

member=${1:-6.1}
out=${2:-out/vagrant-box}
mirror=${MIRROR:-http://deb.debian.org/debian}
size=${BOX_SIZE_GB:-4}
case "$member" in
	5.10) suite=bullseye ;;
	6.1) suite=bookworm ;;
	6.12) suite=trixie ;;
	7) suite=sid ;;
	*) echo "unknown member $member (5.10, 6.1, 6.12, 7)" >&2; exit 2 ;;
esac
name="bpfpolicy/$member"
work="$out/$member"
root="$work/root"
# libvirt's qemu must be able to read the kernel and initrd (it may run as libvirt-qemu).
bootdir=${BOOT_DIR:-/var/lib/libvirt/boot}
# Vagrant's insecure public key, as Debian's vagrant package ships it.
keys=$(dirname "$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1)")

mkdir -p "$work"
if [ ! -x "$root/usr/bin/python3" ]; then
	rm -rf "$root"
	debootstrap --variant=minbase \
		--include=linux-image-amd64,initramfs-tools,systemd-sysv,udev,openssh-server,sudo,rsync,isc-dhcp-client,ifupdown,iproute2,python3,ca-certificates,kmod,procps,make \
		"$suite" "$root" "$mirror"
fi

echo "== configuring $root"
echo "bpfpolicy-k${member//./}" > "$root/etc/hostname"
printf '/dev/vda / ext4 defaults 0 1\n' > "$root/etc/fstab"
printf 'auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n' > "$root/etc/network/interfaces"
echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
chroot "$root" sh -c 'id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash vagrant'
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
install -d -m 0700 "$root/home/vagrant/.ssh"
install -m 0600 "$keys/vagrant.pub" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
printf 'UseDNS no\n' > "$root/etc/ssh/sshd_config.d/vagrant.conf"
chroot "$root" systemctl enable ssh serial-getty@ttyS0 >/dev/null 2>&1 || true

release=$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" | sed 's/^vmlinuz-//')
install -d "$bootdir"
install -m 0644 "$root/boot/vmlinuz-$release" "$bootdir/bpfpolicy-$member-vmlinuz"
install -m 0644 "$root/boot/initrd.img-$release" "$bootdir/bpfpolicy-$member-initrd"

echo "== writing the disk image ($release)"
rm -f "$work/box.raw" "$work/box.img"
truncate -s "${size}G" "$work/box.raw"
mkfs.ext4 -q -F -L root -d "$root" "$work/box.raw"
qemu-img convert -O qcow2 "$work/box.raw" "$work/box.img"
rm -f "$work/box.raw"

cat > "$work/metadata.json" <<JSON
{"provider": "libvirt", "format": "qcow2", "virtual_size": $size}
JSON
cat > "$work/Vagrantfile" <<RUBY
# Box defaults: direct kernel boot of Debian $suite's $release (a kernel-matrix member).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.kernel = "$bootdir/bpfpolicy-$member-vmlinuz"
    lv.initrd = "$bootdir/bpfpolicy-$member-initrd"
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0 lsm=lockdown,capability,landlock,yama,apparmor,bpf"
    lv.disk_bus = "virtio"
  end
end
RUBY
tar -C "$work" -czf "$out/bpfpolicy-$member.box" metadata.json Vagrantfile box.img
vagrant box add --force --name "$name" "$out/bpfpolicy-$member.box"
echo "== box $name ($release) added; $out/bpfpolicy-$member.box"
