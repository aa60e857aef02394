/* An open-loop HTTP/1.1 load generator for latency at a fixed rate.
 *
 * Request k is due at start + k / rate whatever the server does (no
 * coordinated omission): it goes out on the first idle keep-alive
 * connection, and its latency is counted from its due time to the end of
 * its response, so a request that had to wait for a connection pays the
 * wait. One thread that never sleeps (epoll with no timeout, in a loop), to
 * be pinned to a CPU of its own: on a VM, waking a halted vCPU goes through
 * the host and costs tens of microseconds (docs/performance.md, "Issue 16,
 * session 25: latency at a fixed rate"), which would bury the 50 µs being
 * measured. The script keeps the server's CPU from halting too.
 *
 * Usage: openloop HOST PORT PATH CONNS RATE SECONDS [WARMUP_SECONDS]
 *   RATE 0 = closed loop (every connection sends its next request as soon
 *   as the previous response ends): the capacity.
 * Prints one line: due sent completed lost achieved_rps p50 p90 p99 p999 max
 * (latencies in µs, over the requests due after the warm-up) and the ticks
 * the host stole from the VM meanwhile.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384

struct conn {
	int fd;
	int busy;      /* a request is outstanding */
	int64_t due;   /* its due time, ns */
	int counted;   /* it was due after the warm-up */
	size_t len;
	char buf[BUF];
};

static struct sockaddr_in addr;
static char req[512];
static size_t req_len;

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int open_conn(int ep, struct conn *c)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)))
		die("connect");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		die("epoll_ctl");
	c->fd = fd;
	c->len = 0;
	return fd;
}

/* Length of the first complete response in buf, 0 if incomplete. Responses
 * are framed by Content-Length (nginx's `return 200 "..."`). *close is set
 * when the server says it closes the connection after it (nginx does after
 * keepalive_requests), so that no request is sent on it meanwhile. */
