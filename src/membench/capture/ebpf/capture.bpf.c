// SPDX-License-Identifier: GPL-2.0
/*
 * membench socket capture: copies the bytes that move through watched TCP sockets into a ring buffer.
 *
 * Only tracepoints are used (no kprobes/fentry), and only socket ones:
 *  - sock_recv_length and sock_send_length fire inside every socket receive and send, once the bytes have moved,
 *    with the socket and the count. The bytes are copied from the user buffer of the syscall in progress, whose
 *    number and arguments are in the user registers saved at its entry: read/recvfrom/write/sendto name the
 *    buffer, readv/writev an iovec array, recvmsg/sendmsg a msghdr. A move by anything else (sendfile, splice,
 *    io_uring, a kernel thread, a 32-bit syscall) is a hole of the right length.
 *  - inet_sock_set_state marks a socket on a watched port created while capturing (SYN_SENT in a client,
 *    SYN_RECV in a server), whose bytes are then seen from the first one; any other is joined mid-stream.
 *  - tcp_destroy_sock ends a watched connection.
 * A syscall tracepoint would make every syscall of every process take the kernel's slow exit path for as long
 * as the capture runs: about 4% of memcached's throughput on this path alone, before any byte is copied.
 *
 * What is known of a socket lives in BPF socket storage, which the kernel frees with the socket: one lookup
 * per send or receive, and no fd numbers to follow across close, dup or exec. The first bytes a socket moves
 * decide whether it is watched (TCP, watched port, wanted pid); the verdict stays with it. The count the
 * tracepoint gives says how many bytes moved: that many (up to the copy limit, or in events of it up to
 * plain_pieces of them) are copied and the per-direction stream offset advances by the full count, delivered
 * or not.
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

/* What copy_iovec needs from copy_vectored, passed on its stack instead of looked up again at every iovec. */
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

/* How the user buffer of the syscall that moved bytes in `direction` is to be read, or MB_BUFFER_NONE. */
static __always_inline __u8 buffer_kind(struct task_struct *task, struct pt_regs *regs, __u8 direction, int flags)
{
	__u64 call = regs->orig_ax;
	bool sends = call == SYS_WRITE || call == SYS_SENDTO || call == SYS_WRITEV || call == SYS_SENDMSG;
	__u8 kind;

	if ((task->thread_info.status & TS_COMPAT) || (flags & MSG_TRUNC))
		return MB_BUFFER_NONE; /* other syscall numbers; bytes consumed without being copied to the user */

	switch (call) {
	case SYS_READ:
	case SYS_RECVFROM:
	case SYS_WRITE:
	case SYS_SENDTO:
		kind = MB_BUFFER_PLAIN;
		break;
	case SYS_READV:
	case SYS_WRITEV:
		kind = MB_BUFFER_IOVEC;
		break;
	case SYS_RECVMSG:
	case SYS_SENDMSG:
		kind = MB_BUFFER_MSGHDR;
		break;
	default:
		return MB_BUFFER_NONE;
	}
	return sends == (direction == MB_DIR_EGRESS) ? kind : MB_BUFFER_NONE;
}

/* Copy the `moved` bytes of a vectored syscall: `buffer` is its iovec array or msghdr. */
static __always_inline void copy_vectored(const volatile struct mb_config *cfg, struct scratch_event *event,
					  __u8 kind, __u64 buffer, __u64 count, __u64 offset, __u64 moved, __u32 limit)
{
	struct iovec_walk *walk = &event->walk;
	struct iovec_copy copy = { .event = event, .cfg = cfg };

	walk->iovecs = buffer;
	walk->count = count;
	walk->remaining = moved;
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
	bpf_loop(walk->count, copy_iovec, &copy, 0);
	/* Bytes the walk could not attribute (unreadable iovec array) end the last event as its missing tail. */
	output(cfg, event, walk->offset, walk->length + walk->remaining, walk->copied);
}

/* `moved` bytes went through sk in `direction`: copy them if sk is a watched connection. */
static __always_inline int data_moved(struct sock *sk, int moved, int flags, __u8 direction)
{
	const volatile struct mb_config *cfg = get_config();
	struct task_struct *task;
	struct mb_sock_state *state;
	struct scratch_event *event;
	struct pt_regs *regs;
	__u64 offset;
	__u32 copied;
	__u32 limit;
	__u32 cpu;
	__u8 kind;

	/* A peek leaves the bytes in the socket: they are captured when actually read. An error queue holds
	 * notifications, not stream bytes. */
	if (moved <= 0 || !cfg || (flags & (MSG_PEEK | MSG_ERRQUEUE)) || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	state = watched_state(cfg, sk);
	if (!state)
		return 0;
	offset = __sync_fetch_and_add(&state->offset[direction & 1], moved);

	cpu = bpf_get_smp_processor_id();
	event = bpf_map_lookup_elem(&scratch, &cpu);
	if (!event)
		return 0;
	fill_header(&event->header, cfg, state->conn, MB_EVENT_DATA);
	event->header.direction = direction;
	task = bpf_get_current_task_btf();
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	kind = buffer_kind(task, regs, direction, flags);
	limit = cfg->copy_limit < MB_COPY_MAX ? cfg->copy_limit : MB_COPY_MAX;
	if (kind == MB_BUFFER_NONE) {
		output(cfg, event, offset, moved, 0);
	} else if (kind == MB_BUFFER_PLAIN && cfg->plain_pieces > 1 && (__u32)moved > limit) {
		struct plain_copy plain = { .event = event, .cfg = cfg, .buffer = regs->si, .offset = offset,
					    .moved = moved, .limit = limit, .pieces = cfg->plain_pieces };

		bpf_loop(plain.pieces, copy_piece, &plain, 0);
	} else if (kind == MB_BUFFER_PLAIN) {
		copied = (__u32)moved < limit ? (__u32)moved : limit;
		if (copied > MB_COPY_MAX)
			copied = MB_COPY_MAX;
		if (bpf_probe_read_user(event->data, copied, (void *)regs->si))
			copied = 0;
		output(cfg, event, offset, moved, copied);
	} else {
		copy_vectored(cfg, event, kind, regs->si, regs->dx, offset, moved, limit);
	}
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	return data_moved(sk, ret, flags, MB_DIR_INGRESS);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	return data_moved(sk, ret, flags, MB_DIR_EGRESS);
}

/* A socket on a watched port created while capturing: its storage, made now, says its bytes are seen from the
 * first one. Its verdict waits for those bytes, which come from the process that owns it. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	const volatile struct mb_config *cfg = get_config();
	int created_in = cfg && cfg->side == MB_SIDE_CLIENT ? TCP_SYN_SENT : TCP_SYN_RECV;

	if (cfg && newstate == created_in && on_watched_port(cfg, sk))
		bpf_sk_storage_get(&sock_states, (void *)sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	return 0;
}

/* A TCP socket is freed: its connection, if watched, is over. Every byte it moved was read or written before. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcp_destroy_sock, struct sock *sk)
{
	const volatile struct mb_config *cfg = get_config();
	struct mb_sock_state *state;

	if (!cfg)
		return 0;
	state = bpf_sk_storage_get(&sock_states, sk, NULL, 0);
	if (state && state->verdict == MB_VERDICT_WATCHED) {
		state->verdict = MB_VERDICT_IGNORED;
		emit_close(cfg, state->conn);
	}
	return 0;
}
