// SPDX-License-Identifier: GPL-2.0
/*
 * membench socket capture: copies the bytes that move through watched TCP sockets into a ring buffer.
 *
 * Only tracepoints are used (no kprobes/fentry): the raw sys_exit tracepoint, whose program sees every
 * syscall's saved user registers and return value, plus sched_process_exit. Data syscalls
 * are seen at exit only: a call that moved nothing (EAGAIN, the second read of every memcached request) costs
 * one comparison, and the arguments of the others are still in the registers saved at syscall entry, so no
 * sys_enter program runs for them and nothing is stashed per thread. The fd is checked once
 * (task->files->fdt->fd[fd] -> file -> socket -> sock: TCP, watched port, wanted pid) and the verdict is
 * cached per (tgid, fd), so the common case is one hash lookup. The return value says how many bytes moved:
 * that many bytes (up to the copy limit, or in events of it up to plain_pieces of them) are copied from user
 * memory and the per-direction stream offset advances by the full count, delivered or not.
 *
 * The registers and syscall numbers are those of x86-64 (the object is built for it): di, si, dx, r10 carry
 * arguments 1 to 4, orig_ax the syscall number.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
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

/* A read or write of one user buffer, copied as events of at most `limit` bytes each. */
struct plain_copy {
	struct scratch_event *event;
	const volatile struct mb_config *cfg;
	__u64 buffer;
	__u64 offset;
	__u64 moved;
	__u32 limit;
	__u32 pieces;
};

static long copy_piece(__u32 index, void *ctx)
{
	struct plain_copy *plain = ctx;
	__u64 start = (__u64)index * plain->limit;
	__u64 length;
	__u32 copied;

	if (start >= plain->moved)
		return 1;
	length = plain->moved - start;
	copied = length < plain->limit ? length : plain->limit;
	if (index + 1 < plain->pieces)
		length = copied;
	if (copied > MB_COPY_MAX)
		copied = MB_COPY_MAX;
	if (bpf_probe_read_user(plain->event->data, copied, (void *)(plain->buffer + start)))
		copied = 0;
	output(plain->cfg, plain->event, plain->offset + start, length, copied);
	return 0;
}

/* What copy_iovec needs from data_exit, passed on its stack instead of looked up again at every iovec. */
struct iovec_copy {
	struct scratch_event *event;
	const volatile struct mb_config *cfg;
};

