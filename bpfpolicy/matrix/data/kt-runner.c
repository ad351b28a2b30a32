// SPDX-License-Identifier: Apache-2.0
/*
 * kt-runner: the in-guest half of `bpfpolicy kernel-test`.
 *
 * Reads one artifact directory's kernel-test.txt (format: kernel-tests/README.md) and
 * executes it line by line against the running kernel: libbpf open+load of BPF objects,
 * map updates, BPF_PROG_TEST_RUN, attachments, and seccomp filters exercised in forked
 * children. Every line produces exactly one parseable result on stdout:
 *
 *   RESULT <artifact> <lineno> <step> ok|fail|skip <detail>
 *
 * Verifier logs of failed loads are printed between
 *   VERIFIER-LOG-BEGIN <artifact> <lineno> <prog>  /  VERIFIER-LOG-END <artifact> <lineno>
 *
 * It is linked statically (libbpf.a, libelf.a, libz.a, libzstd.a) so the initramfs needs
 * nothing but busybox, and the very same binary runs on the host.
 *
 * Usage: kt-runner [--netns] <artifact-dir> <artifact-name>
 *   --netns  run in fresh network + mount namespaces (host runs: never touch real
 *           interfaces; a private tmpfs on /tmp)
 * Exit status: 0 all ok/skip, 1 at least one fail, 2 usage / unreadable script.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/if_link.h>
#include <linux/seccomp.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#ifndef ENOTSUPP
#define ENOTSUPP 524 /* kernel-internal "operation not supported", leaks to user space */
#endif
/* tcx attach types (Linux 6.6); the build host's uapi headers may predate them. */
#define KT_BPF_TCX_INGRESS 46
#define KT_BPF_TCX_EGRESS 47

#define KT_MAX_LINKS 64
#define LOG_SIZE (16u << 20)
#define LIBBPF_MSG_SIZE 8192

static const char *artifact = "?";
static const char *artifact_dir = ".";
static int failures;

/* State of the artifact being run. */
static struct bpf_object *obj;
static int obj_line;            /* line of the `object` directive, 0 = none */
static const char *obj_missing; /* why later steps cannot run (failed/skipped object) */
static struct bpf_link *links[KT_MAX_LINKS];
static int nlinks;
static int attach_gap_line; /* an attach was skipped/failed: behaviour checks cannot run */
static struct sock_filter *filter;
static unsigned short filter_len;
static const char *filter_missing = "no `seccomp` line before this one";

static char *verifier_log;
static char libbpf_msgs[LIBBPF_MSG_SIZE]; /* recent libbpf warnings, for failure details */

/* ---- output ---------------------------------------------------------------------- */

/* One result line; details are flattened to a single line so the host parser stays simple. */
static void result(int lineno, const char *step, const char *status, const char *fmt, ...)
{
	char detail[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	for (char *p = detail; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	if (!strcmp(status, "fail"))
		failures++;
	printf("RESULT %s %d %s %s %s\n", artifact, lineno, step, status, detail);
	fflush(stdout);
}

/* Logs of big rejected programs run to megabytes; the verdict is at the end, and a
 * serial console under TCG is slow, so only the tail is printed. */
#define LOG_TAIL (48u << 10)

static void print_log(int lineno, const char *prog, const char *text)
{
	size_t len = strlen(text);

	printf("VERIFIER-LOG-BEGIN %s %d %s\n", artifact, lineno, prog ? prog : "-");
	if (len > LOG_TAIL) {
		const char *cut = strchr(text + len - LOG_TAIL, '\n');
		text = cut ? cut + 1 : text + len - LOG_TAIL;
		printf("[... %zu bytes of verifier log elided ...]\n", len - strlen(text));
	}
	fputs(text, stdout);
	if (*text && text[strlen(text) - 1] != '\n')
		putchar('\n');
	printf("VERIFIER-LOG-END %s %d\n", artifact, lineno);
	fflush(stdout);
}

/* libbpf's diagnostics are the best explanation of a failed open/load: keep the recent
 * warnings so a failure's detail can quote them (debug chatter is dropped). */
static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[1024];
	size_t used = strlen(libbpf_msgs), n;

	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	if (used + n + 1 >= sizeof(libbpf_msgs)) {
		used = 0;
		libbpf_msgs[0] = '\0';
	}
	memcpy(libbpf_msgs + used, line, n + 1);
	return 0;
}

/* Last libbpf message naming a program ("prog 'foo': ..."), used to attribute failures. */
static void failing_prog(char *out, size_t size)
{
	const char *p = libbpf_msgs, *hit = NULL;

	snprintf(out, size, "-");
	while ((p = strstr(p, "prog '")) != NULL) {
		hit = p + 6;
		p = hit;
	}
	if (hit) {
		const char *end = strchr(hit, '\'');
		size_t n = end ? (size_t)(end - hit) : strlen(hit);
		if (n >= size)
			n = size - 1;
		memcpy(out, hit, n);
		out[n] = '\0';
	}
}

/* The most specific single line of libbpf's warnings, for the RESULT detail: the first
 * line that says what went wrong, not the generic "failed to load: -N" that follows it. */
static const char *libbpf_summary(void)
{
	static char buf[512];
	const char *best = NULL, *last = NULL;
	char *save = NULL, *tok, copy[LIBBPF_MSG_SIZE];

	snprintf(copy, sizeof(copy), "%s", libbpf_msgs);
	for (tok = strtok_r(copy, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save)) {
		if (strstr(tok, "PROG LOAD LOG"))
			continue;
		last = tok;
		if (strstr(tok, "failed to load: -") || strstr(tok, "failed to load object"))
			continue;
		if (strstr(tok, "failed") || strstr(tok, "unsupported") || strstr(tok, "not found") ||
		    strstr(tok, "cannot") || strstr(tok, "invalid") || strstr(tok, "missing")) {
			best = tok;
			break;
		}
	}
	snprintf(buf, sizeof(buf), "%s", best ? best : last ? last : "");
	return buf;
}

/* ---- parsing helpers -------------------------------------------------------------- */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Hex string (optionally 0x-prefixed, '-' for empty) to bytes; returns length or -1. */
static long parse_hex(const char *s, unsigned char **out)
{
	size_t n;
	unsigned char *buf;

	if (!strncmp(s, "0x", 2) || !strncmp(s, "0X", 2))
		s += 2;
	if (!strcmp(s, "-"))
		s = "";
	n = strlen(s);
	if (n % 2)
		return -1;
	buf = calloc(1, n / 2 + 1);
	if (!buf)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			free(buf);
			return -1;
		}
		buf[i] = (unsigned char)(hi << 4 | lo);
	}
	*out = buf;
	return (long)(n / 2);
}

static bool parse_u64(const char *s, unsigned long long *v)
{
	char *end;

	errno = 0;
	if (*s == '-')
		*v = (unsigned long long)strtoll(s, &end, 0);
	else
		*v = strtoull(s, &end, 0);
	return errno == 0 && *s && !*end;
}

/* Split on whitespace in place; a token starting with '#' ends the line (comment). */
static int split(char *line, char **argv, int max)
{
	int argc = 0;
	char *save = NULL;

	for (char *t = strtok_r(line, " \t\r\n", &save); t && argc < max;
	     t = strtok_r(NULL, " \t\r\n", &save)) {
		if (*t == '#')
			break;
		argv[argc++] = t;
	}
	return argc;
}

static char *artifact_path(const char *rel)
{
	static char path[PATH_MAX];

	if (rel[0] == '/')
		snprintf(path, sizeof(path), "%s", rel);
	else
		snprintf(path, sizeof(path), "%s/%s", artifact_dir, rel);
	return path;
}

/* ---- kernel feature facts (to tell "kernel lacks X" from "policy is broken") -------- */

static bool file_contains(const char *path, const char *needle, char *copy, size_t size)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (copy && size)
		copy[0] = '\0';
	if (!f)
		return false;
	n = fread(copy, 1, size - 1, f);
	fclose(f);
	copy[n] = '\0';
	return strstr(copy, needle) != NULL;
}

static bool path_exists(const char *p)
{
	return access(p, F_OK) == 0;
}

/* Why an attach error means "this kernel cannot do that" rather than a bug, or NULL. */
static const char *lacking_feature(struct bpf_program *prog, int err)
{
	static char reason[512];
	char lsm[256];
	enum bpf_prog_type type = bpf_program__type(prog);

	if (type == BPF_PROG_TYPE_LSM) {
		if (!path_exists("/sys/kernel/security/lsm"))
			return "kernel lacks feature: BPF LSM (securityfs not mounted, cannot confirm lsm=bpf)";
		if (!file_contains("/sys/kernel/security/lsm", "bpf", lsm, sizeof(lsm))) {
			snprintf(reason, sizeof(reason), "kernel lacks feature: BPF LSM not active (lsm=%s)", lsm);
			return reason;
		}
	}
	if (type == BPF_PROG_TYPE_KPROBE && !path_exists("/sys/bus/event_source/devices/kprobe") &&
	    !path_exists("/sys/kernel/tracing/kprobe_events"))
		return "kernel lacks feature: kprobes (no kprobe PMU, no kprobe_events)";
	if (type == BPF_PROG_TYPE_TRACING || type == BPF_PROG_TYPE_LSM || type == BPF_PROG_TYPE_EXT) {
		if (err == -ENOTSUPP || err == -EOPNOTSUPP) {
			snprintf(reason, sizeof(reason),
				 "kernel lacks feature: BPF trampoline for %s (%s)",
				 bpf_program__section_name(prog), strerror(-err == ENOTSUPP ? EOPNOTSUPP : -err));
			return reason;
		}
	}
	return NULL;
}

