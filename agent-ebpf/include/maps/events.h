/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MOP_MAP_EVENTS_H
#define MOP_MAP_EVENTS_H
/* All events, in the order the CPUs reserved them. Sized by the loader
 * (config capture.ring_buffer_bytes); the value here is the default. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} mop_events SEC(".maps");
#endif
