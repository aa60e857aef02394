// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Program set "sockets": syscall tracepoints that follow TCP connections of
 * tracked processes and copy the first bytes of every message into the ring
 * buffer. Parsing happens in userspace; this side only filters and copies.
 *
 * Two attach modes for accept, connect and the data syscalls, chosen by the
 * loader: one BTF raw tracepoint on sys_exit (sys_exit_btf.h; one run per
 * syscall) where the kernel offers it, else the sys_enter_X/sys_exit_X
 * syscall tracepoints below. close and the process lifecycle use
 * tracepoints in both. kprobes and fentry are not available on every kernel
 * we run on (see docs/agent.md).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "mop_event.h"
#include "maps/events.h"
#include "maps/drops.h"
#include "maps/tracked_pids.h"
#include "maps/tracked_bits.h"
#include "maps/conns.h"
#include "maps/active_io.h"
#include "maps/scratch.h"
#include "maps/not_sockets.h"
#include "maps/ssl_fds.h"
#include "maps/wake.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before load (read-only after). */
const volatile __u32 capture_bytes = 1024;
/* Wake the reader only once this much data waits; the reader also polls on a
 * short timer. Waking on every event halves a busy server's throughput. */
const volatile __u64 wakeup_bytes = 256 * 1024;

#define MOP_AF_INET 2
#define MOP_AF_INET6 10
#define MOP_SOCK_STREAM 1
#define MOP_S_IFMT 00170000
#define MOP_S_IFSOCK 0140000
#define MOP_EINPROGRESS 115

static __always_inline bool mop_tracked(__u32 tgid)
{
	return mop_maybe_tracked(tgid) && bpf_map_lookup_elem(&mop_tracked_pids, &tgid) != NULL;
}

static __always_inline __u64 mop_conn_key(__u32 tgid, __s32 fd)
{
	return ((__u64)tgid << 32) | (__u32)fd;
}

/* Reads the tuple of a TCP socket behind fd of the current process. Returns 0
 * only for an AF_INET/AF_INET6 stream socket. */
static __always_inline int mop_sock_tuple(__s32 fd, struct mop_tuple *t)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd < 0)
		return -1;
	unsigned int max_fds = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned int)fd >= max_fds)
		return -1;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return -1;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & MOP_S_IFMT) != MOP_S_IFSOCK)
		return -1;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, type) != MOP_SOCK_STREAM)
		return -1;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return -1;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == MOP_AF_INET) {
		__u32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(t->saddr, &s, 4);
		__builtin_memcpy(t->daddr, &d, 4);
	} else if (family == MOP_AF_INET6) {
		BPF_CORE_READ_INTO(&t->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&t->daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		return -1;
	}
	t->family = family;
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return 0;
}

/* Wake the reader once wakeup_bytes wait. Asking the ring (a helper call,
 * and a read of the consumer position userspace writes) is done only after
 * this CPU emitted 1/64 of that since it last asked: the wake-up can come
 * late by that much per CPU, which the reader's poll timer bounds anyway. */
