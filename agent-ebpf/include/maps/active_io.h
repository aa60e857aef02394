/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_ACTIVE_IO_H
#define MOP_MAP_ACTIVE_IO_H
/* Arguments of a syscall in flight, from sys_enter to sys_exit, keyed by
 * pid_tgid (one syscall per thread at a time). */
enum mop_buf_kind {
	MOP_BUF_NONE = 0,  /* no user buffer (sendfile, connect) */
	MOP_BUF_PLAIN = 1, /* buf is the data */
	MOP_BUF_IOV = 2,   /* buf is a struct iovec array of iovlen entries */
};

struct mop_active_io {
	__u64 buf;
	__u64 iovlen;
	__s32 fd;
	__u8 buf_kind;
	__u8 syscall;
	__u8 direction;
	__u8 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct mop_active_io);
} mop_active_io SEC(".maps");
#endif
