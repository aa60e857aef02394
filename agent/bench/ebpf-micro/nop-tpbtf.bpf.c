/* One empty BTF-typed raw tracepoint program on sys_exit: it runs once for
 * every syscall of every process (not only read/write), sees the syscall's
 * registers (its arguments and number) and its return value, and skips the
 * per-call trace record the syscall tracepoints build. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
SEC("tp_btf/sys_exit") int BPF_PROG(a, struct pt_regs *regs, long ret) { return 0; }
