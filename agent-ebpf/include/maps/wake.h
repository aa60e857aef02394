/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_WAKE_H
#define MOP_MAP_WAKE_H
/* Bytes this CPU has put into mop_events since it last asked the ring how
 * much data waits (mop_wake_flags in sockets.bpf.c). Per-CPU: the lookup is
 * inlined by the verifier and no two CPUs write one cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} mop_wake SEC(".maps");
#endif
