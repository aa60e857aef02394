// Cost of helper calls on this host (docs/performance.md, "Issue 16,
// session 25: kernel side"): a tp_btf/sys_exit program that only makes
// MOP_CALLS (default 4) calls of one helper per syscall, measured with
// `untracked` against nop-tpbtf.o as the floor. Variants (-D...):
//   (none)      bpf_get_current_pid_tgid()
//   MOP_KTIME   bpf_ktime_get_ns()
//   MOP_STACK   bpf_probe_read_user() of 64 bytes of the caller's stack into
//               the BPF stack
//   MOP_HEAP    the same into a per-CPU array value (a map lookup is made
//               in every variant, so the two differ by the destination only)
// e.g. clang -target bpf -O2 -g -D__TARGET_ARCH_x86 -I ../../../agent-ebpf/include \
//        -DMOP_CALLS=8 -c nop-tpbtf-calls.bpf.c -o calls8.o
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
#ifndef MOP_CALLS
#define MOP_CALLS 4
#endif
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[8]);
} heap SEC(".maps");

SEC("tp_btf/sys_exit") int BPF_PROG(a, struct pt_regs *regs, long ret)
{
	__u64 x = 0, buf[8] = {};
	__u32 zero = 0;
	__u64 *h = bpf_map_lookup_elem(&heap, &zero);
	if (!h)
		return 0;
#pragma unroll
	for (int i = 0; i < MOP_CALLS; i++) {
#if defined(MOP_KTIME)
		x += bpf_ktime_get_ns();
#elif defined(MOP_STACK)
		bpf_probe_read_user(buf, sizeof(buf), (void *)regs->sp);
#elif defined(MOP_HEAP)
		bpf_probe_read_user(h, sizeof(buf), (void *)regs->sp);
#else
		x += bpf_get_current_pid_tgid();
#endif
	}
	return x + buf[0] == 1;
}
