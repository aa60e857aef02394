/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_DROPS_H
#define MOP_MAP_DROPS_H
/* Per-CPU counters of lost events, indexed by enum mop_drop_reason. Per-CPU so
 * that counting a drop never contends on a shared cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MOP_DROP__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} mop_drops SEC(".maps");

static __always_inline void mop_count_drop(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&mop_drops, &reason);
	if (n)
		*n += 1;
}
#endif
