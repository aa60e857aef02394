/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * TLS plaintext from OpenSSL's libssl (1.1.1 and 3.x), by uprobes on
 * SSL_read, SSL_read_ex, SSL_write, SSL_write_ex and SSL_do_handshake.
 * Included by sockets.bpf.c: it shares that set's maps.
 *
 * Reads: the entry probe saves the call's SSL object and buffer in the
 * thread's mop_active_io slot; the return probe copies the bytes the call
 * really read. Writes are taken at entry, from the caller's buffer, with no
 * return probe: a uprobe costs a trap per hit, a return probe a second one,
 * for every process that maps the library. The price: a write that fails
 * with SSL_ERROR_WANT_WRITE and is retried with the same buffer is seen
 * twice (the parsers count what they cannot follow as desyncs).
 *
 * Which socket an SSL object uses is learned from the syscalls its calls make
 * on the same thread (mop_on_data_exit records the fd in the slot), not read
 * from libssl's structs: the layout of SSL/SSL_CONNECTION and BIO differs
 * between OpenSSL 1.1.1, 3.0 and 3.2+ (where SSL_CONNECTION appeared) and
 * with build options, while a socket BIO always ends in read(2)/write(2) of
 * its fd on the calling thread. The fd is also remembered per SSL object for
 * calls that make no syscall (a read served from bytes libssl already holds).
 */
#include <bpf/bpf_tracing.h>

static __always_inline int mop_ssl_enter(struct pt_regs *ctx, __u8 direction, bool ex)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!mop_tracked(pid_tgid >> 32))
		return 0;
	struct mop_ssl_call call = {
		.ssl = PT_REGS_PARM1(ctx),
		.buf = PT_REGS_PARM2(ctx),
		.len_ptr = ex ? PT_REGS_PARM4(ctx) : 0,
		.fd = -1,
		.direction = direction,
	};
	struct mop_active_io *slot = bpf_map_lookup_elem(&mop_active_io, &pid_tgid);
	if (slot) {
		slot->ssl = call;
	} else {
		struct mop_active_io fresh = {.ssl = call};
		bpf_map_update_elem(&mop_active_io, &pid_tgid, &fresh, BPF_ANY);
	}
	return 0;
}

/* A write, at entry: its socket is the one the SSL object used before (its
 * handshake, or an earlier read); the write's own syscall comes later. */
static __always_inline int mop_ssl_write(struct pt_regs *ctx, long num)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (num <= 0 || !mop_tracked(pid_tgid >> 32))
		return 0;
	struct mop_ssl_key key = {.ssl = PT_REGS_PARM1(ctx), .tgid = pid_tgid >> 32};
	__s32 *known = bpf_map_lookup_elem(&mop_ssl_fds, &key);
	if (!known) {
		mop_count_drop(MOP_DROP_TLS_NO_FD);
		return 0;
	}
	__s32 fd = *known;
	struct mop_tuple *t = mop_conn_of(pid_tgid, fd, MOP_SC_SSL_WRITE);
	if (!t)
		return 0;
	/* Keeps the write's ciphertext out of the ring buffer. */
	if (!(t->flags & MOP_CONN_TLS))
		t->flags |= MOP_CONN_TLS;
	mop_emit_data(pid_tgid, fd, t, MOP_DIR_EGRESS, MOP_SC_SSL_WRITE, MOP_EVF_TLS, MOP_BUF_PLAIN,
		      PT_REGS_PARM2(ctx), 0, num);
	return 0;
}

/* int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe")
int mop_ssl_write_enter(struct pt_regs *ctx) { return mop_ssl_write(ctx, (int)PT_REGS_PARM3(ctx)); }

/* int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written) */
SEC("uprobe")
int mop_ssl_write_ex_enter(struct pt_regs *ctx)
{
	__u64 num = PT_REGS_PARM3(ctx);
	return mop_ssl_write(ctx, num > 0x7fffffff ? 0x7fffffff : (long)num);
}

/* int SSL_read(SSL *ssl, void *buf, int num) */
SEC("uprobe")
int mop_ssl_read_enter(struct pt_regs *ctx) { return mop_ssl_enter(ctx, MOP_DIR_INGRESS, false); }

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe")
int mop_ssl_read_ex_enter(struct pt_regs *ctx) { return mop_ssl_enter(ctx, MOP_DIR_INGRESS, true); }

/* int SSL_do_handshake(SSL *s): moves no plaintext, but its syscalls tie the
 * SSL object to its socket before the first read, and mark the connection
 * as TLS so that the handshake's ciphertext is not sent to userspace. */
SEC("uprobe")
int mop_ssl_handshake_enter(struct pt_regs *ctx) { return mop_ssl_enter(ctx, MOP_DIR_NONE, false); }

/* The return of the reads and of the handshake. */
SEC("uretprobe")
int mop_ssl_ret(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!mop_maybe_tracked(pid_tgid >> 32))
		return 0;
	struct mop_active_io *slot = bpf_map_lookup_elem(&mop_active_io, &pid_tgid);
	if (!slot || !slot->ssl.ssl)
		return 0;
	struct mop_ssl_call call = slot->ssl;
	slot->ssl.ssl = 0;

	struct mop_ssl_key key = {.ssl = call.ssl, .tgid = pid_tgid >> 32};
	__s32 fd = call.fd;
	if (fd >= 0) {
		__s32 *known = bpf_map_lookup_elem(&mop_ssl_fds, &key);
		if (!known || *known != fd)
			bpf_map_update_elem(&mop_ssl_fds, &key, &fd, BPF_ANY);
	}
	if (call.direction == MOP_DIR_NONE)
		return 0;

	long n;
	int rc = (int)PT_REGS_RC(ctx);
	if (call.len_ptr) {
		/* The _ex variants return 1 on success and store the count. */
		__u64 moved = 0;
		if (rc != 1 || bpf_probe_read_user(&moved, sizeof(moved), (void *)call.len_ptr))
			return 0;
		n = (long)moved;
	} else {
		n = rc;
	}
	if (n <= 0)
		return 0;
	if (fd < 0) {
		__s32 *known = bpf_map_lookup_elem(&mop_ssl_fds, &key);
		if (!known) {
			mop_count_drop(MOP_DROP_TLS_NO_FD);
			return 0;
		}
		fd = *known;
	}
	__u8 syscall = call.direction == MOP_DIR_INGRESS ? MOP_SC_SSL_READ : MOP_SC_SSL_WRITE;
	struct mop_tuple *t = mop_conn_of(pid_tgid, fd, syscall);
	if (!t)
		return 0;
	if (!(t->flags & MOP_CONN_TLS))
		t->flags |= MOP_CONN_TLS;
	mop_emit_data(pid_tgid, fd, t, call.direction, syscall, MOP_EVF_TLS, MOP_BUF_PLAIN,
		      call.buf, 0, n);
	return 0;
}
