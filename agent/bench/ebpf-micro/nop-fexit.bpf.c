/* Empty fexit programs on the syscall functions behind read(2) and write(2)
 * (BPF trampolines, not the syscall tracepoints): the floor of the fexit
 * attach mode for an untracked read/write pair, one run per syscall. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
SEC("fexit/__x64_sys_read") int BPF_PROG(a, const struct pt_regs *regs, long ret) { return 0; }
SEC("fexit/__x64_sys_write") int BPF_PROG(b, const struct pt_regs *regs, long ret) { return 0; }
