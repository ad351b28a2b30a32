#!/bin/sh
# Run a kernel-test bundle (written by `bpfpolicy kernel-test --bundle DIR`) on THIS
# machine's kernel, as root: the static kt-runner on every artifact compiled for the
# running kernel's matrix member. Used by the Vagrantfile's VMs, usable on any box.
# Prints the runner protocol (RESULT lines); exit 0 = nothing failed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
release=$(uname -r)
case "$release" in
	5.10.*) member=5.10 ;;
	6.1.*) member=6.1 ;;
	6.12.*) member=6.12 ;;
	7.*) member=7 ;;
	*) member=${KT_MEMBER:-} ;;
esac
dir="$here/$member"
if [ -z "$member" ] || [ ! -d "$dir" ]; then
	echo "run-bundle: no artifacts for kernel $release in $here (members: $(ls "$here" | tr '\n' ' '))" >&2
	exit 2
fi
echo "KT-KERNEL $release"
echo "KT-LSM $(cat /sys/kernel/security/lsm 2>/dev/null)"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
cg=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
scratch="${cg:-/sys/fs/cgroup}/bpfpolicy-kt-$$"
mkdir -p "$scratch" 2>/dev/null && export KT_CGROUP_ROOT="$scratch"
failed=0
for d in "$dir"/*; do
	[ -f "$d/kernel-test.txt" ] || continue
	name=$(cat "$d/.kt-name")
	(cd "$d" && "$here/kt-runner" --netns "$d" "$name")
	rc=$?
	[ "$rc" -ne 0 ] && failed=1
	[ "$rc" -gt 1 ] && echo "RESULT $name 0 runner fail kt-runner exited with status $rc"
done
find "$scratch" -depth -type d -exec rmdir {} \; 2>/dev/null
echo KT-DONE
exit "$failed"
