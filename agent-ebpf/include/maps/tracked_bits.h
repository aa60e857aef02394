/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_TRACKED_BITS_H
#define MOP_MAP_TRACKED_BITS_H
/* A filter in front of mop_tracked_pids: one bit per process id, set for
 * every id that may be tracked. A syscall tracepoint runs for every process
 * of the node, and on most of them (a load generator, sidecars, the kubelet)
 * the answer is "not tracked": an array lookup is inlined by the verifier (a
 * bounds check and an add), where the hash lookup hashes the key and walks a
 * bucket (68 ns per run against 5 for the empty program on the 2026-12-04
 * host, docs/performance.md). The hash stays the authority: a set bit sends
 * the check on to it, so a stale bit only costs that lookup.
 *
 * Two bitmaps, one writer each, so that no writer's read-modify-write of a
 * word can undo another's: userspace writes the _user one (the processes it
 * finds listening on instrument.ports; one thread, plain updates), the fork
 * and exit programs the _kernel one (children of tracked processes), with
 * atomic adds that each touch only their own bit. Sized by the loader to
 * kernel.pid_max / 64 words; ids beyond it (pid_max raised later) find no
 * word and fall back to the hash. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536); /* 4,194,304 ids, PID_MAX_LIMIT on 64-bit */
	__type(key, __u32);
	__type(value, __u64);
} mop_tracked_bits_user SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} mop_tracked_bits_kernel SEC(".maps");

/* false: id is certainly not tracked. true: ask mop_tracked_pids. */
static __always_inline bool mop_maybe_tracked(__u32 id)
{
	__u32 word = id / 64;
	__u64 *u = bpf_map_lookup_elem(&mop_tracked_bits_user, &word);
	__u64 *k = bpf_map_lookup_elem(&mop_tracked_bits_kernel, &word);
	if (!u || !k)
		return true;
	return (*u | *k) & (1ULL << (id % 64));
}

/* Only the fork of id sets its bit and only the exit of id clears it, and
 * the two cannot overlap (an id is reused only after its task is gone), so
 * a test then an atomic add of +/- the bit is exact; adds of other bits of
 * the word by other CPUs commute with it. (Atomic or/and would need
 * -mcpu=v3 and kernel 5.12.) */
static __always_inline void mop_kernel_bit(__u32 id, bool set)
{
	__u32 word = id / 64;
	__u64 bit = 1ULL << (id % 64);
	__u64 *k = bpf_map_lookup_elem(&mop_tracked_bits_kernel, &word);
	if (!k)
		return;
	bool is_set = (*k & bit) != 0;
	if (set && !is_set)
		__sync_fetch_and_add(k, bit);
	else if (!set && is_set)
		__sync_fetch_and_add(k, -bit);
}
#endif
