// Micro-benchmark of the tracked path: this process marks itself tracked,
// then sends an nginx-sized response with writev (2 iovecs) over a loopback
// TCP connection and reads it with recvfrom, draining the ring buffer every
// 256 iterations; prints each program's ns/run (bpf_stats) and CPU per loop.
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include "attach.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double cpu_ns(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static int quiet(enum libbpf_print_level l, const char *f, va_list a) { return 0; }
static int nothing(void *c, void *d, size_t n) { return 0; }
int main(int argc, char **argv) {
	long n = argc > 2 ? atol(argv[2]) : 200000;
	libbpf_set_print(quiet);
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	struct bpf_program *p;
	bpf_object__for_each_program(p, obj)
		if (!attachable(obj, p)) bpf_program__set_autoload(p, false);
	if (bpf_object__load(obj)) { perror("load"); return 1; }
	__u32 me = getpid(); __u8 one = 1;
	bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "mop_tracked_pids"), &me, &one, 0);
	int bits = bpf_object__find_map_fd_by_name(obj, "mop_tracked_bits_user");
	if (bits >= 0) { __u32 w = me / 64; __u64 v = 1ULL << (me % 64); bpf_map_update_elem(bits, &w, &v, 0); }
	struct ring_buffer *rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "mop_events"), nothing, NULL, NULL);
	int l = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	socklen_t al = sizeof(a); bind(l, (void *)&a, al); listen(l, 1); getsockname(l, (void *)&a, &al);
	struct bpf_link *links[64]; int nl = 0;
	bpf_object__for_each_program(p, obj) if (bpf_program__autoload(p)) {
		links[nl] = bpf_program__attach(p);
		if (!links[nl++]) { fprintf(stderr, "attach %s failed\n", bpf_program__name(p)); return 1; }
	}
	int c = socket(AF_INET, SOCK_STREAM, 0); connect(c, (void *)&a, al); int s = accept(l, NULL, NULL);
	int on = 1; setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	char head[] = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 18:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n";
	char body[] = "ok\n", buf[4096];
	struct iovec iov[2] = {{head, sizeof(head) - 1}, {body, 3}};
	double t0 = cpu_ns();
	for (long i = 0; i < n; i++) {
		if (writev(s, iov, 2) < 0 || recvfrom(c, buf, sizeof(buf), 0, NULL, NULL) < 0) return 1;
		if (i % 256 == 0) ring_buffer__consume(rb);
	}
	double t1 = cpu_ns();
	for (int i = 0; i < nl; i++) bpf_link__destroy(links[i]);
	printf("%.0f ns CPU per writev+recvfrom (with the drain)\n", (t1 - t0) / n);
	bpf_object__for_each_program(p, obj) {
		if (!bpf_program__autoload(p)) continue;
		struct bpf_prog_info info = {}; __u32 len = sizeof(info);
		bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len);
		if (info.run_cnt > 1000) printf("  %-22s %8llu runs %6.1f ns/run\n", bpf_program__name(p), (unsigned long long)info.run_cnt, (double)info.run_time_ns / info.run_cnt);
	}
	return 0;
}