/* ---- directives ------------------------------------------------------------------- */

static void live_teardown(void);

static void rings_free(void);

static void close_object(void)
{
	live_teardown();
	rings_free();
	for (int i = 0; i < nlinks; i++)
		bpf_link__destroy(links[i]);
	nlinks = 0;
	bpf_object__close(obj);
	obj = NULL;
}

static const char *verifier_summary(const char *log);

static void do_object(int ln, int argc, char **argv)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .kernel_log_buf = verifier_log,
		    .kernel_log_size = LOG_SIZE, .kernel_log_level = 0);
	struct bpf_program *prog;
	char name[128];
	int err;

	if (argc != 2) {
		result(ln, "object", "fail", "usage: object <file>");
		return;
	}
	if (obj)
		close_object();
	obj_line = ln;
	obj_missing = "object failed to load";
	libbpf_msgs[0] = '\0';
	verifier_log[0] = '\0';
	obj = bpf_object__open_file(artifact_path(argv[1]), &opts);
	if (!obj) {
		err = -errno;
		result(ln, "object", "fail", "%s: open failed: %s: %s", argv[1], strerror(-err),
		       libbpf_summary());
		obj_missing = "object failed to open";
		return;
	}
	/* A program type this kernel will not load is a kernel gap, not a policy bug: leave
	 * that program out (later lines naming it skip) and load the rest. */
	char gaps[512] = "", types[256] = "";
	int loadable = 0;
	bpf_object__for_each_program(prog, obj) {
		enum bpf_prog_type type = bpf_program__type(prog);
		const char *tname = libbpf_bpf_prog_type_str(type);
		if (libbpf_probe_bpf_prog_type(type, NULL) == 0) {
			size_t used = strlen(gaps);
			snprintf(gaps + used, sizeof(gaps) - used, "%s%s", used ? ", " : "", bpf_program__name(prog));
			if (!strstr(types, tname)) {
				used = strlen(types);
				snprintf(types + used, sizeof(types) - used, "%s%s", used ? ", " : "", tname);
			}
			bpf_program__set_autoload(prog, false);
		} else {
			loadable++;
		}
	}
	if (!loadable) {
		result(ln, "object", "skip", "%s: kernel lacks feature: program type %s (does not load here: %s)",
		       argv[1], types, gaps);
		obj_missing = "object skipped (kernel lacks program type)";
		bpf_object__close(obj);
		obj = NULL;
		return;
	}
	err = bpf_object__load(obj);
	if (err) {
		failing_prog(name, sizeof(name));
		const char *why = verifier_summary(verifier_log);
		result(ln, "object", "fail", "%s: load failed (prog %s): %s: %s", argv[1], name,
		       strerror(-err), *why ? why : libbpf_summary());
		if (verifier_log[0])
			print_log(ln, name, verifier_log);
		bpf_object__close(obj);
		obj = NULL;
		return;
	}
	obj_missing = NULL;
	if (gaps[0])
		result(ln, "object", "ok", "%s: %d program(s) loaded; kernel lacks feature: program type %s (not loaded: %s)",
		       argv[1], loadable, types, gaps);
	else
		result(ln, "object", "ok", "%s: %d program(s) loaded", argv[1], loadable);
}

/* The verifier's own complaint: the lines after the last instruction dump and before
 * "processed N insns", joined into one line (e.g. "invalid access to packet ..."). */
static const char *verifier_summary(const char *log)
{
	static char out[512];
	const char *line = log, *start = NULL, *stop = NULL;

	out[0] = '\0';
	while (line && *line) {
		const char *p = line;
		while (*p >= '0' && *p <= '9')
			p++;
		if (p != line && *p == ':')
			start = NULL; /* an instruction line: the complaint comes after it */
		else if (!strncmp(line, "processed ", 10)) {
			stop = line;
			break;
		} else if (!start && *line != ';' && *line != '\n')
			start = line;
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	if (!start)
		return out;
	size_t n = stop ? (size_t)(stop - start) : strlen(start);
	if (n >= sizeof(out))
		n = sizeof(out) - 1;
	memcpy(out, start, n);
	out[n] = '\0';
	for (char *q = out; *q; q++)
		if (*q == '\n')
			*q = (q[1] ? ';' : '\0');
	return out;
}

static struct bpf_program *find_prog(int ln, const char *step, const char *name)
{
	struct bpf_program *prog;

	if (!obj) {
		result(ln, step, "skip", "%s (line %d)", obj_missing ? obj_missing : "no `object` line before this one",
		       obj_line);
		return NULL;
	}
	prog = bpf_object__find_program_by_name(obj, name);
	if (!prog) {
		result(ln, step, "fail", "no program named %s in the object", name);
		return NULL;
	}
	if (!bpf_program__autoload(prog)) {
		result(ln, step, "skip", "%s: kernel lacks feature: program type %s (not loaded at line %d)",
		       name, libbpf_bpf_prog_type_str(bpf_program__type(prog)), obj_line);
		return NULL;
	}
	return prog;
}

static void do_map_update(int ln, int argc, char **argv)
{
	unsigned char *key = NULL, *val = NULL, *full = NULL;
	long klen, vlen;
	struct bpf_map *map;
	size_t vsize;
	int err;

	if (argc != 4) {
		result(ln, "map-update", "fail", "usage: map-update <map> <key_hex> <value_hex>");
		return;
	}
	if (!obj) {
		result(ln, "map-update", "skip", "%s (line %d)", obj_missing ? obj_missing : "no `object` line before this one", obj_line);
		return;
	}
	map = bpf_object__find_map_by_name(obj, argv[1]);
	if (!map) {
		result(ln, "map-update", "fail", "no map named %s in the object", argv[1]);
		return;
	}
	klen = parse_hex(argv[2], &key);
	vlen = parse_hex(argv[3], &val);
	if (klen < 0 || vlen < 0) {
		result(ln, "map-update", "fail", "bad hex in key or value");
		goto out;
	}
	vsize = bpf_map__value_size(map);
	if ((size_t)klen != bpf_map__key_size(map) || (size_t)vlen != vsize) {
		result(ln, "map-update", "fail", "%s: key is %ld bytes (map wants %u), value %ld bytes (map wants %zu)",
		       argv[1], klen, bpf_map__key_size(map), vlen, vsize);
		goto out;
	}
	switch (bpf_map__type(map)) {
	case BPF_MAP_TYPE_PERCPU_ARRAY:
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH: {
		/* One value given: the same value on every possible CPU. */
		int ncpu = libbpf_num_possible_cpus();
		size_t stride = (vsize + 7) & ~(size_t)7;
		full = calloc((size_t)ncpu, stride);
		for (int c = 0; c < ncpu; c++)
			memcpy(full + c * stride, val, vsize);
		err = bpf_map__update_elem(map, key, klen, full, stride * ncpu, BPF_ANY);
		break;
	}
	default:
		err = bpf_map__update_elem(map, key, klen, val, vlen, BPF_ANY);
	}
	if (err)
		result(ln, "map-update", "fail", "%s: %s", argv[1], strerror(-err));
	else
		result(ln, "map-update", "ok", "%s", argv[1]);
out:
	free(key);
	free(val);
	free(full);
}

static void do_prog_run(int ln, int argc, char **argv)
{
	unsigned char *data = NULL;
	unsigned char out[4096];
	unsigned long long expect;
	struct bpf_program *prog;
	long len;
	int err;

	if (argc != 4 || !parse_u64(argv[2], &expect)) {
		result(ln, "prog-run", "fail", "usage: prog-run <prog> <expect_retval> <data_hex>");
		return;
	}
	prog = find_prog(ln, "prog-run", argv[1]);
	if (!prog)
		return;
	len = parse_hex(argv[3], &data);
	if (len < 0) {
		result(ln, "prog-run", "fail", "bad hex data");
		return;
	}
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data, .data_size_in = (__u32)len,
		    .data_out = out, .data_size_out = sizeof(out), .repeat = 1);
	err = bpf_prog_test_run_opts(bpf_program__fd(prog), &opts);
	if (err) {
		err = -errno;
		if (err == -ENOTSUPP || err == -EOPNOTSUPP)
			result(ln, "prog-run", "skip", "%s: kernel lacks feature: BPF_PROG_TEST_RUN for %s programs",
			       argv[1], libbpf_bpf_prog_type_str(bpf_program__type(prog)));
		else
			result(ln, "prog-run", "fail", "%s: BPF_PROG_TEST_RUN: %s", argv[1], strerror(-err));
	} else if (opts.retval != (__u32)expect) {
		result(ln, "prog-run", "fail", "%s: retval=%u expected=%llu", argv[1], opts.retval, expect);
	} else {
		result(ln, "prog-run", "ok", "%s: retval=%u", argv[1], opts.retval);
	}
	free(data);
}

