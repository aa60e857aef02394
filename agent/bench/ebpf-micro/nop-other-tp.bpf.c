/* One empty program on a syscall tracepoint a read/write pair never hits
 * (sys_exit_accept4): what keeping any syscall tracepoint costs every other
 * syscall (the kernel then sends every task's syscalls through the traced
 * slow path). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
SEC("tracepoint/syscalls/sys_exit_accept4") int a(void *c) { return 0; }
