/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_SSL_FDS_H
#define MOP_MAP_SSL_FDS_H
/* The socket each SSL object was last seen using, learned from the syscalls
 * its calls made. Needed for a call that makes none (SSL_read served from
 * bytes OpenSSL had already read). LRU: SSL_free is not hooked. */
struct mop_ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mop_ssl_key);
	__type(value, __s32);
} mop_ssl_fds SEC(".maps");
#endif