static void keep_link(int ln, struct bpf_link *link, const char *what)
{
	if (nlinks < KT_MAX_LINKS)
		links[nlinks++] = link;
	result(ln, "attach", "ok", "%s", what);
}

/* tc: tcx link first (6.6+), else a clsact qdisc + cls_bpf filter (direct-action). */
static bool attach_tc(int ln, struct bpf_program *prog, const char *target)
{
	char ifname[IF_NAMESIZE + 1];
	const char *colon = strchr(target, ':');
	bool egress = colon && !strcmp(colon + 1, "egress");
	size_t n = colon ? (size_t)(colon - target) : strlen(target);
	int ifindex, fd, err;

	if (n > IF_NAMESIZE)
		n = IF_NAMESIZE;
	memcpy(ifname, target, n);
	ifname[n] = '\0';
	ifindex = (int)if_nametoindex(ifname);
	if (!ifindex) {
		result(ln, "attach", "fail", "%s: no interface %s", bpf_program__name(prog), ifname);
		return false;
	}
	fd = bpf_link_create(bpf_program__fd(prog), ifindex,
			     egress ? KT_BPF_TCX_EGRESS : KT_BPF_TCX_INGRESS, NULL);
	if (fd >= 0) {
		/* Keep the fd open for the artifact's lifetime; process exit detaches. */
		result(ln, "attach", "ok", "%s: tcx %s on %s", bpf_program__name(prog),
		       egress ? "egress" : "ingress", ifname);
		return true;
	}
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
		    .attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, tc, .prog_fd = bpf_program__fd(prog), .handle = 1, .priority = 1);
	err = bpf_tc_hook_create(&hook);
	if (err && err != -EEXIST) {
		result(ln, "attach", "fail", "%s: tcx unavailable and clsact qdisc failed: %s",
		       bpf_program__name(prog), strerror(-err));
		return false;
	}
	err = bpf_tc_attach(&hook, &tc);
	if (err) {
		result(ln, "attach", "fail", "%s: clsact attach on %s: %s", bpf_program__name(prog), ifname,
		       strerror(-err));
		return false;
	}
	result(ln, "attach", "ok", "%s: clsact %s on %s (no tcx on this kernel)",
	       bpf_program__name(prog), egress ? "egress" : "ingress", ifname);
	return true;
}

static void do_attach(int ln, int argc, char **argv)
{
	struct bpf_program *prog;
	struct bpf_link *link = NULL;
	const char *target;
	char what[PATH_MAX + 256];
	int err;

	if (argc != 3) {
		result(ln, "attach", "fail", "usage: attach <prog> <target>");
		return;
	}
	prog = find_prog(ln, "attach", argv[1]);
	if (!prog) {
		attach_gap_line = ln;
		return;
	}
	target = argv[2];
	switch (bpf_program__type(prog)) {
	case BPF_PROG_TYPE_XDP: {
		int ifindex = (int)if_nametoindex(target);
		if (!ifindex) {
			result(ln, "attach", "fail", "%s: no interface %s", argv[1], target);
			return;
		}
		link = bpf_program__attach_xdp(prog, ifindex);
		snprintf(what, sizeof(what), "%s: xdp link on %s", argv[1], target);
		break;
	}
	case BPF_PROG_TYPE_SCHED_CLS:
		if (!attach_tc(ln, prog, target))
			attach_gap_line = ln;
		return;
	case BPF_PROG_TYPE_CGROUP_SKB:
	case BPF_PROG_TYPE_CGROUP_SOCK:
	case BPF_PROG_TYPE_CGROUP_SOCK_ADDR:
	case BPF_PROG_TYPE_CGROUP_DEVICE:
	case BPF_PROG_TYPE_CGROUP_SYSCTL:
	case BPF_PROG_TYPE_CGROUP_SOCKOPT: {
		/* Relative cgroup targets live under $KT_CGROUP_ROOT (a scratch cgroup on the host). */
		char path[PATH_MAX];
		const char *root = getenv("KT_CGROUP_ROOT");
		if (target[0] == '/' && !root)
			snprintf(path, sizeof(path), "%s", target);
		else
			snprintf(path, sizeof(path), "%s/%s", root ? root : "/sys/fs/cgroup",
				 target[0] == '/' ? target + 1 : target);
		mkdir(path, 0755);
		int cg = open(path, O_RDONLY | O_DIRECTORY);
		if (cg < 0) {
			result(ln, "attach", "fail", "%s: cgroup %s: %s", argv[1], path, strerror(errno));
			return;
		}
		link = bpf_program__attach_cgroup(prog, cg);
		close(cg);
		snprintf(what, sizeof(what), "%s: cgroup link on %s", argv[1], path);
		break;
	}
	default:
		link = bpf_program__attach(prog);
		snprintf(what, sizeof(what), "%s: %s", argv[1], bpf_program__section_name(prog));
	}
	if (!link) {
		err = -errno;
		const char *why = lacking_feature(prog, err);
		if (why)
			result(ln, "attach", "skip", "%s: %s (attach: %s)", argv[1], why, strerror(-err));
		else
			result(ln, "attach", "fail", "%s: attach failed: %s: %s", argv[1], strerror(-err),
			       libbpf_summary());
		attach_gap_line = ln;
		return;
	}
	keep_link(ln, link, what);
}

static void do_seccomp(int ln, int argc, char **argv)
{
	FILE *f;
	long size;

	free(filter);
	filter = NULL;
	filter_missing = "seccomp filter file unusable";
	if (argc != 2) {
		result(ln, "seccomp", "fail", "usage: seccomp <file>");
		return;
	}
	f = fopen(artifact_path(argv[1]), "rb");
	if (!f) {
		result(ln, "seccomp", "fail", "%s: %s", argv[1], strerror(errno));
		return;
	}
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	rewind(f);
	if (size <= 0 || size % 8 || size / 8 > BPF_MAXINSNS) {
		result(ln, "seccomp", "fail", "%s: %ld bytes is not 1..%d sock_filter instructions",
		       argv[1], size, BPF_MAXINSNS);
		fclose(f);
		return;
	}
	filter = malloc((size_t)size);
	if (fread(filter, 1, (size_t)size, f) != (size_t)size) {
		result(ln, "seccomp", "fail", "%s: short read", argv[1]);
		free(filter);
		filter = NULL;
	} else {
		filter_len = (unsigned short)(size / 8);
		result(ln, "seccomp", "ok", "%s: %u instructions", argv[1], filter_len);
	}
	fclose(f);
}

/* Does this kernel run x32 syscalls at all (CONFIG_X86_X32_ABI and not syscall.x32=n)? */
static bool x32_supported(void)
{
	static int known = -1;

	if (known < 0) {
		long r = syscall(0x40000000L | SYS_getpid);
		known = !(r == -1 && errno == ENOSYS);
	}
	return known;
}

/* Child side: install the filter, make one syscall, report errno through the pipe. */
static void syscall_child(int wfd, long nr, unsigned long long *a)
{
	struct sock_fprog prog = { .len = filter_len, .filter = filter };
	long report[2];

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
		report[0] = -1;
		report[1] = errno;
		(void)!write(wfd, report, sizeof(report));
		_exit(3);
	}
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
		report[0] = -2;
		report[1] = errno;
		(void)!write(wfd, report, sizeof(report));
		_exit(3);
	}
	errno = 0;
	report[0] = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	report[1] = report[0] == -1 ? errno : 0;
	(void)!write(wfd, report, sizeof(report));
	syscall(SYS_exit_group, 0);
	_exit(0);
}

