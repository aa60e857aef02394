/* As nop-tpbtf.bpf.c, untyped (raw_tp): the pt_regs must then be read with
 * bpf_probe_read_kernel. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
SEC("raw_tp/sys_exit") int a(void *ctx) { return 0; }
