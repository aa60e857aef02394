/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_TRACKED_PIDS_H
#define MOP_MAP_TRACKED_PIDS_H
/* Processes (tgid) to capture, written by userspace from the config. Every
 * program checks this first, so untracked processes cost one hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} mop_tracked_pids SEC(".maps");
#endif
