/* Empty programs on the four tracepoints an untracked read/write pair hits:
 * the floor no check inside a program can go below. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
SEC("tracepoint/syscalls/sys_enter_read") int a(void *c) { return 0; }
SEC("tracepoint/syscalls/sys_exit_read") int b(void *c) { return 0; }
SEC("tracepoint/syscalls/sys_enter_write") int c(void *c) { return 0; }
SEC("tracepoint/syscalls/sys_exit_write") int d(void *c) { return 0; }