static __always_inline long mop_wake_flags(__u64 size)
{
	__u32 zero = 0;
	__u64 *credit = bpf_map_lookup_elem(&mop_wake, &zero);
	if (credit) {
		__u64 c = *credit + size;
		if (c < (wakeup_bytes >> 6)) {
			*credit = c;
			return BPF_RB_NO_WAKEUP;
		}
		*credit = 0;
	}
	if (bpf_ringbuf_query(&mop_events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline struct mop_event *mop_scratch_event(void)
{
	__u32 zero = 0;
	struct mop_scratch *s = bpf_map_lookup_elem(&mop_scratch, &zero);
	return s ? &s->ev : NULL;
}

static __always_inline void mop_fill_header(struct mop_event *e, __u64 pid_tgid, __s32 fd,
					    __u8 kind, __u8 direction, __u8 syscall,
					    const struct mop_tuple *t)
{
	e->ts_ns = bpf_ktime_get_ns();
	e->tgid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->fd = fd;
	e->kind = kind;
	e->direction = direction;
	e->syscall = syscall;
	e->flags = 0;
	e->total_len = 0;
	e->captured_len = 0;
	e->tuple = *t;
	/* The name is needed once per connection, not per message. */
	if (kind == MOP_EV_DATA)
		e->comm[0] = 0;
	else
		bpf_get_current_comm(e->comm, sizeof(e->comm));
}

static __always_inline void mop_emit_header_only(__u64 pid_tgid, __s32 fd, __u8 kind,
						 __u8 syscall, const struct mop_tuple *t)
{
	struct mop_event *e = mop_scratch_event();
	if (!e)
		return;
	mop_fill_header(e, pid_tgid, fd, kind, MOP_DIR_NONE, syscall, t);
	if (bpf_ringbuf_output(&mop_events, e, MOP_EVENT_HEADER_SIZE,
			       mop_wake_flags(MOP_EVENT_HEADER_SIZE)))
		mop_count_drop(MOP_DROP_RINGBUF_FULL);
}

/* Records a connection; role is SERVER/CLIENT or UNKNOWN when found lazily. */
static __always_inline struct mop_tuple *mop_track_conn(__u64 pid_tgid, __s32 fd, __u8 role,
							__u8 syscall)
{
	struct mop_tuple t = {};
	if (mop_sock_tuple(fd, &t))
		return NULL;
	t.role = role;
	__u64 key = mop_conn_key(pid_tgid >> 32, fd);
	if (role != MOP_ROLE_UNKNOWN)
		bpf_map_delete_elem(&mop_not_sockets, &key);
	if (bpf_map_update_elem(&mop_conns, &key, &t, BPF_ANY)) {
		mop_count_drop(MOP_DROP_CONN_TABLE_FULL);
		return NULL;
	}
	mop_emit_header_only(pid_tgid, fd, MOP_EV_OPEN, syscall, &t);
	return bpf_map_lookup_elem(&mop_conns, &key);
}

/* ---- accept / connect ---------------------------------------------------- */

/* Only the exit is needed: the new fd is the return value and the tuple comes
 * from the socket, so a thread already blocked in accept() when the agent
 * started is still covered. */
static __always_inline int mop_on_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (ctx->ret < 0 || !mop_tracked(pid_tgid >> 32))
		return 0;
	mop_track_conn(pid_tgid, (__s32)ctx->ret, MOP_ROLE_SERVER, MOP_SC_ACCEPT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int mop_exit_accept(struct trace_event_raw_sys_exit *ctx) { return mop_on_accept_exit(ctx); }

SEC("tracepoint/syscalls/sys_exit_accept4")
int mop_exit_accept4(struct trace_event_raw_sys_exit *ctx) { return mop_on_accept_exit(ctx); }

static __always_inline int mop_stash(__s32 fd, __u64 buf, __u64 iovlen, __u8 buf_kind,
				     __u8 syscall, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!mop_maybe_tracked(pid_tgid >> 32))
		return 0;
	struct mop_io io = {
		.buf = buf,
		.iovlen = iovlen,
		.fd = fd,
		.buf_kind = buf_kind,
		.syscall = syscall,
		.direction = direction,
	};
	/* Entries stay for the thread's lifetime and are rewritten in place:
	 * a hash update/delete pair per syscall was the largest cost here. The
	 * SSL half is left alone: the syscall may run inside an SSL call. */
	struct mop_active_io *slot = bpf_map_lookup_elem(&mop_active_io, &pid_tgid);
	if (slot) {
		/* A slot exists only for a thread of a tracked process (it is
		 * made below, after the check, and goes when the thread exits;
		 * a process stops being tracked only by exiting), so the
		 * tracked-process hash is asked once per thread, not per
		 * syscall. */
		slot->io = io;
		return 0;
	}
	if (!mop_tracked(pid_tgid >> 32))
		return 0;
	struct mop_active_io fresh = {.io = io, .ssl = {.fd = -1}};
	bpf_map_update_elem(&mop_active_io, &pid_tgid, &fresh, BPF_ANY);
	return 0;
}

/* Takes the pending syscall's arguments; NULL if there are none. The
 * returned slot also says whether an SSL call is in flight on the thread. */
static __always_inline struct mop_active_io *mop_take_io(__u64 pid_tgid, struct mop_io *out)
{
	/* Only tracked threads have a slot; the bitmap answers for the others
	 * without the hash lookup (the exits run for every process too). */
	if (!mop_maybe_tracked(pid_tgid >> 32))
		return NULL;
	struct mop_active_io *a = bpf_map_lookup_elem(&mop_active_io, &pid_tgid);
	if (!a || a->io.syscall == 0)
		return NULL;
	*out = a->io;
	a->io.syscall = 0;
	return a;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int mop_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash((__s32)ctx->args[0], 0, 0, MOP_BUF_NONE, MOP_SC_CONNECT, MOP_DIR_NONE);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int mop_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct mop_io io;
	if (!mop_take_io(pid_tgid, &io))
		return 0;
	__s32 fd = io.fd;
	if (ctx->ret == 0 || ctx->ret == -MOP_EINPROGRESS)
		mop_track_conn(pid_tgid, fd, MOP_ROLE_CLIENT, MOP_SC_CONNECT);
	return 0;
}

/* ---- data ---------------------------------------------------------------- */

SEC("tracepoint/syscalls/sys_enter_read")
int mop_enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash((__s32)ctx->args[0], ctx->args[1], 0, MOP_BUF_PLAIN, MOP_SC_READ,
			 MOP_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int mop_enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash((__s32)ctx->args[0], ctx->args[1], 0, MOP_BUF_PLAIN, MOP_SC_RECVFROM,
			 MOP_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int mop_enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash((__s32)ctx->args[0], ctx->args[1], ctx->args[2], MOP_BUF_IOV,
			 MOP_SC_READV, MOP_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_write")
int mop_enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash((__s32)ctx->args[0], ctx->args[1], 0, MOP_BUF_PLAIN, MOP_SC_WRITE,
			 MOP_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int mop_enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash((__s32)ctx->args[0], ctx->args[1], 0, MOP_BUF_PLAIN, MOP_SC_SENDTO,
			 MOP_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int mop_enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash((__s32)ctx->args[0], ctx->args[1], ctx->args[2], MOP_BUF_IOV,
			 MOP_SC_WRITEV, MOP_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_sendfile64")
int mop_enter_sendfile64(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash((__s32)ctx->args[0], 0, 0, MOP_BUF_NONE, MOP_SC_SENDFILE,
			 MOP_DIR_EGRESS);
}

/* recvmsg/sendmsg: the iovec array sits inside the user msghdr; resolve it at
 * entry, while the pointer is certainly valid. */
static __always_inline int mop_stash_msg(struct trace_event_raw_sys_enter *ctx, __u8 syscall,
					 __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!mop_maybe_tracked(pid_tgid >> 32))
		return 0;
	struct user_msghdr msg = {};
	if (bpf_probe_read_user(&msg, sizeof(msg), (void *)ctx->args[1]))
		return 0;
	return mop_stash((__s32)ctx->args[0], (__u64)msg.msg_iov, msg.msg_iovlen, MOP_BUF_IOV,
			 syscall, direction);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int mop_enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash_msg(ctx, MOP_SC_RECVMSG, MOP_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int mop_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return mop_stash_msg(ctx, MOP_SC_SENDMSG, MOP_DIR_EGRESS);
}

static __always_inline __u32 mop_min(__u32 a, __u32 b) { return a < b ? a : b; }

/* Masks in a way clang cannot fold away, so the verifier sees the bound. */
#define MOP_BOUND(v, mask) asm volatile("%[x] &= " #mask : [x] "+r"(v))

/* Copies up to `want` bytes of the first `count` (<= max) buffers of iov
 * into e->data; returns the bytes copied. */
static __always_inline __u32 mop_copy_segments(struct mop_event *e, const struct iovec *iov,
					       __u64 count, const int max, __u32 want)
{
	__u32 off = 0;
	for (int i = 0; i < max; i++) {
		if (i >= count || off >= want)
			break;
		__u64 n = mop_min(want - off, (__u32)iov[i].iov_len);
		__u64 o = off;
		/* Offset below MOP_MAX_CAPTURE, length below it too: the copy
		 * stays inside data[] + overflow[]. */
		MOP_BOUND(o, 0xfff);
		MOP_BOUND(n, 0xfff);
		if (n == 0)
			continue;
		if (bpf_probe_read_user(&e->data[o], n, iov[i].iov_base)) {
			mop_count_drop(MOP_DROP_USER_READ);
			break;
		}
		off = o + n;
	}
	return off;
}

/* Up to this many iovecs are read onto the BPF stack, more into the scratch.
 * A bpf_probe_read_user into a map value costs ~20 ns more than into the
 * stack on the session-25 host (the hardened-usercopy check of a heap
 * destination); nginx writes a response with 1-3 iovecs. */
#define MOP_STACK_IOV 8

/* Copies up to `want` bytes from the iovec array into e->data. The array
 * (its first MOP_MAX_IOV entries) comes in with one read: a read per entry
 * was one helper call more per iovec (nginx's writev: 4 calls, now 3). */
static __always_inline __u32 mop_copy_iov(struct mop_scratch *s, __u64 iov_ptr, __u64 iovlen,
					  __u32 want)
{
	__u64 count = iovlen < MOP_MAX_IOV ? iovlen : MOP_MAX_IOV;
	__u64 bytes = count * sizeof(struct iovec);
	MOP_BOUND(bytes, 0x3ff);
	if (bytes == 0 || bytes > sizeof(s->iov))
		return 0;
	if (count <= MOP_STACK_IOV) {
		struct iovec iov[MOP_STACK_IOV];
		if (bytes > sizeof(iov))
			return 0;
		if (bpf_probe_read_user(iov, bytes, (void *)iov_ptr))
			return 0;
		return mop_copy_segments(&s->ev, iov, count, MOP_STACK_IOV, want);
	}
	if (bpf_probe_read_user(s->iov, bytes, (void *)iov_ptr))
		return 0;
	return mop_copy_segments(&s->ev, s->iov, count, MOP_MAX_IOV, want);
}

/* The connection behind fd of the current process: known, or learned now
 * (opened before the agent started). NULL if fd is not a TCP socket. */
static __always_inline struct mop_tuple *mop_conn_of(__u64 pid_tgid, __s32 fd, __u8 syscall)
{
	__u64 key = mop_conn_key(pid_tgid >> 32, fd);
	struct mop_tuple *t = bpf_map_lookup_elem(&mop_conns, &key);
	if (t)
		return t;
	if (bpf_map_lookup_elem(&mop_not_sockets, &key))
		return NULL;
	t = mop_track_conn(pid_tgid, fd, MOP_ROLE_UNKNOWN, syscall);
	if (!t) {
		__u8 one = 1;
		bpf_map_update_elem(&mop_not_sockets, &key, &one, BPF_ANY);
	}
	return t;
}

/* Emits one DATA event of `total` bytes moved, copying a prefix of them. */
static __always_inline void mop_emit_data(__u64 pid_tgid, __s32 fd, const struct mop_tuple *t,
					  __u8 direction, __u8 syscall, __u8 flags,
					  __u8 buf_kind, __u64 buf, __u64 iovlen, long total)
{
	__u32 zero = 0;
	struct mop_scratch *s = bpf_map_lookup_elem(&mop_scratch, &zero);
	if (!s)
		return;
	struct mop_event *e = &s->ev;
	mop_fill_header(e, pid_tgid, fd, MOP_EV_DATA, direction, syscall, t);
	e->flags = flags;
	e->total_len = total > 0xffffffffL ? 0xffffffff : (__u32)total;

	__u32 want = mop_min(capture_bytes, MOP_MAX_CAPTURE);
	want = mop_min(want, e->total_len);
	__u32 got = 0;
	if (buf_kind == MOP_BUF_PLAIN) {
		__u64 n = want;
		MOP_BOUND(n, 0x1fff);
		if (n > 0 && bpf_probe_read_user(e->data, n, (void *)buf) == 0)
			got = n;
		else if (n > 0)
			mop_count_drop(MOP_DROP_USER_READ);
	} else if (buf_kind == MOP_BUF_IOV) {
		got = mop_copy_iov(s, buf, iovlen, want);
	}
	if (got > MOP_MAX_CAPTURE)
		got = MOP_MAX_CAPTURE;
	e->captured_len = got;

	__u64 size = got;
	MOP_BOUND(size, 0x1fff);
	size += MOP_EVENT_HEADER_SIZE;
	if (bpf_ringbuf_output(&mop_events, e, size, mop_wake_flags(size)))
		mop_count_drop(MOP_DROP_RINGBUF_FULL);
}

/* A data syscall of a tracked thread returned ret > 0 bytes: emits them, or
 * for the ciphertext of an SSL call in flight only ties its socket to it.
 * Shared by both attach modes. */
static __always_inline void mop_data_done(__u64 pid_tgid, struct mop_active_io *slot,
					  const struct mop_io *iop, long ret)
{
	struct mop_io io = *iop;
	struct mop_tuple *t = mop_conn_of(pid_tgid, io.fd, io.syscall);
	if (!t)
		return;
	if (slot->ssl.ssl) {
		/* Ciphertext moved by an SSL call: the plaintext comes from its
		 * uretprobe; this only tells which socket the SSL object uses. */
		slot->ssl.fd = io.fd;
		t->flags |= MOP_CONN_TLS;
		return;
	}
	if (t->flags & MOP_CONN_TLS)
		return;
	mop_emit_data(pid_tgid, io.fd, t, io.direction, io.syscall, 0, io.buf_kind, io.buf,
		      io.iovlen, ret);
}

static __always_inline int mop_on_data_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct mop_io io;
	struct mop_active_io *slot = mop_take_io(pid_tgid, &io);
	if (!slot)
		return 0;
	long ret = ctx->ret;
	if (ret <= 0)
		return 0;
	mop_data_done(pid_tgid, slot, &io, ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_read")
int mop_exit_read(struct trace_event_raw_sys_exit *ctx) { return mop_on_data_exit(ctx); }

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int mop_exit_recvfrom(struct trace_event_raw_sys_exit *ctx) { return mop_on_data_exit(ctx); }

SEC("tracepoint/syscalls/sys_exit_readv")
int mop_exit_readv(struct trace_event_raw_sys_exit *ctx) { return mop_on_data_exit(ctx); }

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int mop_exit_recvmsg(struct trace_event_raw_sys_exit *ctx) { return mop_on_data_exit(ctx); }

SEC("tracepoint/syscalls/sys_exit_write")
int mop_exit_write(struct trace_event_raw_sys_exit *ctx) { return mop_on_data_exit(ctx); }

SEC("tracepoint/syscalls/sys_exit_sendto")
int mop_exit_sendto(struct trace_event_raw_sys_exit *ctx) { return mop_on_data_exit(ctx); }

SEC("tracepoint/syscalls/sys_exit_writev")
int mop_exit_writev(struct trace_event_raw_sys_exit *ctx) { return mop_on_data_exit(ctx); }

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int mop_exit_sendmsg(struct trace_event_raw_sys_exit *ctx) { return mop_on_data_exit(ctx); }

SEC("tracepoint/syscalls/sys_exit_sendfile64")
int mop_exit_sendfile64(struct trace_event_raw_sys_exit *ctx) { return mop_on_data_exit(ctx); }

/* ---- close --------------------------------------------------------------- */

SEC("tracepoint/syscalls/sys_enter_close")
int mop_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (!mop_tracked(tgid))
		return 0;
	__s32 fd = (__s32)ctx->args[0];
	__u64 key = mop_conn_key(tgid, fd);
	struct mop_tuple *t = bpf_map_lookup_elem(&mop_conns, &key);
	if (!t) {
		/* The fd number may next name a socket. */
		bpf_map_delete_elem(&mop_not_sockets, &key);
		return 0;
	}
	struct mop_tuple copy = *t;
	bpf_map_delete_elem(&mop_conns, &key);
	mop_emit_header_only(pid_tgid, fd, MOP_EV_CLOSE, MOP_SC_CLOSE, &copy);
	return 0;
}

/* ---- process lifecycle ------------------------------------------------------ */

/* Children of tracked processes are tracked too: servers such as PostgreSQL
 * and pre-fork nginx serve connections from forked workers. Thread creation
 * also lands here; the extra key is removed again when the thread exits. */
SEC("tracepoint/sched/sched_process_fork")
int mop_process_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	if (!mop_tracked(parent))
		return 0;
	__u32 child = ctx->child_pid;
	__u8 one = 1;
	bpf_map_update_elem(&mop_tracked_pids, &child, &one, BPF_NOEXIST);
	mop_kernel_bit(child, true);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int mop_process_exit(struct trace_event_raw_sched_process_template *ctx)
{
	/* Keyed by the exiting thread's id: for the leader that is the tgid (the
	 * process is gone); for another thread it is the stray key its clone
	 * added above. Thread ids are never another live process's tgid. */
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = (__u32)pid_tgid;
	bpf_map_delete_elem(&mop_tracked_pids, &tgid);
	mop_kernel_bit(tgid, false);
	/* The thread's in-place syscall slot goes with it. */
	bpf_map_delete_elem(&mop_active_io, &pid_tgid);
	return 0;
}

#include "sys_exit_btf.h"
#include "tls.h"
