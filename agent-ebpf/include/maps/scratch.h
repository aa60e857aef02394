/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_SCRATCH_H
#define MOP_MAP_SCRATCH_H
/* One event under construction per CPU: struct mop_event is too large for the
 * 512-byte BPF stack. Twice MOP_MAX_CAPTURE of room after the header lets the
 * iovec copy loop use masked offsets the verifier accepts. iov holds a
 * writev/sendmsg iovec array, read from userspace in one call: each
 * bpf_probe_read_user costs about as much for 16 bytes as for 500
 * (docs/performance.md, 2026-12-04 session 23). */
/* gRPC C-core writes a HEADERS frame as one iovec per header name and value
 * (28 iovecs seen for one call), so a handful is not enough. */
#define MOP_MAX_IOV 32

struct mop_scratch {
	struct mop_event ev;
	__u8 overflow[MOP_MAX_CAPTURE];
	struct iovec iov[MOP_MAX_IOV];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mop_scratch);
} mop_scratch SEC(".maps");
#endif
