/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_NOT_SOCKETS_H
#define MOP_MAP_NOT_SOCKETS_H
/* fds of tracked processes found not to be TCP sockets (files, pipes,
 * eventfds), keyed like mop_conns. Without it every read/write of a data file
 * by, say, a PostgreSQL backend would walk the task's fd table again.
 * Entries go at close(2); LRU bounds what a missed close leaves behind. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} mop_not_sockets SEC(".maps");
#endif