static void do_syscall(int ln, int argc, char **argv)
{
	unsigned long long nr, a[6] = { 0 }, want;
	long report[2];
	int pfd[2], status;
	const char *eq;
	pid_t pid;
	ssize_t got;

	if (argc < 3 || argc > 9 || !parse_u64(argv[1], &nr) || !(eq = strchr(argv[2], '=')) ||
	    !parse_u64(eq + 1, &want)) {
		result(ln, "syscall", "fail", "usage: syscall <nr> errno=N|signal=N|not-errno=N [a0 .. a5]");
		return;
	}
	for (int i = 3; i < argc; i++)
		if (!parse_u64(argv[i], &a[i - 3])) {
			result(ln, "syscall", "fail", "bad argument %s", argv[i]);
			return;
		}
	if (!filter) {
		result(ln, "syscall", "skip", "%s", filter_missing);
		return;
	}
	if (pipe(pfd)) {
		result(ln, "syscall", "fail", "pipe: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		alarm(10);
		syscall_child(pfd[1], (long)nr, a);
	}
	close(pfd[1]);
	got = read(pfd[0], report, sizeof(report));
	close(pfd[0]);
	waitpid(pid, &status, 0);

	char seen[128];
	bool killed = WIFSIGNALED(status);
	if (killed)
		snprintf(seen, sizeof(seen), "signal=%d", WTERMSIG(status));
	else if (got != sizeof(report))
		snprintf(seen, sizeof(seen), "exit=%d without reporting", WEXITSTATUS(status));
	else if (report[0] == -1 || report[0] == -2) {
		if (WEXITSTATUS(status) == 3) {
			result(ln, "syscall", "fail", "installing the filter failed: %s", strerror((int)report[1]));
			return;
		}
		snprintf(seen, sizeof(seen), "errno=%ld", report[1]);
	} else
		snprintf(seen, sizeof(seen), "ret=%ld", report[0]);

	bool ok;
	size_t klen = (size_t)(eq - argv[2]);
	/* An allowed x32 syscall on a kernel without the x32 ABI returns ENOSYS whatever the
	 * filter says: that expectation is untestable here, not wrong. */
	if ((nr & 0x40000000ULL) && !x32_supported() && !killed && report[0] == -1 &&
	    report[1] == ENOSYS && !strncmp(argv[2], "not-errno", klen) && klen == 9 && want == ENOSYS) {
		result(ln, "syscall", "skip", "nr=%llu: kernel lacks feature: x32 syscall ABI (ENOSYS even unfiltered)", nr);
		return;
	}
	if (!strncmp(argv[2], "errno", klen) && klen == 5)
		ok = !killed && got == sizeof(report) && report[0] == -1 && report[1] == (long)want;
	else if (!strncmp(argv[2], "signal", klen) && klen == 6)
		ok = killed && WTERMSIG(status) == (int)want;
	else if (!strncmp(argv[2], "not-errno", klen) && klen == 9)
		ok = !killed && got == sizeof(report) && !(report[0] == -1 && report[1] == (long)want);
	else {
		result(ln, "syscall", "fail", "unknown expectation %s (errno=N, signal=N, not-errno=N)", argv[2]);
		return;
	}
	result(ln, "syscall", ok ? "ok" : "fail", "nr=%llu want %s got %s", nr, argv[2], seen);
}

/* ---- exec-expect and event-expect ------------------------------------------------
 *
 * exec-expect runs a shell command with the object's programs attached; event-expect
 * then asks what the object's ring buffers received while that command ran. Before the
 * fork every ring buffer of the object is drained (records of earlier lines and other
 * processes are dropped); after waitpid() it is drained again and the records kept. A
 * BPF program submits from the syscall (or exit) path of the process itself, so by the
 * time the child has been reaped every record it caused is in the ring. */

#define KT_MAX_RECORDS 8192     /* records kept per command; a flood beyond is counted */
#define KT_MAX_FOREIGN 4096     /* ... of which records of other pids (a busy host) */
#define KT_MAX_RINGS 8          /* ring buffer maps consumed per object */
#define KT_BUSY_RECORDS 64      /* foreign records that mean the ring is shared with a flood */
#define KT_RERUNS 10            /* re-runs of a command whose expected event a flood crowded out */

struct kt_record {
	const char *map;        /* name of the ring buffer map it came from */
	size_t len;
	unsigned char *data;
};

static struct ring_buffer *rings;
static const char *ring_names[KT_MAX_RINGS];
static int nrings;
static bool ring_keep;          /* false while draining before a command */
static struct kt_record records[KT_MAX_RECORDS];
static int nrecords, records_dropped;
static int exec_line;           /* line of the last exec-expect that ran, 0 = none */
static int exec_skip_line;      /* ... or of the last one that was skipped */
static pid_t exec_pid;          /* the forked child (it execs /bin/sh -c <cmd>) */
static char exec_cmd[256];
static char *exec_full;         /* the whole command, for re-runs */
static unsigned long pid_offs[8]; /* pid@ offsets of the script's event-expect lines */
static int npid_offs;
static int nforeign;

static void records_clear(void)
{
	for (int i = 0; i < nrecords; i++)
		free(records[i].data);
	nrecords = records_dropped = nforeign = 0;
}

/* A record of the command's own pid (at any pid@ offset the script uses)? Those are kept
 * first: a flood from other processes fills only the KT_MAX_FOREIGN part. */
static bool record_is_ours(const void *data, size_t len)
{
	for (int i = 0; i < npid_offs; i++) {
		uint32_t v;
		if (pid_offs[i] + 4 <= len) {
			memcpy(&v, (const char *)data + pid_offs[i], 4);
			if (v == (uint32_t)exec_pid)
				return true;
		}
	}
	return false;
}

static void rings_free(void)
{
	ring_buffer__free(rings);
	rings = NULL;
	nrings = 0;
	records_clear();
	exec_line = exec_skip_line = 0;
}

static int ring_record(void *ctx, void *data, size_t len)
{
	if (!ring_keep)
		return 0;
	bool ours = record_is_ours(data, len);
	if (nrecords == KT_MAX_RECORDS || (!ours && nforeign == KT_MAX_FOREIGN)) {
		records_dropped++;
		return 0;
	}
	nforeign += !ours;
	records[nrecords].map = ctx;
	records[nrecords].len = len;
	records[nrecords].data = malloc(len);
	if (!records[nrecords].data) {
		records_dropped++;
		return 0;
	}
	memcpy(records[nrecords].data, data, len);
	nrecords++;
	return 0;
}

/* Every BPF_MAP_TYPE_RINGBUF of the loaded object, consumed through one ring_buffer. */
static void rings_open(void)
{
	struct bpf_map *map;

	if (rings || !obj)
		return;
	bpf_object__for_each_map(map, obj) {
		int fd = bpf_map__fd(map);
		if (bpf_map__type(map) != BPF_MAP_TYPE_RINGBUF || fd < 0 || nrings == KT_MAX_RINGS)
			continue;
		ring_names[nrings] = bpf_map__name(map);
		if (!rings)
			rings = ring_buffer__new(fd, ring_record, (void *)ring_names[nrings], NULL);
		else if (ring_buffer__add(rings, fd, ring_record, (void *)ring_names[nrings]))
			continue;
		if (rings)
			nrings++;
	}
}

static void rings_drain(bool keep)
{
	if (!rings)
		return;
	ring_keep = keep;
	ring_buffer__consume(rings);
	ring_keep = false;
}

/* Run `/bin/sh -c cmd` (20 s limit) with the rings drained before the fork and consumed
 * while it runs (a flood from other processes must not fill a ring and crowd out the
 * command's records) and after it was reaped. Returns the wait status. */
static int run_command(const char *cmd)
{
	int status = 0;
	pid_t pid;

	records_clear();
	rings_open();
	rings_drain(false);
	fflush(stdout);
	exec_pid = -1;
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		alarm(20);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	exec_pid = pid;
	for (;;) {
		pid_t w = waitpid(pid, &status, rings ? WNOHANG : 0);
		if (w == pid || (w < 0 && errno != EINTR))
			break;
		if (rings) { /* consume, not poll: a program may submit with BPF_RB_NO_WAKEUP */
			struct timespec ms = { 0, 100000 }; /* 0.1 ms */
			ring_keep = true;
			ring_buffer__consume(rings);
			ring_keep = false;
			nanosleep(&ms, NULL);
		}
	}
	rings_drain(true);
	return status;
}

/* exec-expect exit=N|signal=N <shell command>: the command runs via /bin/sh -c, 20 s
 * limit. signal=N: the command (often `exec`ing the program under test) must die of
 * signal N, e.g. signal=9 for a Sigkill policy. */
static void do_exec_expect(int ln, char *rest)
{
	char *cmd, *expect;
	unsigned long long want;
	bool want_signal;
	int status;

	while (*rest == ' ' || *rest == '\t')
		rest++;
	expect = rest;
	cmd = strpbrk(rest, " \t");
	want_signal = !strncmp(expect, "signal=", 7);
	if (!cmd || (strncmp(expect, "exit=", 5) && !want_signal)) {
		result(ln, "exec-expect", "fail", "usage: exec-expect exit=N|signal=N <cmd...>");
		return;
	}
	*cmd++ = '\0';
	cmd[strcspn(cmd, "\r\n")] = '\0';
	if (!parse_u64(expect + (want_signal ? 7 : 5), &want)) {
		result(ln, "exec-expect", "fail", "bad expectation %s", expect);
		return;
	}
	records_clear();
	exec_line = 0;
	exec_skip_line = ln;
	if (attach_gap_line) {
		result(ln, "exec-expect", "skip", "`%s` not run: the attach at line %d did not happen",
		       cmd, attach_gap_line);
		return;
	}
	status = run_command(cmd);
	exec_line = ln;
	exec_skip_line = 0;
	snprintf(exec_cmd, sizeof(exec_cmd), "%s", cmd);
	free(exec_full);
	exec_full = strdup(cmd);
	if (want_signal)
		result(ln, "exec-expect", WIFSIGNALED(status) && WTERMSIG(status) == (int)want ? "ok" : "fail",
		       WIFSIGNALED(status) ? "`%s` killed by signal %d (want %s)" : "`%s` exit=%d (want %s)", cmd,
		       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), expect);
	else if (WIFSIGNALED(status))
		result(ln, "exec-expect", "fail", "`%s` killed by signal %d (want %s)", cmd, WTERMSIG(status), expect);
	else
		result(ln, "exec-expect", WEXITSTATUS(status) == (int)want ? "ok" : "fail",
		       "`%s` exit=%d (want %s)", cmd, WEXITSTATUS(status), expect);
}