static long copy_iovec(__u32 index, void *ctx)
{
	struct iovec_copy *copy = ctx;
	struct scratch_event *event = copy->event;
	const volatile struct mb_config *cfg = copy->cfg;
	struct iovec_walk *walk;
	struct user_iovec iov;
	__u32 position;
	__u64 length;
	__u64 room;

	walk = &event->walk;
	if (walk->remaining == 0)
		return 1;
	if ((index & (MB_IOV_BATCH - 1)) == 0 && !(index == 0 && walk->first_batch_read)) {
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
static __always_inline int data_exit(struct pt_regs *regs, long ret, __u8 direction, __u8 kind)
{
	const volatile struct mb_config *cfg;
	struct mb_fd_key key;
	struct mb_connection *connection;
	struct scratch_event *event;
	struct iovec_copy copy;
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
	/* A peek leaves the bytes in the socket: they are captured when actually read. */
	if ((regs->orig_ax == SYS_RECVFROM && (regs->r10 & MSG_PEEK)) ||
	    (regs->orig_ax == SYS_RECVMSG && (regs->dx & MSG_PEEK)))
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
	if (kind == MB_BUFFER_PLAIN && cfg->plain_pieces > 1 && (__u64)ret > limit) {
		struct plain_copy plain = { .event = event, .cfg = cfg, .buffer = buffer, .offset = offset,
					    .moved = ret, .limit = limit, .pieces = cfg->plain_pieces };

		bpf_loop(plain.pieces, copy_piece, &plain, 0);
		return 0;
	}
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
	walk->first_batch_read = 0;
	if (kind == MB_BUFFER_MSGHDR) {
		/* One copy instead of two where the iovecs follow the msghdr. The longer read fails where the msghdr
		 * ends its mapping: then the msghdr alone, zeroed if unreadable too (the walk has no iovecs, and the
		 * bytes moved end up as a missing tail). */
		if (bpf_probe_read_user(&walk->msg, MB_IOV_AFTER_MSGHDR + sizeof(walk->batch), (void *)buffer))
			bpf_probe_read_user(&walk->msg, sizeof(walk->msg), (void *)buffer);
		else
			walk->first_batch_read = walk->msg.msg_iov == buffer + MB_IOV_AFTER_MSGHDR;
		walk->iovecs = walk->msg.msg_iov;
		walk->count = walk->msg.msg_iovlen;
	}
	if (walk->count > MB_MAX_IOV)
		walk->count = MB_MAX_IOV;
	copy.event = event;
	copy.cfg = cfg;
	bpf_loop(walk->count, copy_iovec, &copy, 0);
	/* Bytes the walk could not attribute (unreadable iovec array) end the last event as its missing tail. */
	output(cfg, event, walk->offset, walk->length + walk->remaining, walk->copied);
	return 0;
}

/* A close that returned. Its fd number was free from inside the call on, so another thread may have reused it
 * already (an accept, an open). Where an accept's exit already made it the fd of a new connection, that one
 * stays; anything else known of the fd is forgotten. Seen at entry instead, close cost a syscall tracepoint,
 * whose perf handler then ran at the entry of every syscall of every process (about 20 ns each). */
static __always_inline int closed(struct pt_regs *regs)
{
	const volatile struct mb_config *cfg = get_config();
	struct mb_fd_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__s32)regs->di };
	struct mb_connection *known;

	if (!cfg)
		return 0;
	known = bpf_map_lookup_elem(&connections, &key);
	if (known && known->sock == (__u64)tcp_sock_of_fd(key.fd))
		return 0;
	forget_known(cfg, &key, known);
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

/* A connect that succeeded or is in progress: the remote port is set, decide now (not mid-stream). */
static __always_inline int connected(struct pt_regs *regs, long ret)
{
	const volatile struct mb_config *cfg = get_config();
	struct mb_fd_key key = { .tgid = bpf_get_current_pid_tgid() >> 32 };
	struct sock *sk;

	if (!cfg || cfg->side != MB_SIDE_CLIENT || (ret != 0 && ret != -EINPROGRESS) || !pid_wanted(cfg, key.tgid))
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

/* Every syscall's exit, one program. The kernel calls a raw tracepoint's program directly; a syscall
 * tracepoint per syscall went through perf's event machinery first (about 40 ns more per call, most of them
 * calls of processes that are not watched). Syscalls that do not concern the capture return at the switch.
 * 32-bit syscalls use other numbers; the syscall tracepoints ignored them, and so does this. */
SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	if (bpf_get_current_task_btf()->thread_info.status & TS_COMPAT)
		return 0;
	switch (regs->orig_ax) {
	case SYS_READ:
	case SYS_RECVFROM:
		return data_exit(regs, ret, MB_DIR_INGRESS, MB_BUFFER_PLAIN);
	case SYS_READV:
		return data_exit(regs, ret, MB_DIR_INGRESS, MB_BUFFER_IOVEC);
	case SYS_RECVMSG:
		return data_exit(regs, ret, MB_DIR_INGRESS, MB_BUFFER_MSGHDR);
	case SYS_WRITE:
	case SYS_SENDTO:
		return data_exit(regs, ret, MB_DIR_EGRESS, MB_BUFFER_PLAIN);
	case SYS_WRITEV:
		return data_exit(regs, ret, MB_DIR_EGRESS, MB_BUFFER_IOVEC);
	case SYS_SENDMSG:
		return data_exit(regs, ret, MB_DIR_EGRESS, MB_BUFFER_MSGHDR);
	case SYS_CLOSE:
		return closed(regs);
	case SYS_ACCEPT:
	case SYS_ACCEPT4:
		return accepted(ret);
	case SYS_CONNECT:
		return connected(regs, ret);
	case SYS_SOCKET:
	case SYS_DUP:
	case SYS_DUP2:
	case SYS_DUP3:
		return fd_reassigned(ret);
	}
	return 0;
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

	verdicts_changed(); /* its tgid may be reused, with other fds */
	if (!bpf_map_lookup_elem(&owners, &tgid))
		return 0;
	/* do_exit() has already counted this thread out: zero means the whole thread group is gone. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	bpf_for_each_map_elem(&connections, close_if_owned, &tgid, 0);
	bpf_map_delete_elem(&owners, &tgid);
	return 0;
}
