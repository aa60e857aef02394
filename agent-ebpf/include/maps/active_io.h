/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_ACTIVE_IO_H
#define MOP_MAP_ACTIVE_IO_H
/* Per-thread state, keyed by pid_tgid: the arguments of a syscall in flight
 * (sys_enter to sys_exit; one syscall per thread at a time) and of an
 * OpenSSL call in flight (uprobe to uretprobe). Both live in one value so
 * that the syscall exit learns, with the lookup it already does, whether its
 * bytes are the ciphertext of a TLS call. */
enum mop_buf_kind {
	MOP_BUF_NONE = 0,  /* no user buffer (sendfile, connect) */
	MOP_BUF_PLAIN = 1, /* buf is the data */
	MOP_BUF_IOV = 2,   /* buf is a struct iovec array of iovlen entries */
};

struct mop_io {
	__u64 buf;
	__u64 iovlen;
	__s32 fd;
	__u8 buf_kind;
	__u8 syscall;
	__u8 direction;
	__u8 _pad;
};

/* SSL_read/SSL_write (and _ex) or SSL_do_handshake in flight. */
struct mop_ssl_call {
	__u64 ssl;     /* the SSL object; 0 when no call is in flight */
	__u64 buf;     /* the caller's buffer */
	__u64 len_ptr; /* size_t * of the _ex variants (bytes moved), else 0 */
	__s32 fd;      /* socket a syscall inside the call used, or -1 */
	__u8 direction; /* enum mop_direction; NONE for the handshake */
	__u8 _pad[3];
};

struct mop_active_io {
	struct mop_io io;
	struct mop_ssl_call ssl;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct mop_active_io);
} mop_active_io SEC(".maps");
#endif
