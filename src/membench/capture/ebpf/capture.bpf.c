// SPDX-License-Identifier: GPL-2.0
/*
 * membench socket capture: copies the bytes that move through watched TCP sockets into a ring buffer.
 *
 * Only syscall tracepoints are used (no kprobes/fentry). Data syscalls are seen at sys_exit only: a call that
 * moved nothing (EAGAIN, the second read of every memcached request) costs one comparison, and the arguments
 * of the others are read back from the registers saved at syscall entry (bpf_task_pt_regs), so no sys_enter
 * program runs for them and nothing is stashed per thread. The fd is checked once (task->files->fdt->fd[fd]
 * -> file -> socket -> sock: TCP, watched port, wanted pid) and the verdict is cached per (tgid, fd), so the
 * common case is one hash lookup. The return value says how many bytes moved: that many bytes (up to the copy
 * limit) are copied from user memory and the per-direction stream offset advances by the full count,
 * delivered or not.
 *
 * The registers are those of x86-64 (the object is built for it): di, si, dx, r10 carry arguments 1 to 4.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "events.h"
#include "capture_maps.h"
#include "capture_track.h"

char LICENSE[] SEC("license") = "GPL";

/* Send the scratch event of this CPU: header plus `copied` bytes. */
static __always_inline void output(const volatile struct mb_config *cfg, struct scratch_event *event, __u64 offset,
				   __u64 length, __u32 copied)
{
	if (copied > MB_COPY_MAX)
		copied = MB_COPY_MAX;
	event->header.offset = offset;
	event->header.length = length;
	event->header.copied = copied;
	event->header.flags = copied < length ? MB_FLAG_TRUNCATED : 0;
	if (ring_output(cfg, &event->header, sizeof(event->header) + copied)) {
		count(MB_COUNTER_DROPPED_EVENTS, 1);
		count(MB_COUNTER_DROPPED_BYTES, length);
	}
}

static long copy_iovec(__u32 index, void *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch_event *event = bpf_map_lookup_elem(&scratch, &cpu);
	const volatile struct mb_config *cfg = get_config();
	struct iovec_walk *walk;
	struct user_iovec iov;
	__u32 position;
	__u64 length;
	__u64 room;

	if (!event || !cfg)
		return 1;
	walk = &event->walk;
	if (walk->remaining == 0)
		return 1;
	if ((index & (MB_IOV_BATCH - 1)) == 0) {
		__u64 left = walk->count - index;
		__u32 size = left < MB_IOV_BATCH ? left * sizeof(iov) : sizeof(walk->batch);

		if (size > sizeof(walk->batch))
			size = sizeof(walk->batch);
		if (bpf_probe_read_user(walk->batch, size, (void *)(walk->iovecs + index * sizeof(iov))))
			return 1;
	}
	iov = walk->batch[index & (MB_IOV_BATCH - 1)];
	length = iov.iov_len < walk->remaining ? iov.iov_len : walk->remaining;
	if (length == 0)
		return 0;
	if (walk->length && walk->copied + length > walk->limit) {
		output(cfg, event, walk->offset, walk->length, walk->copied);
		walk->offset += walk->length;
		walk->length = 0;
		walk->copied = 0;
	}
	walk->remaining -= length;
	walk->length += length;
	room = walk->limit - walk->copied;
	if (room > length)
		room = length;
	if (room > MB_COPY_MAX)
		room = MB_COPY_MAX;
	position = walk->copied & (MB_COPY_MAX - 1);
	if (bpf_probe_read_user(&event->data[position], room, (void *)iov.iov_base))
		return 1;
	walk->copied += room;
	return 0;
}

/* A data syscall that returned: copy what it moved if its fd is a watched connection. `kind` says how the
 * buffer argument (the second) is to be read. */
