/* Which programs of an object the micro-benchmark loaders attach: tracepoint,
 * raw/BTF tracepoint, fentry and fexit ones (not uprobes), in the attach mode
 * of the environment's MOP_ATTACH, as the agent picks them: "btf" (default)
 * attaches an object's tp_btf programs in place of its syscall tracepoints
 * (sys_enter_close stays a tracepoint), "tracepoints" only the tracepoints.
 * An object without tp_btf programs is attached whole in both. */
#include <bpf/libbpf.h>
#include <stdlib.h>
#include <string.h>

static int has_btf_tp(struct bpf_object *obj) {
	struct bpf_program *p;
	bpf_object__for_each_program(p, obj)
		if (!strncmp(bpf_program__section_name(p), "tp_btf/", 7)) return 1;
	return 0;
}
static int attachable(struct bpf_object *obj, struct bpf_program *p) {
	const char *s = bpf_program__section_name(p);
	const char *m = getenv("MOP_ATTACH");
	int tracepoints = m && !strcmp(m, "tracepoints");
	if (!strncmp(s, "tp_btf/", 7)) return !tracepoints;
	if (!strncmp(s, "tracepoint/syscalls/", 20) && !tracepoints && has_btf_tp(obj))
		return !strcmp(s, "tracepoint/syscalls/sys_enter_close");
	return !strncmp(s, "tracepoint/", 11) || !strncmp(s, "fentry/", 7) || !strncmp(s, "fexit/", 6) ||
	       !strncmp(s, "raw_tp/", 7);
}