/* One event-expect filter or note: <kind>@<offset>[=<value>]. */
struct kt_field {
	char kind[8];           /* pid, eq, bits, str, u32 (note), s32 (note), text (note) */
	unsigned long off;
	char *value;            /* after '=', or NULL */
};

static bool parse_field(const char *tok, struct kt_field *f)
{
	const char *at = strchr(tok, '@');
	char *end;

	if (!at || at == tok || (size_t)(at - tok) >= sizeof(f->kind))
		return false;
	memcpy(f->kind, tok, at - tok);
	f->kind[at - tok] = '\0';
	f->off = strtoul(at + 1, &end, 0);
	if (end == at + 1 || (*end && *end != '='))
		return false;
	f->value = *end == '=' ? end + 1 : NULL;
	return true;
}

static bool rec_u32(const struct kt_record *r, unsigned long off, uint32_t *v)
{
	if (off + 4 > r->len)
		return false;
	memcpy(v, r->data + off, 4);
	return true;
}

static bool field_matches(const struct kt_record *r, const struct kt_field *f)
{
	uint32_t v;

	if (!strcmp(f->kind, "pid"))
		return rec_u32(r, f->off, &v) && v == (uint32_t)exec_pid;
	if (!strcmp(f->kind, "eq")) {       /* eq@OFF=V[,V...]: the u32 is one of them */
		char copy[128], *save = NULL;
		unsigned long long want;
		if (!f->value || !rec_u32(r, f->off, &v))
			return false;
		snprintf(copy, sizeof(copy), "%s", f->value);
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
			if (parse_u64(t, &want) && v == (uint32_t)want)
				return true;
		return false;
	}
	if (!strcmp(f->kind, "bits")) {     /* bits@OFF=MASK: every bit of MASK set */
		unsigned long long mask;
		return f->value && parse_u64(f->value, &mask) && rec_u32(r, f->off, &v) &&
		       (v & (uint32_t)mask) == (uint32_t)mask;
	}
	if (!strcmp(f->kind, "str")) {      /* str@OFF=TEXT: NUL-terminated string equals TEXT */
		size_t n = f->value ? strlen(f->value) : 0;
		return f->value && f->off + n < r->len && !memcmp(r->data + f->off, f->value, n) &&
		       r->data[f->off + n] == '\0';
	}
	return true;                        /* notes do not filter */
}

/* A note for the detail: u32@OFF=name, s32@OFF=name, text@OFF=name (up to 64 bytes). */
static void append_note(char *out, size_t size, const struct kt_record *r, const struct kt_field *f)
{
	size_t used = strlen(out);
	uint32_t v;

	if (!f->value)
		return;
	if (!strcmp(f->kind, "text") && f->off < r->len) {
		size_t n = strnlen((const char *)r->data + f->off, r->len - f->off);
		snprintf(out + used, size - used, " %s %.*s", f->value, (int)(n > 64 ? 64 : n),
			 (const char *)r->data + f->off);
	} else if (!strcmp(f->kind, "u32") && rec_u32(r, f->off, &v)) {
		snprintf(out + used, size - used, " %s %u", f->value, v);
	} else if (!strcmp(f->kind, "s32") && rec_u32(r, f->off, &v)) {
		snprintf(out + used, size - used, " %s %d", f->value, (int32_t)v);
	}
}

/*
 * event-expect posted|none <map> <what> [pid@OFF] [eq@OFF=V,..] [bits@OFF=MASK] [str@OFF=TEXT]
 *              [u32|s32|text@OFF=name ...]
 * Records in ring buffer <map> caught while the last exec-expect's command ran, filtered:
 * pid@ = the u32 at OFF is that command's pid (the forked child, which execs /bin/sh -c;
 * `exec prog` in the command keeps the pid); eq@, bits@, str@ as commented above. posted:
 * at least one record passes; none: not one. <what> names the hook and policy for the
 * detail; the notes print fields of the first record that passed.
 * `event-expect fail <why...>`: a line bpfpolicy could not resolve (reported as a fail).
 */
static void do_event_expect(int ln, int argc, char **argv)
{
	struct kt_field fields[12];
	int nfields = 0, matched = 0, in_map = 0, first = -1;
	bool posted;
	char detail[512] = "";

	if (argc >= 2 && !strcmp(argv[1], "fail")) {
		for (int i = 2; i < argc; i++) {
			size_t used = strlen(detail);
			snprintf(detail + used, sizeof(detail) - used, "%s%s", i > 2 ? " " : "", argv[i]);
		}
		result(ln, "event-expect", "fail", "%s", detail);
		return;
	}
	if (argc < 4 || (strcmp(argv[1], "posted") && strcmp(argv[1], "none")) || argc - 4 > 12) {
		result(ln, "event-expect", "fail", "usage: event-expect posted|none <map> <what> [field@OFF[=V]]...");
		return;
	}
	posted = !strcmp(argv[1], "posted");
	for (int i = 4; i < argc; i++)
		if (!parse_field(argv[i], &fields[nfields++])) {
			result(ln, "event-expect", "fail", "bad field %s (want kind@offset[=value])", argv[i]);
			return;
		}
	if (exec_skip_line) {
		result(ln, "event-expect", "skip", "%s: the exec-expect at line %d did not run", argv[3], exec_skip_line);
		return;
	}
	if (!exec_line) {
		result(ln, "event-expect", "fail", "no exec-expect before this line");
		return;
	}
	bool have_map = false;
	for (int i = 0; i < nrings; i++)
		have_map |= !strcmp(ring_names[i], argv[2]);
	if (!have_map) {
		result(ln, "event-expect", "fail", "%s: the object has no ring buffer map named %s", argv[3], argv[2]);
		return;
	}
	int reruns = 0;
	for (;;) {
		matched = in_map = 0;
		first = -1;
		for (int i = 0; i < nrecords; i++) {
			bool ok = true;
			if (strcmp(records[i].map, argv[2]))
				continue;
			in_map++;
			for (int j = 0; j < nfields && ok; j++)
				ok = field_matches(&records[i], &fields[j]);
			if (ok && matched++ == 0)
				first = i;
		}
		/* An expected record missing while other processes flooded the same ring (a busy
		 * host: the program's reserve fails when the ring is full): run the command again. */
		if (!posted || matched || nforeign < KT_BUSY_RECORDS || reruns == KT_RERUNS || !exec_full)
			break;
		reruns++;
		run_command(exec_full);
	}
	snprintf(detail, sizeof(detail), "%s %s %d event(s) from pid %d while line %d ran (`%.80s`); %d record(s) in %s",
		 artifact, argv[3], matched, (int)exec_pid, exec_line, exec_cmd, in_map, argv[2]);
	if (reruns) {
		size_t used = strlen(detail);
		snprintf(detail + used, sizeof(detail) - used, " (command re-run %d time(s): %d records of other processes)",
			 reruns, nforeign);
	}
	if (records_dropped) {
		size_t used = strlen(detail);
		snprintf(detail + used, sizeof(detail) - used, ", %d not kept", records_dropped);
	}
	if (first >= 0) {
		size_t used = strlen(detail);
		snprintf(detail + used, sizeof(detail) - used, "; first:");
		for (int j = 0; j < nfields; j++)
			append_note(detail, sizeof(detail), &records[first], &fields[j]);
	}
	result(ln, "event-expect", (posted ? matched > 0 : matched == 0) ? "ok" : "fail", "%s (want %s)", detail,
	       posted ? "posted" : "none");
}

/* ---- live traffic: veth pair, real packets through the attached program --------------
 *
 * `live <prog> <expect_retval> <data_hex> [ingress|egress]` sends the same bytes a
 * `prog-run` line tests, as a real frame over a veth pair, through the program attached
 * the way the controller attaches it, and checks whether the frame arrived:
 *
 *   endpoint namespace (the runner's)          peer namespace (created here)
 *        kt-ep  <------------ veth ------------>  kt-peer
 *
 *   XDP            attached to kt-ep; ingress: sent from kt-peer (AF_PACKET), counted on kt-ep
 *   tc             tcx (else clsact) on kt-ep; ingress as above, egress sent from kt-ep and
 *                  counted on kt-peer
 *   cgroup_skb     attached to the cgroup `kt-live`; a raw IP socket created by the runner
 *                  while inside that cgroup receives (ingress: the frame's destination is
 *                  an address of kt-ep) or sends (egress, IP_HDRINCL) the packet
 *
 * Delivery means "the exact bytes showed up on the other side within 300 ms" (VLAN tags
 * may be moved out of band by the receiving stack, so they are ignored when comparing).
 * Expected delivery follows the retval as in prog-run: XDP_DROP=1 / TC_ACT_SHOT=2 /
 * cgroup 0 drop, anything else passes.
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <netinet/in.h>
#include <poll.h>

#define LIVE_EP "kt-ep"
#define LIVE_PEER "kt-peer"
#define LIVE_WAIT_MS 300

static int live_ep_ns = -1, live_peer_ns = -1; /* netns fds; -1 = veth pair not set up yet */
static const char *live_missing;               /* why the veth pair could not be made */
static struct bpf_program *live_attached[KT_MAX_LINKS]; /* programs attached for live traffic */
static bool live_egress[KT_MAX_LINKS];                  /* ... and in which direction */
static int nlive_attached;
static char live_cgroup[PATH_MAX];
static char live_hook[64]; /* how the program of this line is attached, for the detail */
static char live_hooks[KT_MAX_LINKS][64];

