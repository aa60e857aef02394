/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one definition of what the kernel side hands to userspace.
 * agent/src/ebpf/event.rs mirrors this byte for byte; the layout test in
 * agent/tests/layout.rs compiles this header on the host and compares every
 * size and offset, so a change here without the Rust change fails CI.
 */
#ifndef MOP_EVENT_H
#define MOP_EVENT_H

/* Largest payload prefix copied per syscall. A power of two: the programs mask
 * lengths with (MOP_MAX_CAPTURE * 2 - 1) so the verifier can prove bounds. */
#define MOP_MAX_CAPTURE 4096

enum mop_event_kind {
	MOP_EV_OPEN = 1,  /* connection first seen (accept, connect, or lazily) */
	MOP_EV_DATA = 2,  /* bytes moved by one read/write-family syscall */
	MOP_EV_CLOSE = 3, /* close(2) of a tracked connection */
};

enum mop_direction {
	MOP_DIR_NONE = 0,
	MOP_DIR_INGRESS = 1, /* the process read the bytes */
	MOP_DIR_EGRESS = 2,  /* the process wrote the bytes */
};

enum mop_role {
	MOP_ROLE_UNKNOWN = 0, /* opened before the agent started; userspace infers */
	MOP_ROLE_SERVER = 1,  /* accepted */
	MOP_ROLE_CLIENT = 2,  /* connected */
};

/* Which syscall produced an event; for diagnostics and per-syscall counters. */
enum mop_syscall {
	MOP_SC_ACCEPT = 1,
	MOP_SC_CONNECT = 2,
	MOP_SC_READ = 3,
	MOP_SC_READV = 4,
	MOP_SC_RECVFROM = 5,
	MOP_SC_RECVMSG = 6,
	MOP_SC_WRITE = 7,
	MOP_SC_WRITEV = 8,
	MOP_SC_SENDTO = 9,
	MOP_SC_SENDMSG = 10,
	MOP_SC_SENDFILE = 11,
	MOP_SC_CLOSE = 12,
	/* Plaintext of a TLS connection, from the OpenSSL uprobes (tls.h). */
	MOP_SC_SSL_READ = 13,
	MOP_SC_SSL_WRITE = 14,
};

/* mop_event.flags */
enum mop_event_flag {
	MOP_EVF_TLS = 1, /* data[] is TLS plaintext taken at SSL_read/SSL_write */
};

/* mop_tuple.flags */
enum mop_conn_flag {
	MOP_CONN_TLS = 1, /* an SSL call used this socket: its syscall bytes are ciphertext */
};

/* Indexes of the per-CPU drop counters (map mop_drops). */
enum mop_drop_reason {
	MOP_DROP_RINGBUF_FULL = 0,
	MOP_DROP_CONN_TABLE_FULL = 1,
	MOP_DROP_USER_READ = 2,
	/* A TLS call whose socket was never seen (no syscall of its thread
	 * inside any call on that SSL object). */
	MOP_DROP_TLS_NO_FD = 3,
	MOP_DROP__COUNT = 4,
};

/* Connection tuple as the kernel socket sees it: s* is local, d* is remote.
 * Addresses are in network byte order (IPv4 in the first 4 bytes), ports in
 * host byte order. */
struct mop_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 role;
	__u8 flags; /* enum mop_conn_flag */
};

struct mop_event {
	__u64 ts_ns; /* bpf_ktime_get_ns() at syscall exit */
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__u8 kind;      /* enum mop_event_kind */
	__u8 direction; /* enum mop_direction */
	__u8 syscall;   /* enum mop_syscall */
	__u8 flags;     /* enum mop_event_flag */
	__u32 total_len;    /* bytes the syscall moved (may exceed captured_len) */
	__u32 captured_len; /* bytes of data[] that are valid */
	struct mop_tuple tuple;
	/* Task name, on OPEN and CLOSE events only (empty on DATA): names
	 * short-lived processes (a curl gone before userspace reads /proc). */
	char comm[16];
	__u8 data[MOP_MAX_CAPTURE];
};

/* Bytes of struct mop_event before data[]; what an OPEN/CLOSE event carries. */
#define MOP_EVENT_HEADER_SIZE (sizeof(struct mop_event) - MOP_MAX_CAPTURE)

#endif
