#!/bin/sh
# /init of the kernel-test initramfs (busybox sh). Mounts what BPF programs expect,
# loads the few modules tc needs, runs kt-runner on every artifact and powers off.
# Everything the host parses starts with RESULT / VERIFIER-LOG-* / KT-*.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev 2>/dev/null
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up
# Two passes: a module whose dependency sorts after it loads on the second.
for pass in 1 2; do
	for m in /modules/*.ko; do
		[ -e "$m" ] || continue
		grep -q "^$(basename "$m" .ko) " /proc/modules && continue
		insmod "$m" 2>/dev/null || { [ $pass = 2 ] && echo "KT-WARN insmod $m failed"; }
	done
done
echo "KT-KERNEL $(uname -r)"
echo "KT-LSM $(cat /sys/kernel/security/lsm 2>/dev/null)"
# Per-artifact time limit (seconds), written by the host into /kt-config.
KT_ARTIFACT_TIMEOUT=90
[ -f /kt-config ] && . /kt-config
for d in /artifacts/*; do
	[ -f "$d/kernel-test.txt" ] || continue
	name=$(cat "$d/.kt-name")
	(cd "$d" && timeout -s KILL "$KT_ARTIFACT_TIMEOUT" /bin/kt-runner "$d" "$name")
	rc=$?
	if [ "$rc" -eq 137 ]; then
		echo "RESULT $name 0 runner fail timed out after ${KT_ARTIFACT_TIMEOUT} s"
	elif [ "$rc" -gt 1 ]; then
		echo "RESULT $name 0 runner fail kt-runner exited with status $rc"
	fi
done
echo KT-DONE
poweroff -f
