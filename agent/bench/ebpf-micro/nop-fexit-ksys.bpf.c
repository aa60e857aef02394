/* As nop-fexit.bpf.c, on ksys_read/ksys_write (one call below the syscall
 * entry points) instead of __x64_sys_read/__x64_sys_write. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
SEC("fexit/ksys_read") int BPF_PROG(a, unsigned int fd, char *buf, size_t count, long ret) { return 0; }
SEC("fexit/ksys_write") int BPF_PROG(b, unsigned int fd, const char *buf, size_t count, long ret) { return 0; }