struct nl_req {
	struct nlmsghdr nh;
	struct ifinfomsg ifi;
	char attrs[512];
};

static struct rtattr *nl_put(struct nlmsghdr *nh, int type, const void *data, size_t len)
{
	struct rtattr *rta = (struct rtattr *)((char *)nh + NLMSG_ALIGN(nh->nlmsg_len));

	rta->rta_type = (unsigned short)type;
	rta->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(rta->rta_len);
	return rta;
}

static void nl_end(struct nlmsghdr *nh, struct rtattr *nest)
{
	nest->rta_len = (unsigned short)((char *)nh + nh->nlmsg_len - (char *)nest);
}

/* Send one request on a fresh rtnetlink socket of the current netns; 0 or -errno. */
static int nl_talk(struct nlmsghdr *nh)
{
	struct {
		struct nlmsghdr nh;
		struct nlmsgerr err;
	} ack;
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE), err;

	if (s < 0)
		return -errno;
	nh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	if (send(s, nh, nh->nlmsg_len, 0) < 0 || recv(s, &ack, sizeof(ack), 0) < 0)
		err = -errno;
	else
		err = ack.nh.nlmsg_type == NLMSG_ERROR ? ack.err.error : 0;
	close(s);
	return err;
}

/* ip link add kt-ep type veth peer name kt-peer netns <peer_ns> */
static int make_veth(int peer_ns)
{
	struct nl_req req = { .nh = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)),
				      .nlmsg_type = RTM_NEWLINK,
				      .nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL } };
	struct rtattr *info, *data, *peer;
	struct ifinfomsg peer_ifi = { 0 };

	nl_put(&req.nh, IFLA_IFNAME, LIVE_EP, sizeof(LIVE_EP));
	info = nl_put(&req.nh, IFLA_LINKINFO, NULL, 0);
	nl_put(&req.nh, IFLA_INFO_KIND, "veth", 4);
	data = nl_put(&req.nh, IFLA_INFO_DATA, NULL, 0);
	peer = nl_put(&req.nh, VETH_INFO_PEER, &peer_ifi, sizeof(peer_ifi));
	nl_put(&req.nh, IFLA_IFNAME, LIVE_PEER, sizeof(LIVE_PEER));
	nl_put(&req.nh, IFLA_NET_NS_FD, &peer_ns, sizeof(peer_ns));
	nl_end(&req.nh, peer);
	nl_end(&req.nh, data);
	nl_end(&req.nh, info);
	return nl_talk(&req.nh);
}

/* ip addr add <addr> dev <ifindex> nodad (the destination of ingress vectors is local). */
static int add_address(int ifindex, int family, const void *addr)
{
	struct {
		struct nlmsghdr nh;
		struct ifaddrmsg ifa;
		char attrs[64];
	} req = { .nh = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg)), .nlmsg_type = RTM_NEWADDR,
			  .nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE },
		  .ifa = { .ifa_family = (unsigned char)family, .ifa_prefixlen = family == AF_INET ? 32 : 128,
			   .ifa_flags = IFA_F_NODAD, .ifa_index = (unsigned)ifindex } };
	size_t len = family == AF_INET ? 4 : 16;

	nl_put(&req.nh, IFA_LOCAL, addr, len);
	nl_put(&req.nh, IFA_ADDRESS, addr, len);
	int err = nl_talk(&req.nh);
	return err == -EEXIST ? 0 : err;
}

/* ip route replace default dev <ifindex> (egress packets need a route out of kt-ep). */
static int add_default_route(int ifindex, int family)
{
	struct {
		struct nlmsghdr nh;
		struct rtmsg rt;
		char attrs[64];
	} req = { .nh = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg)), .nlmsg_type = RTM_NEWROUTE,
			  .nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE },
		  .rt = { .rtm_family = (unsigned char)family, .rtm_table = RT_TABLE_MAIN,
			  .rtm_protocol = RTPROT_BOOT, .rtm_scope = RT_SCOPE_LINK, .rtm_type = RTN_UNICAST } };

	nl_put(&req.nh, RTA_OIF, &ifindex, sizeof(ifindex));
	return nl_talk(&req.nh);
}

static int set_link(const char *ifname, short flags_on, const unsigned char *mac)
{
	struct ifreq ifr = { 0 };
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), err = 0;

	if (s < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (mac) {
		ifr.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
		memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
		if (ioctl(s, SIOCSIFHWADDR, &ifr))
			err = -errno;
	}
	if (!err && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= flags_on;
		if (ioctl(s, SIOCSIFFLAGS, &ifr))
			err = -errno;
	}
	close(s);
	return err;
}

static void write_sysctl(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	if (fd >= 0) {
		(void)!write(fd, value, strlen(value));
		close(fd);
	}
}

/* Both namespaces, the veth pair up (NOARP: egress needs no neighbour answers), no
 * reverse-path filter (vector sources are documentation addresses with no route back). */
static const unsigned char ep_mac[6] = { 2, 0, 0, 0, 0, 1 };

static bool live_setup(void)
{
	int err;

	if (live_ep_ns >= 0 || live_missing)
		return !live_missing;
	live_ep_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (live_ep_ns < 0 || unshare(CLONE_NEWNET)) {
		live_missing = "cannot create a network namespace for the peer";
		return false;
	}
	live_peer_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	set_link("lo", IFF_UP, NULL);
	if (setns(live_ep_ns, CLONE_NEWNET) || live_peer_ns < 0) {
		live_missing = "cannot switch network namespaces";
		return false;
	}
	err = make_veth(live_peer_ns);
	if (err) {
		static char why[160];
		snprintf(why, sizeof(why), "kernel lacks feature: veth (creating the pair: %s)", strerror(-err));
		live_missing = why;
		return false;
	}
	write_sysctl("/proc/sys/net/ipv4/conf/all/rp_filter", "0");
	write_sysctl("/proc/sys/net/ipv4/conf/" LIVE_EP "/rp_filter", "0");
	write_sysctl("/proc/sys/net/ipv6/conf/" LIVE_EP "/disable_ipv6", "0");
	/* Promiscuous: XDP/tc vectors keep their own destination MAC (the programs see the
	 * exact prog-run bytes); frames for the IP layer are readdressed to ep_mac. */
	err = set_link(LIVE_EP, IFF_UP | IFF_NOARP | IFF_PROMISC, ep_mac);
	setns(live_peer_ns, CLONE_NEWNET);
	err = err ? err : set_link(LIVE_PEER, IFF_UP | IFF_NOARP | IFF_PROMISC, NULL);
	setns(live_ep_ns, CLONE_NEWNET);
	if (err) {
		live_missing = "cannot bring the veth pair up";
		return false;
	}
	return true;
}

/* A packet socket on `ifname` in netns `ns`: proto ETH_P_ALL for the sender, the frame's
 * own ethertype for a receiver behind tc ingress (taps see frames before tc, protocol
 * handlers after it). */
static int packet_socket(int ns, const char *ifname, unsigned short proto)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(proto) };
	int s;

	setns(ns, CLONE_NEWNET);
	s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(proto));
	sll.sll_ifindex = (int)if_nametoindex(ifname);
	if (s >= 0 && bind(s, (struct sockaddr *)&sll, sizeof(sll))) {
		close(s);
		s = -1;
	}
	setns(live_ep_ns, CLONE_NEWNET);
	return s;
}

/* Same frame, allowing for VLAN tags the receiver moved out of band. */
static bool same_frame(const unsigned char *got, size_t glen, const unsigned char *sent, size_t slen)
{
	for (size_t tags = 0; tags <= 2; tags++) {
		size_t cut = 4 * tags;
		if (slen < 12 + cut || glen != slen - cut)
			continue;
		if (!memcmp(got, sent, 12) && !memcmp(got + 12, sent + 12 + cut, slen - 12 - cut))
			return true;
	}
	return false;
}

/* The same IP packet, up to what the sending stack fills in for IP_HDRINCL (IPv4 total
 * length — vectors may carry trailing bytes —, identification and header checksum). */