static size_t response_len(const char *buf, size_t len, int *close)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	if (!end)
		return 0;
	size_t head = (size_t)(end - buf) + 4;
	size_t body = 0;
	for (const char *p = buf; p < end;) {
		const char *nl = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (!nl)
			nl = end;
		if ((size_t)(nl - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
			body = strtoul(p + 15, NULL, 10);
		if ((size_t)(nl - p) >= 17 && strncasecmp(p, "connection: close", 17) == 0)
			*close = 1;
		p = nl + 2;
	}
	return len >= head + body ? head + body : 0;
}

/* Time the host took from this VM's CPUs (the steal column of /proc/stat's
 * "cpu" line), in clock ticks: a run the host stole from shows its
 * latency, not the server's. -1 if unreadable. */
static long long steal_ticks(void)
{
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return -1;
	unsigned long long v[8] = {0};
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		       &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	return n == 8 ? (long long)v[7] : -1;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc < 7) {
		fprintf(stderr, "usage: openloop HOST PORT PATH CONNS RATE SECONDS [WARMUP]\n");
		return 2;
	}
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1)
		die("inet_pton");
	req_len = (size_t)snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n",
				   argv[3], argv[1], argv[2]);
	int nconns = atoi(argv[4]);
	double rate = atof(argv[5]);
	double secs = atof(argv[6]);
	double warm = argc > 7 ? atof(argv[7]) : 0.5;
	int ep = epoll_create1(0);
	struct conn *cs = calloc((size_t)nconns, sizeof(*cs));
	int *idle = calloc((size_t)nconns, sizeof(int));
	if (ep < 0 || !cs || !idle)
		die("setup");
	int nidle = 0;
	for (int i = 0; i < nconns; i++) {
		open_conn(ep, &cs[i]);
		idle[nidle++] = i;
	}
	size_t cap = (size_t)((rate > 0 ? rate : 100000) * (secs + 1)) + 16;
	int64_t *lat = malloc(cap * sizeof(int64_t));
	if (!lat)
		die("malloc");
	size_t nlat = 0;
	uint64_t due = 0, sent = 0, completed = 0, lost = 0;
	int64_t interval = rate > 0 ? (int64_t)(1e9 / rate) : 0;
	int64_t start = now_ns();
	int64_t warm_end = start + (int64_t)(warm * 1e9);
	int64_t stop = warm_end + (int64_t)(secs * 1e9);
	int64_t next = start; /* the next request's due time */
	struct epoll_event evs[64];
	long long steal0 = -1, steal1 = -1;

	for (;;) {
		int64_t t = now_ns();
		if (steal0 < 0 && t >= warm_end)
			steal0 = steal_ticks();
		if (steal1 < 0 && t >= stop)
			steal1 = steal_ticks();
		if (t >= stop + 1000000000LL)
			break; /* one second of grace for the last responses */
		/* Send what is due, on idle connections. */
		while (next < stop && nidle > 0 && (interval == 0 || next <= t)) {
			struct conn *c = &cs[idle[--nidle]];
			int64_t d = interval == 0 ? t : next;
			if (send(c->fd, req, req_len, MSG_NOSIGNAL) != (ssize_t)req_len)
				die("send");
			c->busy = 1;
			c->due = d;
			c->counted = d >= warm_end;
			due += c->counted;
			sent += c->counted;
			next = interval == 0 ? t : next + interval;
		}
		if (t >= stop && nidle == nconns)
			break;
		/* Busy-polls: a sleep would end in a timer wake-up, which on a
		 * VM costs tens of microseconds when the vCPU halted. */
		int n = epoll_wait(ep, evs, 64, 0);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		int64_t got = now_ns();
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			ssize_t r = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
			if (r <= 0) {
				/* nginx closes a keep-alive connection after
				 * keepalive_requests: reopen it. A request
				 * outstanding on it is lost. */
				if (r < 0 && errno == EAGAIN)
					continue;
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				open_conn(ep, c);
				/* An idle connection is already on the list. */
				if (c->busy) {
					lost += c->counted;
					c->busy = 0;
					idle[nidle++] = (int)(c - cs);
				}
				continue;
			}
			c->len += (size_t)r;
			int closing = 0;
			size_t k = response_len(c->buf, c->len, &closing);
			if (k == 0 || !c->busy)
				continue;
			if (c->counted) {
				completed++;
				if (nlat == cap) {
					cap *= 2;
					lat = realloc(lat, cap * sizeof(int64_t));
					if (!lat)
						die("realloc");
				}
				lat[nlat++] = got - c->due;
			}
			c->busy = 0;
			memmove(c->buf, c->buf + k, c->len - k);
			c->len -= k;
			if (closing) {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				open_conn(ep, c);
			}
			idle[nidle++] = (int)(c - cs);
		}
	}
	for (int i = 0; i < nconns; i++)
		if (cs[i].busy && cs[i].counted)
			lost++;
	/* Requests due before the end but never sent (no idle connection). */
	if (interval > 0 && next < stop) {
		uint64_t unsent = (uint64_t)((stop - next + interval - 1) / interval);
		due += unsent;
		lost += unsent;
	}
	qsort(lat, nlat, sizeof(int64_t), cmp64);
#define Q(p) (nlat ? lat[(size_t)((double)(nlat - 1) * (p))] / 1000.0 : 0.0)
	if (steal1 < 0)
		steal1 = steal_ticks();
	printf("due %lu sent %lu completed %lu lost %lu achieved_rps %.0f p50 %.1f p90 %.1f p99 %.1f p999 %.1f max %.1f steal_ticks %lld\n",
	       (unsigned long)due, (unsigned long)sent, (unsigned long)completed,
	       (unsigned long)lost, (double)completed / secs, Q(0.5), Q(0.9), Q(0.99), Q(0.999),
	       nlat ? lat[nlat - 1] / 1000.0 : 0.0,
	       steal0 >= 0 && steal1 >= 0 ? steal1 - steal0 : -1);
	return 0;
}
