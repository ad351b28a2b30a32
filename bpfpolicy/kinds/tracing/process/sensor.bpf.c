// SPDX-License-Identifier: GPL-2.0
/* The process sensor — bpfpolicy's always-on base sensor (Tetragon's "base" sensor).
 *
 * Three sched tracepoints, which every kernel with CONFIG_TRACEPOINTS has (no kprobes, no
 * trampolines): exec and exit of a thread group, and fork for the parent link of a child
 * that has not exec'd yet. Each writes one fixed-size `struct bpfp_proc_event` to `events`;
 * process_cache.py in user space turns them into exec_ids, ancestry and Tetragon's
 * process_exec / process_exit events. Layout: process/__init__.py (PROC_EVENT).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";
/* The artifact contract's metadata (codegen/templates/_metadata.h.j2): which artifact,
 * its program_hash (stamped by build_sensor) and the revision placeholder the controller
 * overwrites before load — `bpftool prog show` tells the sensor apart like any policy. */
const volatile char bpf_metadata_bpfpolicy_policy[] SEC(".rodata") = "TracingPolicy/bpfpolicy-process-sensor";
const volatile char bpf_metadata_bpfpolicy_hash[] SEC(".rodata") = "";
const volatile char bpf_metadata_bpfpolicy_revision[64] SEC(".rodata") = "@@bpfpolicy-revision@@";

#define PROC_EXEC   1
#define PROC_EXIT   2
#define PROC_FORK   3
#define PROC_PATH   256   /* bytes of the exec'd filename kept (power of 2) */
#define PROC_ARGS   512   /* bytes of argv kept, NUL-separated (power of 2) */

struct bpfp_proc_event {
	__u64 ktime;          /* bpf_ktime_get_ns(): the exec_id's ktime */
	__u32 type;
	__u32 pid;            /* tgid */
	__u32 tid;
	__u32 ppid;           /* real_parent->tgid (fork: the forking process) */
	__u32 uid;
	__u32 auid;           /* loginuid */
	__u32 exit_code;
	__u32 path_len;
	__u32 args_len;
	__u32 ns_mnt, ns_pid, ns_net, ns_uts, ns_ipc, ns_cgroup, ns_user;
	__u64 cgroup_id;
	char comm[16];
	char path[PROC_PATH];
	char args[PROC_ARGS];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

static __always_inline void proc_common(struct bpfp_proc_event *e, __u32 type)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();

	e->ktime = bpf_ktime_get_ns();
	e->type = type;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->auid = BPF_CORE_READ(task, loginuid.val);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->ns_mnt = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	e->ns_pid = BPF_CORE_READ(task, nsproxy, pid_ns_for_children, ns.inum);
	e->ns_net = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	e->ns_uts = BPF_CORE_READ(task, nsproxy, uts_ns, ns.inum);
	e->ns_ipc = BPF_CORE_READ(task, nsproxy, ipc_ns, ns.inum);
	e->ns_cgroup = BPF_CORE_READ(task, nsproxy, cgroup_ns, ns.inum);
	e->ns_user = BPF_CORE_READ(task, cred, user_ns, ns.inum);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

SEC("tp/sched/sched_process_exec")
int proc_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct bpfp_proc_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	unsigned long start, end, len;
	unsigned short off;
	long n;

	if (!e)
		return 0;
	proc_common(e, PROC_EXEC);
	e->exit_code = 0;
	off = ctx->__data_loc_filename & 0xFFFF;
	n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), (void *)ctx + off);
	e->path_len = n > 0 ? n - 1 : 0;
	/* argv of the new image: mm->arg_start..arg_end, NUL-separated */
	start = BPF_CORE_READ(task, mm, arg_start);
	end = BPF_CORE_READ(task, mm, arg_end);
	len = end > start ? end - start : 0;
	e->args_len = len;            /* the full length: user space sees truncation */
	if (len > PROC_ARGS)
		len = PROC_ARGS;
	if (len == 0 || bpf_probe_read_user(e->args, len, (void *)start) < 0)
		e->args_len = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp/sched/sched_process_exit")
int proc_exit(struct trace_event_raw_sched_process_template *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	struct bpfp_proc_event *e;

	if ((__u32)id != (__u32)(id >> 32))
		return 0;  /* a thread, not the thread group leader */
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	proc_common(e, PROC_EXIT);
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->path_len = 0;
	e->args_len = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(proc_fork, struct task_struct *parent, struct task_struct *child)
{
	struct bpfp_proc_event *e;
	__u32 tgid = BPF_CORE_READ(child, tgid);

	if (tgid != BPF_CORE_READ(child, pid))
		return 0;  /* a new thread, not a new process */
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	proc_common(e, PROC_FORK);
	e->pid = tgid;
	e->tid = tgid;
	e->ppid = BPF_CORE_READ(parent, tgid);
	e->exit_code = 0;
	e->path_len = 0;
	e->args_len = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