static bool same_ip_packet(const unsigned char *got, size_t glen, const unsigned char *sent, size_t slen)
{
	if (glen != slen || glen < 20)
		return false;
	if ((sent[0] >> 4) != 4)
		return !memcmp(got, sent, slen);
	return !memcmp(got, sent, 2) && !memcmp(got + 6, sent + 6, 4) && !memcmp(got + 12, sent + 12, slen - 12);
}

/* Count copies of `data` arriving on a receiving socket within LIVE_WAIT_MS. `ip_level`:
 * compare from the IP header on (a raw IP receiver, or a frame the stack built). */
static int count_arrivals(int s, const unsigned char *data, size_t len, bool raw_ip, bool ip_level)
{
	unsigned char buf[4096];
	int seen = 0;
	struct pollfd p = { .fd = s, .events = POLLIN };
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left = LIVE_WAIT_MS - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		ssize_t n = recv(s, buf, sizeof(buf), 0);
		if (n <= 0)
			continue;
		if (raw_ip ? same_ip_packet(buf, (size_t)n, data + 14, len - 14)
		    : ip_level ? n > 14 && same_ip_packet(buf + 14, (size_t)n - 14, data + 14, len - 14)
			       : same_frame(buf, (size_t)n, data, len))
			seen++;
	}
	return seen;
}

/* The IPv4 header checksum (the vectors leave it zero; ip_rcv drops such packets). */
static void fix_ipv4_checksum(unsigned char *frame, size_t len)
{
	unsigned sum = 0;
	size_t ihl;

	if (len < 34 || frame[12] != 0x08 || frame[13] != 0x00)
		return;
	ihl = (size_t)(frame[14] & 0x0f) * 4;
	if (ihl < 20 || 14 + ihl > len)
		return;
	frame[24] = frame[25] = 0;
	for (size_t i = 0; i < ihl; i += 2)
		sum += (unsigned)(frame[14 + i] << 8 | frame[15 + i]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	frame[24] = (unsigned char)(~sum >> 8);
	frame[25] = (unsigned char)~sum;
}

static void cgroup2_mount(char *out, size_t size)
{
	char dev[64], dir[PATH_MAX], type[64];
	FILE *f = fopen("/proc/self/mounts", "r");

	snprintf(out, size, "/sys/fs/cgroup");
	while (f && fscanf(f, "%63s %4095s %63s %*[^\n]", dev, dir, type) == 3)
		if (!strcmp(type, "cgroup2")) {
			snprintf(out, size, "%s", dir);
			break;
		}
	if (f)
		fclose(f);
}

static void remember_live(struct bpf_program *prog, bool egress)
{
	if (nlive_attached < KT_MAX_LINKS) {
		live_egress[nlive_attached] = egress;
		snprintf(live_hooks[nlive_attached], sizeof(live_hooks[0]), "%s", live_hook);
		live_attached[nlive_attached++] = prog;
	}
}

static bool live_attach(struct bpf_program *prog, bool egress)
{
	struct bpf_link *link = NULL;

	for (int i = 0; i < nlive_attached; i++)
		if (live_attached[i] == prog && live_egress[i] == egress) {
			snprintf(live_hook, sizeof(live_hook), "%s", live_hooks[i]);
			return true; /* attached by an earlier live line */
		}
	switch (bpf_program__type(prog)) {
	case BPF_PROG_TYPE_XDP:
		link = bpf_program__attach_xdp(prog, (int)if_nametoindex(LIVE_EP));
		snprintf(live_hook, sizeof(live_hook), "xdp");
		break;
	case BPF_PROG_TYPE_SCHED_CLS: {
		int ifindex = (int)if_nametoindex(LIVE_EP);
		int fd = bpf_link_create(bpf_program__fd(prog), ifindex,
					 egress ? KT_BPF_TCX_EGRESS : KT_BPF_TCX_INGRESS, NULL);
		if (fd >= 0) {
			snprintf(live_hook, sizeof(live_hook), "tcx %s", egress ? "egress" : "ingress");
		} else {
			LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
				    .attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS);
			LIBBPF_OPTS(bpf_tc_opts, tc, .prog_fd = bpf_program__fd(prog), .handle = 1, .priority = 1);
			int err = bpf_tc_hook_create(&hook);
			if ((err && err != -EEXIST) || (err = bpf_tc_attach(&hook, &tc))) {
				errno = -err;
				return false;
			}
			snprintf(live_hook, sizeof(live_hook), "clsact %s", egress ? "egress" : "ingress");
		}
		remember_live(prog, egress);
		return true;
	}
	case BPF_PROG_TYPE_CGROUP_SKB: {
		const char *root = getenv("KT_CGROUP_ROOT");
		char mount_point[PATH_MAX];
		cgroup2_mount(mount_point, sizeof(mount_point));
		snprintf(live_cgroup, sizeof(live_cgroup), "%.4000s/kt-live", root ? root : mount_point);
		mkdir(live_cgroup, 0755);
		int cg = open(live_cgroup, O_RDONLY | O_DIRECTORY);
		if (cg >= 0) {
			link = bpf_program__attach_cgroup(prog, cg);
			close(cg);
		}
		snprintf(live_hook, sizeof(live_hook), "cgroup kt-live");
		break;
	}
	default:
		break;
	}
	if (!link)
		return false;
	if (nlinks < KT_MAX_LINKS)
		links[nlinks++] = link;
	remember_live(prog, egress);
	return true;
}

/* A raw IP socket created inside the live cgroup (a socket keeps the cgroup it was
 * created in), so cgroup_skb programs on that cgroup see its traffic; the runner then
 * moves back to where it was. */
static int cgroup_socket(int family, int proto)
{
	char procs[2 * PATH_MAX + 16], self[PATH_MAX + 8] = "", mount_point[PATH_MAX], line[PATH_MAX + 8];
	FILE *f = fopen("/proc/self/cgroup", "r");
	int s;

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(self, sizeof(self), "%s", line + 3);
		}
	if (f)
		fclose(f);
	cgroup2_mount(mount_point, sizeof(mount_point));
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", live_cgroup);
	write_sysctl(procs, "0");
	s = socket(family, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, proto);
	snprintf(procs, sizeof(procs), "%s%s/cgroup.procs", mount_point, strcmp(self, "/") ? self : "");
	write_sysctl(procs, "0");
	return s;
}

static bool expect_delivery(enum bpf_prog_type type, unsigned long long retval)
{
	if (type == BPF_PROG_TYPE_XDP)
		return retval != 1; /* XDP_DROP */
	if (type == BPF_PROG_TYPE_SCHED_CLS)
		return retval != 2; /* TC_ACT_SHOT */
	return retval != 0;   /* cgroup_skb: 0 = drop */
}

/* Send the frame and count where it should land. Returns arrivals, or -errno of the send
 * (a cgroup egress drop is EPERM from sendto). */
static int live_send(struct bpf_program *prog, bool egress, unsigned char *data, size_t len,
		     const char **why)
{
	enum bpf_prog_type type = bpf_program__type(prog);
	unsigned short ethertype = (unsigned short)(data[12] << 8 | data[13]);
	bool cgroup = type == BPF_PROG_TYPE_CGROUP_SKB, v6 = ethertype == ETH_P_IPV6;
	int family = v6 ? AF_INET6 : AF_INET, proto = 0, rx, tx, got = 0;

	fix_ipv4_checksum(data, len);
	if (cgroup) {
		if (ethertype != ETH_P_IP && ethertype != ETH_P_IPV6) {
			*why = "cgroup_skb sees IP only";
			return -EINVAL;
		}
		proto = v6 ? data[14 + 6] : data[14 + 9];
		const unsigned char *peer = egress ? data + (v6 ? 38 : 30) : data + (v6 ? 22 : 26);
		static const unsigned char loop6[16] = { [15] = 1 };
		if (v6 ? !memcmp(peer, loop6, 16) : peer[0] == 127) {
			*why = "loopback";
			return -EDOM; /* a martian on a real link: not testable with live packets */
		}
		if (!egress)
			memcpy(data, ep_mac, 6); /* the IP layer only takes frames addressed to kt-ep */
		const unsigned char *local = egress ? data + (v6 ? 22 : 26) : data + (v6 ? 38 : 30);
		int ep = (int)if_nametoindex(LIVE_EP);
		if (add_address(ep, family, local) || add_default_route(ep, family)) {
			*why = "cannot give kt-ep the vector's local address";
			return -EADDRNOTAVAIL;
		}
	}
	/* receiver */
	if (cgroup && !egress)
		rx = cgroup_socket(family, proto);
	else if (egress)
		rx = packet_socket(live_peer_ns, LIVE_PEER, ETH_P_ALL);
	else
		rx = packet_socket(live_ep_ns, LIVE_EP, type == BPF_PROG_TYPE_XDP ? ETH_P_ALL : ethertype);
	if (rx < 0) {
		*why = "receiving socket";
		return -errno;
	}
	usleep(20000); /* let a just-upped link settle (carrier, NAPI) */
	/* sender */
	if (cgroup && egress) {
		tx = cgroup_socket(family, IPPROTO_RAW);
		struct sockaddr_storage to = { 0 };
		socklen_t tolen;
		if (v6) {
			struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&to;
			d6->sin6_family = AF_INET6;
			memcpy(&d6->sin6_addr, data + 38, 16);
			tolen = sizeof(*d6);
		} else {
			struct sockaddr_in *d4 = (struct sockaddr_in *)&to;
			d4->sin_family = AF_INET;
			memcpy(&d4->sin_addr, data + 30, 4);
			tolen = sizeof(*d4);
		}
		if (tx >= 0 && sendto(tx, data + 14, len - 14, 0, (struct sockaddr *)&to, tolen) < 0)
			got = errno == EPERM ? 0 : -errno;
	} else {
		tx = egress ? packet_socket(live_ep_ns, LIVE_EP, ETH_P_ALL)
			    : packet_socket(live_peer_ns, LIVE_PEER, ETH_P_ALL);
		if (tx >= 0 && send(tx, data, len, 0) < 0)
			got = -errno;
	}
	if (tx < 0) {
		*why = "sending socket";
		got = -errno;
	}
	if (got == 0)
		got = count_arrivals(rx, data, len, cgroup && !egress, cgroup);
	else
		*why = "send";
	if (tx >= 0)
		close(tx);
	close(rx);
	return got;
}