static __always_inline int data_exit(long ret, __u16 syscall, __u8 direction, __u8 kind)
{
	const volatile struct mb_config *cfg;
	struct pt_regs *regs;
	struct mb_fd_key key;
	struct mb_connection *connection;
	struct scratch_event *event;
	struct iovec_walk *walk;
	__u64 buffer;
	__u64 count;
	__u64 offset;
	__u32 copied;
	__u32 limit;
	__u32 cpu;

	if (ret <= 0)
		return 0;
	cfg = get_config();
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	if (!cfg || !pid_wanted(cfg, key.tgid))
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (!regs)
		return 0;
	/* A peek leaves the bytes in the socket: they are captured when actually read. */
	if ((syscall == MB_SYS_RECVFROM && (regs->r10 & MSG_PEEK)) ||
	    (syscall == MB_SYS_RECVMSG && (regs->dx & MSG_PEEK)))
		return 0;
	key.fd = (__s32)regs->di;
	buffer = regs->si;
	count = regs->dx;
	connection = watched_connection(cfg, &key);
	if (!connection)
		return 0;
	offset = __sync_fetch_and_add(&connection->offset[direction & 1], ret);

	cpu = bpf_get_smp_processor_id();
	event = bpf_map_lookup_elem(&scratch, &cpu);
	if (!event)
		return 0;
	fill_header(&event->header, cfg, connection->conn, MB_EVENT_DATA);
	event->header.direction = direction;
	limit = cfg->copy_limit < MB_COPY_MAX ? cfg->copy_limit : MB_COPY_MAX;
	if (kind == MB_BUFFER_PLAIN) {
		copied = (__u64)ret < limit ? (__u32)ret : limit;
		if (copied > MB_COPY_MAX)
			copied = MB_COPY_MAX;
		if (bpf_probe_read_user(event->data, copied, (void *)buffer))
			copied = 0;
		output(cfg, event, offset, ret, copied);
		return 0;
	}

	walk = &event->walk;
	walk->iovecs = buffer;
	walk->count = count;
	walk->remaining = ret;
	walk->offset = offset;
	walk->length = 0;
	walk->copied = 0;
	walk->limit = limit;
	if (kind == MB_BUFFER_MSGHDR) {
		struct user_msghdr msg = {};

		bpf_probe_read_user(&msg, sizeof(msg), (void *)buffer);
		walk->iovecs = msg.msg_iov;
		walk->count = msg.msg_iovlen;
	}
	if (walk->count > MB_MAX_IOV)
		walk->count = MB_MAX_IOV;
	bpf_loop(walk->count, copy_iovec, NULL, 0);
	/* Bytes the walk could not attribute (unreadable iovec array) end the last event as its missing tail. */
	output(cfg, event, walk->offset, walk->length + walk->remaining, walk->copied);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_read")
int exit_read(struct trace_event_raw_sys_exit *ctx)
{
	return data_exit(ctx->ret, MB_SYS_READ, MB_DIR_INGRESS, MB_BUFFER_PLAIN);
}

SEC("tracepoint/syscalls/sys_exit_readv")
int exit_readv(struct trace_event_raw_sys_exit *ctx)
{
	return data_exit(ctx->ret, MB_SYS_READV, MB_DIR_INGRESS, MB_BUFFER_IOVEC);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	return data_exit(ctx->ret, MB_SYS_RECVFROM, MB_DIR_INGRESS, MB_BUFFER_PLAIN);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	return data_exit(ctx->ret, MB_SYS_RECVMSG, MB_DIR_INGRESS, MB_BUFFER_MSGHDR);
}

SEC("tracepoint/syscalls/sys_exit_write")
int exit_write(struct trace_event_raw_sys_exit *ctx)
{
	return data_exit(ctx->ret, MB_SYS_WRITE, MB_DIR_EGRESS, MB_BUFFER_PLAIN);
}

SEC("tracepoint/syscalls/sys_exit_writev")
int exit_writev(struct trace_event_raw_sys_exit *ctx)
{
	return data_exit(ctx->ret, MB_SYS_WRITEV, MB_DIR_EGRESS, MB_BUFFER_IOVEC);
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int exit_sendto(struct trace_event_raw_sys_exit *ctx)
{
	return data_exit(ctx->ret, MB_SYS_SENDTO, MB_DIR_EGRESS, MB_BUFFER_PLAIN);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	return data_exit(ctx->ret, MB_SYS_SENDMSG, MB_DIR_EGRESS, MB_BUFFER_MSGHDR);
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	const volatile struct mb_config *cfg = get_config();
	struct mb_fd_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__s32)ctx->args[0] };

	if (cfg)
		forget(cfg, &key);
	return 0;
}

/* A new fd from accept: decide now, so the connection is known from its first byte (not mid-stream). */
static __always_inline int accepted(long ret)
{
	const volatile struct mb_config *cfg = get_config();
	struct mb_fd_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__s32)ret };
	struct sock *sk;

	if (!cfg || ret < 0)
		return 0;
	forget(cfg, &key);
	if (!pid_wanted(cfg, key.tgid))
		return 0;
	sk = tcp_sock_of_fd(key.fd);
	if (sk)
		track(cfg, &key, sk, false);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

/* A connect that succeeded or is in progress: the remote port is set, decide now (not mid-stream). */
SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	const volatile struct mb_config *cfg = get_config();
	struct mb_fd_key key = { .tgid = bpf_get_current_pid_tgid() >> 32 };
	struct pt_regs *regs;
	struct sock *sk;

	if (!cfg || cfg->side != MB_SIDE_CLIENT || (ctx->ret != 0 && ctx->ret != -EINPROGRESS) ||
	    !pid_wanted(cfg, key.tgid))
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (!regs)
		return 0;
	key.fd = (__s32)regs->di;
	forget(cfg, &key);
	sk = tcp_sock_of_fd(key.fd);
	if (sk)
		track(cfg, &key, sk, false);
	return 0;
}

/* A syscall that hands out an fd number: whatever that number named before (closed without close(2), e.g.
 * by exec or dup2 over it) is gone. */
static __always_inline int fd_reassigned(long ret)
{
	const volatile struct mb_config *cfg = get_config();
	struct mb_fd_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__s32)ret };

	if (cfg && ret >= 0)
		forget(cfg, &key);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_socket")
int exit_socket(struct trace_event_raw_sys_exit *ctx)
{
	return fd_reassigned(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_dup")
int exit_dup(struct trace_event_raw_sys_exit *ctx)
{
	return fd_reassigned(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_dup2")
int exit_dup2(struct trace_event_raw_sys_exit *ctx)
{
	return fd_reassigned(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_dup3")
int exit_dup3(struct trace_event_raw_sys_exit *ctx)
{
	return fd_reassigned(ctx->ret);
}

static long close_if_owned(struct bpf_map *map, const void *map_key, void *value, void *ctx)
{
	const struct mb_fd_key *key = map_key;
	struct mb_connection *connection = value;
	const volatile struct mb_config *cfg = get_config();

	if (!cfg || key->tgid != *(__u32 *)ctx)
		return 0;
	emit_close(cfg, connection->conn);
	bpf_map_delete_elem(&connections, key);
	return 0;
}

/* A process that exits closes its fds without close(2): when its last thread goes, close its connections. */
SEC("tracepoint/sched/sched_process_exit")
int process_exit(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (!bpf_map_lookup_elem(&owners, &tgid))
		return 0;
	/* do_exit() has already counted this thread out: zero means the whole thread group is gone. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	bpf_for_each_map_elem(&connections, close_if_owned, &tgid, 0);
	bpf_map_delete_elem(&owners, &tgid);
	return 0;
}
