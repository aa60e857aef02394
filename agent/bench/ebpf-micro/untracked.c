// Micro-benchmark (agent/bench/ebpf-micro/run.sh): attach an object's programs (attach.h), then time an
// untracked process's read/write syscalls; prints CPU ns per syscall pair
// with and without the programs, and each program's run_time_ns/run_cnt.
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include "attach.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double cpu_ns(void) {
	struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}
static double loop(long n) {
	int z = open("/dev/zero", O_RDONLY), d = open("/dev/null", O_WRONLY);
	char b[64];
	double t0 = cpu_ns();
	/* MOP_MICRO_OTHER=1: two syscalls no program follows (getppid) instead of
	 * the write+read pair, for what an attach mode costs the node's other
	 * syscalls. */
	if (getenv("MOP_MICRO_OTHER"))
		for (long i = 0; i < n; i++) { getppid(); getppid(); }
	else
		for (long i = 0; i < n; i++) { if (write(d, b, 16) < 0 || read(z, b, 16) < 0) exit(1); }
	double t1 = cpu_ns();
	close(z); close(d);
	return (t1 - t0) / n;
}
static int quiet(enum libbpf_print_level l, const char *f, va_list a) { return 0; }
int main(int argc, char **argv) {
	long n = argc > 2 ? atol(argv[2]) : 2000000;
	int rounds = argc > 3 ? atoi(argv[3]) : 3;
	libbpf_set_print(quiet);
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) { perror("open"); return 1; }
	struct bpf_program *p;
	bpf_object__for_each_program(p, obj)
		if (!attachable(obj, p))
			bpf_program__set_autoload(p, false);
	if (bpf_object__load(obj)) { perror("load"); return 1; }
	for (int r = 0; r < rounds; r++) {
		double off = loop(n);
		struct bpf_link *links[64]; int nl = 0;
		bpf_object__for_each_program(p, obj)
			if (bpf_program__autoload(p)) {
				links[nl] = bpf_program__attach(p);
				if (!links[nl++]) { fprintf(stderr, "attach %s failed\n", bpf_program__name(p)); return 1; }
			}
		double on = loop(n);
		for (int i = 0; i < nl; i++) bpf_link__destroy(links[i]);
		printf("round %d: %.0f ns/pair without, %.0f with, +%.0f\n", r, off, on, on - off);
	}
	bpf_object__for_each_program(p, obj) {
		if (!bpf_program__autoload(p)) continue;
		struct bpf_prog_info info = {}; __u32 len = sizeof(info);
		bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len);
		if (info.run_cnt)
			printf("  %-22s %10llu runs %6.1f ns/run\n", bpf_program__name(p),
			       (unsigned long long)info.run_cnt, (double)info.run_time_ns / info.run_cnt);
	}
	return 0;
}