static void do_live(int ln, int argc, char **argv)
{
	unsigned long long expect;
	unsigned char *data = NULL;
	struct bpf_program *prog;
	const char *why = "";
	bool egress;
	long len;

	if (argc < 4 || argc > 5 || !parse_u64(argv[2], &expect) ||
	    (argc == 5 && strcmp(argv[4], "ingress") && strcmp(argv[4], "egress"))) {
		result(ln, "live", "fail", "usage: live <prog> <expect_retval> <data_hex> [ingress|egress]");
		return;
	}
	egress = argc == 5 && !strcmp(argv[4], "egress");
	prog = find_prog(ln, "live", argv[1]);
	if (!prog)
		return;
	len = parse_hex(argv[3], &data);
	if (len < 14) {
		result(ln, "live", "fail", "bad hex data (an Ethernet frame is at least 14 bytes)");
		free(data);
		return;
	}
	enum bpf_prog_type type = bpf_program__type(prog);
	if (type == BPF_PROG_TYPE_CGROUP_SKB)
		egress = bpf_program__expected_attach_type(prog) == BPF_CGROUP_INET_EGRESS;
	if (type != BPF_PROG_TYPE_XDP && type != BPF_PROG_TYPE_SCHED_CLS && type != BPF_PROG_TYPE_CGROUP_SKB) {
		result(ln, "live", "fail", "%s: live traffic is for xdp, tc and cgroup_skb programs", argv[1]);
	} else if (!live_setup()) {
		result(ln, "live", strncmp(live_missing, "kernel lacks", 12) ? "fail" : "skip", "%s: %s", argv[1],
		       live_missing);
	} else if (!live_attach(prog, egress)) {
		const char *gap = lacking_feature(prog, -errno);
		result(ln, "live", gap ? "skip" : "fail", "%s: attaching for live traffic: %s", argv[1],
		       gap ? gap : strerror(errno));
	} else {
		bool want = expect_delivery(type, expect);
		int got = live_send(prog, egress, data, (size_t)len, &why);
		if (got == -EDOM)
			result(ln, "live", "skip", "%s: the peer is a loopback address, not routable over a link "
			       "(prog-run covers it)", argv[1]);
		else if (got < 0)
			result(ln, "live", "fail", "%s: %s: %s", argv[1], why, strerror(-got));
		else
			result(ln, "live", (got > 0) == want ? "ok" : "fail",
			       "%s %s on %s: sent 1, delivered %d (want %s)", argv[1], egress ? "egress" : "ingress",
			       live_hook, got, want ? "delivered" : "dropped");
	}
	free(data);
}

/* The veth pair outlives the runner in a guest (it lives in the init namespace): delete
 * it, and the live cgroup, so the next artifact starts clean. */
static void live_teardown(void)
{
	struct nl_req req = { .nh = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)),
				      .nlmsg_type = RTM_DELLINK } };

	if (live_ep_ns < 0)
		return;
	for (int i = 0; i < nlinks; i++)
		bpf_link__destroy(links[i]);
	nlinks = 0;
	req.ifi.ifi_index = (int)if_nametoindex(LIVE_EP);
	if (req.ifi.ifi_index)
		nl_talk(&req.nh);
	if (live_cgroup[0])
		rmdir(live_cgroup);
	close(live_peer_ns);
	close(live_ep_ns);
	live_ep_ns = live_peer_ns = -1;
	nlive_attached = 0;
}

/* ---- main ---------------------------------------------------------------------------- */

/* Host runs get their own netns with lo up, so XDP/tc attaches never touch real links,
 * and a private /tmp, so exec-expect commands leave no files behind on the host. */
static int enter_netns(void)
{
	struct ifreq ifr = { 0 };
	int s;

	if (unshare(CLONE_NEWNET | CLONE_NEWNS))
		return -errno;
	if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
		mount("kt-tmp", "/tmp", "tmpfs", 0, "mode=1777");
	s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
	return 0;
}

static void run_line(int ln, char *line)
{
	char *argv[24];
	int argc;

	if (!strncmp(line, "exec-expect", 11) && (line[11] == ' ' || line[11] == '\t')) {
		do_exec_expect(ln, line + 11);
		return;
	}
	argc = split(line, argv, 24);
	if (argc == 0)
		return;
	if (!strcmp(argv[0], "object"))
		do_object(ln, argc, argv);
	else if (!strcmp(argv[0], "map-update"))
		do_map_update(ln, argc, argv);
	else if (!strcmp(argv[0], "prog-run"))
		do_prog_run(ln, argc, argv);
	else if (!strcmp(argv[0], "attach"))
		do_attach(ln, argc, argv);
	else if (!strcmp(argv[0], "seccomp"))
		do_seccomp(ln, argc, argv);
	else if (!strcmp(argv[0], "syscall"))
		do_syscall(ln, argc, argv);
	else if (!strcmp(argv[0], "live"))
		do_live(ln, argc, argv);
	else if (!strcmp(argv[0], "event-expect"))
		do_event_expect(ln, argc, argv);
	else
		result(ln, argv[0], "fail", "unknown directive %s (object, map-update, prog-run, attach, live, seccomp, syscall, exec-expect, event-expect)",
		       argv[0]);
}

int main(int argc, char **argv)
{
	char path[PATH_MAX], *line = NULL;
	size_t cap = 0;
	int ln = 0, argi = 1;
	FILE *f;

	bool isolate = argc > 1 && !strcmp(argv[1], "--netns");

	if (isolate)
		argi++;
	if (argc - argi != 2) {
		fprintf(stderr, "usage: kt-runner [--netns] <artifact-dir> <artifact-name>\n");
		return 2;
	}
	artifact_dir = argv[argi];
	artifact = argv[argi + 1];
	if (isolate) {
		/* Work from the artifact directory: the private /tmp mounted next may cover it,
		 * but a process's cwd survives being covered. */
		if (chdir(artifact_dir)) {
			fprintf(stderr, "kt-runner: %s: %s\n", artifact_dir, strerror(errno));
			return 2;
		}
		artifact_dir = ".";
		int err = enter_netns();
		if (err) {
			fprintf(stderr, "kt-runner: unshare(CLONE_NEWNET|CLONE_NEWNS): %s\n", strerror(-err));
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	libbpf_set_print(libbpf_print);
	verifier_log = calloc(1, LOG_SIZE);
	snprintf(path, sizeof(path), "%s/kernel-test.txt", artifact_dir);
	f = fopen(path, "r");
	printf("BEGIN %s\n", artifact);
	if (!f) {
		result(0, "script", "fail", "%s: %s", path, strerror(errno));
		printf("END %s\n", artifact);
		return 2;
	}
	/* The pid@ offsets event-expect lines will filter on (records of the command's pid are
	 * kept before any other process's). */
	while (getline(&line, &cap, f) >= 0) {
		char *at = line;
		if (strncmp(line, "event-expect", 12))
			continue;
		while ((at = strstr(at, " pid@")) && npid_offs < 8) {
			unsigned long off = strtoul(at + 5, NULL, 0);
			bool seen = false;
			for (int i = 0; i < npid_offs; i++)
				seen |= pid_offs[i] == off;
			if (!seen)
				pid_offs[npid_offs++] = off;
			at += 5;
		}
	}
	rewind(f);
	while (getline(&line, &cap, f) >= 0) {
		ln++;
		/* Progress marker: if the guest's time limit stops us mid-line (a verifier
		 * grinding through 1M instructions under TCG), the host knows which line. */
		printf("STEP %s %d\n", artifact, ln);
		run_line(ln, line);
	}
	fclose(f);
	free(line);
	if (obj)
		close_object();
	live_teardown();
	printf("END %s\n", artifact);
	return failures ? 1 : 0;
}
