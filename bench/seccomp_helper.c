/* Timing helper for bench/seccomp.py: seccomp filter attach time and per-syscall cost.
 *
 *   seccomp_helper attach FILTER.bin N            -> median ns of seccomp(SET_MODE_FILTER), N forks
 *   seccomp_helper loop SHIM FILTER NR A0 ITERS   -> ns per syscall(NR, A0) in a child
 *       SHIM: 1 = first install a non-cacheable filter (loads args[0], returns ALLOW),
 *             so every call runs FILTER in full (the kernel's action cache cannot help);
 *       FILTER: a filter file, or "none".
 *
 * The loop is a plain C loop around syscall(2) so the measured cost is the kernel's.
 */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sock_fprog load(const char *path)
{
	struct sock_fprog prog = {0};
	FILE *f = fopen(path, "rb");
	if (!f) { perror(path); exit(2); }
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	rewind(f);
	prog.filter = malloc(size);
	if (fread(prog.filter, 1, size, f) != (size_t)size) { perror("read"); exit(2); }
	fclose(f);
	prog.len = size / sizeof(struct sock_filter);
	return prog;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int install(struct sock_fprog *prog)
{
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int attach(const char *path, int n)
{
	struct sock_fprog prog = load(path);
	uint64_t *t = calloc(n, sizeof(*t));
	for (int i = 0; i < n; i++) {
		int fds[2];
		if (pipe(fds)) return 2;
		pid_t pid = fork();
		if (pid == 0) {
			uint64_t d;
			prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
			uint64_t t0 = now_ns();
			if (install(&prog)) _exit(3);
			d = now_ns() - t0;
			if (write(fds[1], &d, sizeof(d)) != sizeof(d)) _exit(4);
			_exit(0);
		}
		close(fds[1]);
		if (read(fds[0], &t[i], sizeof(t[i])) != sizeof(t[i])) return 5;
		close(fds[0]);
		waitpid(pid, NULL, 0);
	}
	qsort(t, n, sizeof(*t), cmp_u64);
	printf("%llu\n", (unsigned long long)t[n / 2]);
	return 0;
}

static int loop(int shim, const char *path, long nr, unsigned long a0, long iters)
{
	int fds[2];
	if (pipe(fds)) return 2;
	pid_t pid = fork();
	if (pid == 0) {
		/* ld [16] (args[0] low word) makes the path non-constant: never cached */
		struct sock_filter shim_insns[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 16),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog shim_prog = {2, shim_insns};
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
		if (shim && install(&shim_prog)) _exit(3);
		if (strcmp(path, "none")) {
			struct sock_fprog prog = load(path);
			if (install(&prog)) _exit(3);
		}
		for (long i = 0; i < iters / 10; i++)  /* warm up */
			syscall(nr, a0, 0, 0, 0, 0, 0);
		uint64_t t0 = now_ns();
		for (long i = 0; i < iters; i++)
			syscall(nr, a0, 0, 0, 0, 0, 0);
		double per = (double)(now_ns() - t0) / iters;
		if (write(fds[1], &per, sizeof(per)) != sizeof(per)) _exit(4);
		_exit(0);
	}
	close(fds[1]);
	double per = -1;
	int status;
	if (read(fds[0], &per, sizeof(per)) != sizeof(per)) per = -1;
	waitpid(pid, &status, 0);
	printf("%.2f\n", per);
	return per < 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "attach"))
		return attach(argv[2], atoi(argv[3]));
	if (argc == 7 && !strcmp(argv[1], "loop"))
		return loop(atoi(argv[2]), argv[3], strtol(argv[4], NULL, 0),
			    strtoul(argv[5], NULL, 0), strtol(argv[6], NULL, 0));
	fprintf(stderr, "usage: %s attach FILTER N | loop SHIM FILTER NR A0 ITERS\n", argv[0]);
	return 2;
}
