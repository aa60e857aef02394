/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_CONNS_H
#define MOP_MAP_CONNS_H
/* Open TCP connections of tracked processes, keyed by (tgid << 32 | fd):
 * fds belong to the process, not the thread. LRU so that connections whose
 * close we never saw (process killed) age out instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct mop_tuple);
} mop_conns SEC(".maps");
#endif
