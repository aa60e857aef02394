/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The "btf" attach mode of the sockets set: one BTF-typed raw tracepoint
 * program on sys_exit in place of the sys_enter_X/sys_exit_X tracepoint
 * pairs of accept, connect and the data syscalls (included by
 * sockets.bpf.c, sharing its maps and helpers; the loader attaches either
 * this program or those tracepoints, never both).
 *
 * Why: a syscall tracepoint hit costs ~170 ns before any program runs (the
 * kernel builds a per-call trace record; docs/performance.md, "Issue 16,
 * session 24"), and the tracepoint mode hits two per syscall, the entry only
 * to carry the arguments to the exit in the thread's mop_active_io slot.
 * Here the exit reads the arguments from the syscall's saved user registers
 * (a typed pointer: plain loads, no helper call), so each syscall costs one
 * program run and no slot write. The price: the program runs on every
 * syscall exit of every process, and leaves those it does not follow after
 * a compare of the syscall number. fentry/fexit would run only on the
 * followed syscalls, but this kernel refuses to load them (EPERM); kprobes
 * are not built in.
 *
 * x86-64 only (syscall numbers and pt_regs fields): elsewhere the CO-RE
 * relocation of the register fields fails, the load fails, and the loader
 * falls back to the tracepoints.
 */
#include <bpf/bpf_tracing.h>

/* x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define MOP_NR_READ 0
#define MOP_NR_WRITE 1
#define MOP_NR_READV 19
#define MOP_NR_WRITEV 20
#define MOP_NR_SENDFILE 40
#define MOP_NR_CONNECT 42
#define MOP_NR_ACCEPT 43
#define MOP_NR_SENDTO 44
#define MOP_NR_RECVFROM 45
#define MOP_NR_SENDMSG 46
#define MOP_NR_RECVMSG 47
#define MOP_NR_ACCEPT4 288
/* thread_info.status: the syscall is a 32-bit one, numbered by another table
 * (the syscall tracepoints skip those too). */
#define MOP_TS_COMPAT 0x0002

/* The thread's slot if it belongs to a tracked process, made on its first
 * followed syscall (as mop_stash does in the tracepoint mode), so that later
 * syscalls ask one hash, not the tracked-process hash as well. */
static __always_inline struct mop_active_io *mop_btf_slot(__u64 pid_tgid)
{
	struct mop_active_io *slot = bpf_map_lookup_elem(&mop_active_io, &pid_tgid);
	if (slot)
		return slot;
	if (!mop_tracked(pid_tgid >> 32))
		return NULL;
	struct mop_active_io fresh = {.ssl = {.fd = -1}};
	bpf_map_update_elem(&mop_active_io, &pid_tgid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&mop_active_io, &pid_tgid);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(mop_sys_exit, struct pt_regs *regs, long ret)
{
	struct mop_io io = {};
	long nr = regs->orig_ax;
	switch (nr) {
	case MOP_NR_READ:
		io.syscall = MOP_SC_READ;
		io.buf_kind = MOP_BUF_PLAIN;
		io.direction = MOP_DIR_INGRESS;
		break;
	case MOP_NR_RECVFROM:
		io.syscall = MOP_SC_RECVFROM;
		io.buf_kind = MOP_BUF_PLAIN;
		io.direction = MOP_DIR_INGRESS;
		break;
	case MOP_NR_READV:
		io.syscall = MOP_SC_READV;
		io.buf_kind = MOP_BUF_IOV;
		io.direction = MOP_DIR_INGRESS;
		break;
	case MOP_NR_RECVMSG:
		io.syscall = MOP_SC_RECVMSG;
		io.buf_kind = MOP_BUF_IOV;
		io.direction = MOP_DIR_INGRESS;
		break;
	case MOP_NR_WRITE:
		io.syscall = MOP_SC_WRITE;
		io.buf_kind = MOP_BUF_PLAIN;
		io.direction = MOP_DIR_EGRESS;
		break;
	case MOP_NR_SENDTO:
		io.syscall = MOP_SC_SENDTO;
		io.buf_kind = MOP_BUF_PLAIN;
		io.direction = MOP_DIR_EGRESS;
		break;
	case MOP_NR_WRITEV:
		io.syscall = MOP_SC_WRITEV;
		io.buf_kind = MOP_BUF_IOV;
		io.direction = MOP_DIR_EGRESS;
		break;
	case MOP_NR_SENDMSG:
		io.syscall = MOP_SC_SENDMSG;
		io.buf_kind = MOP_BUF_IOV;
		io.direction = MOP_DIR_EGRESS;
		break;
	case MOP_NR_SENDFILE:
		io.syscall = MOP_SC_SENDFILE;
		io.buf_kind = MOP_BUF_NONE;
		io.direction = MOP_DIR_EGRESS;
		break;
	case MOP_NR_ACCEPT:
	case MOP_NR_ACCEPT4:
		io.syscall = MOP_SC_ACCEPT;
		break;
	case MOP_NR_CONNECT:
		/* A non-blocking connect returns -EINPROGRESS and is followed
		 * like a completed one, as in the tracepoint mode. */
		if (ret != 0 && ret != -MOP_EINPROGRESS)
			return 0;
		io.syscall = MOP_SC_CONNECT;
		break;
	default:
		return 0;
	}
	/* Failed calls and EAGAIN reads move nothing (connect was checked
	 * above: it returns 0). */
	if (ret <= 0 && io.syscall != MOP_SC_CONNECT)
		return 0;
	/* One helper call gives the ids and the compat flag: the ids are the
	 * task's own fields (what bpf_get_current_pid_tgid returns), read
	 * with plain loads. Each helper call is a real call and return here
	 * (no inlining of these two on x86-64; return thunks on this CPU). */
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = task->tgid;
	if (!mop_maybe_tracked(tgid))
		return 0;
	__u64 pid_tgid = ((__u64)tgid << 32) | (__u32)task->pid;
	struct mop_active_io *slot = mop_btf_slot(pid_tgid);
	/* TS_COMPAT: a 32-bit syscall, numbered by another table (the
	 * syscall tracepoints skip those too). */
	if (!slot || (task->thread_info.status & MOP_TS_COMPAT))
		return 0;
	/* The registers still hold the arguments: a syscall does not write
	 * the caller's saved argument registers back, only ax (the result). */
	__s32 fd = (__s32)regs->di;
	if (io.syscall == MOP_SC_ACCEPT) {
		mop_track_conn(pid_tgid, (__s32)ret, MOP_ROLE_SERVER, MOP_SC_ACCEPT);
		return 0;
	}
	if (io.syscall == MOP_SC_CONNECT) {
		mop_track_conn(pid_tgid, fd, MOP_ROLE_CLIENT, MOP_SC_CONNECT);
		return 0;
	}
	io.fd = fd;
	if (io.buf_kind == MOP_BUF_PLAIN) {
		io.buf = regs->si;
	} else if (io.syscall == MOP_SC_READV || io.syscall == MOP_SC_WRITEV) {
		io.buf = regs->si;
		io.iovlen = regs->dx;
	} else if (io.buf_kind == MOP_BUF_IOV) {
		/* recvmsg/sendmsg: the iovec array sits inside the caller's
		 * msghdr; the kernel writes back only its name/control lengths
		 * and flags, so the pointer read at exit is the one used. */
		struct user_msghdr msg = {};
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)regs->si))
			return 0;
		io.buf = (__u64)msg.msg_iov;
		io.iovlen = msg.msg_iovlen;
	}
	mop_data_done(pid_tgid, slot, &io, ret);
	return 0;
}
