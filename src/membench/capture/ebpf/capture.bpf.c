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

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define S_IFMT 0170000
#define S_IFSOCK 0140000
#define MSG_PEEK 2
#define EINPROGRESS 115

/* How the buffer argument of a data syscall is to be read. */
enum mb_buffer_kind {
	MB_BUFFER_PLAIN = 0, /* pointer to the bytes */
	MB_BUFFER_IOVEC = 1, /* pointer to an iovec array */
	MB_BUFFER_MSGHDR = 2, /* pointer to a user msghdr */
};

/* The user-space ABI structs read with bpf_probe_read_user (x86-64 / arm64 LP64 layout). */
struct user_iovec {
	__u64 iov_base;
	__u64 iov_len;
};

struct user_msghdr {
	__u64 msg_name;
	__s32 msg_namelen;
	__s32 pad;
	__u64 msg_iov;
	__u64 msg_iovlen;
};

/* iovecs read from user memory with one helper call, instead of one call each. */
#define MB_IOV_BATCH 8

/* State of the walk over the iovecs of one vectored syscall. The header of the event being built lives in
 * the CPU's scratch slot; an event is flushed before an iovec that would not fit in it, so truncation only
 * ever cuts a single iovec larger than the copy limit (a big value), never the small ones after it (the
 * next items of a multi-get reply). It lives in the scratch slot, not on the stack: the verifier then sees
 * the same unknown values at every iteration of bpf_loop instead of exploring each one. */
struct iovec_walk {
	struct user_iovec batch[MB_IOV_BATCH]; /* iovecs [index & ~(MB_IOV_BATCH - 1), +MB_IOV_BATCH) */
	__u64 iovecs;
	__u64 count;        /* iovecs in the array */
	__u64 remaining;    /* bytes moved by the syscall not yet attributed to an iovec */
	__u64 offset;       /* stream offset of the event being built */
	__u64 length;       /* bytes moved covered by the event being built */
	__u32 copied;       /* bytes copied into the event being built */
	__u32 limit;
};
/* One event being built: the header plus twice the copy limit, so that an offset below MB_COPY_MAX plus a
 * length of at most MB_COPY_MAX is provably inside the buffer for the verifier. */
struct scratch_event {
	struct iovec_walk walk;
	struct mb_event header;
	union {
		struct mb_open_info open;
		__u8 data[2 * MB_COPY_MAX];
	};
};


struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 32 * 1024 * 1024);
} events SEC(".maps");

const volatile struct mb_config mb_config SEC(".rodata.config") = {};
struct mb_switch mb_switch SEC(".data.switch") = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MB_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} watched_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MB_MAX_PIDS);
	__type(key, __u32);
	__type(value, __u8);
} target_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MB_MAX_CONNECTIONS);
	__type(key, struct mb_fd_key);
	__type(value, struct mb_connection);
} connections SEC(".maps");

/* Processes that own entries in `connections`, so that their exit is worth a sweep. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MB_MAX_CONNECTIONS);
	__type(key, __u32);
	__type(value, __u8);
} owners SEC(".maps");

/* Negative verdicts: fds that are not watched TCP sockets. LRU because nothing forces them to be closed. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MB_MAX_CONNECTIONS);
	__type(key, struct mb_fd_key);
	__type(value, __u8);
} ignored_fds SEC(".maps");

/* One slot per CPU, indexed by CPU number (user space sizes it to the possible CPUs): a per-CPU array would be
 * simpler, but its values are capped at 32 KiB. Programs on syscall tracepoints do not migrate or nest on a
 * CPU, so a slot is never shared by two events being built. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch_event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MB_COUNTER_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} next_conn SEC(".maps");

/* The configuration, or NULL while the capture is not yet enabled: every program then does nothing. */
static __always_inline const volatile struct mb_config *get_config(void)
{
	return mb_switch.enabled ? &mb_config : NULL;
}

static __always_inline void count(__u32 counter, __u64 amount)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &counter);

	if (value)
		*value += amount;
}

static __always_inline bool pid_wanted(const volatile struct mb_config *cfg, __u32 tgid)
{
	return !cfg->filter_pids || bpf_map_lookup_elem(&target_pids, &tgid);
}

/* The TCP sock behind fd in the current task, or NULL. */
static __always_inline struct sock *tcp_sock_of_fd(__s32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;
	struct socket *socket;
	struct sock *sk;
	__u16 family;

	if (!fdt || fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	socket = BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(socket, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	return sk;
}

/* bpf_ringbuf_output that wakes the consumer only when this record makes the backlog cross a multiple of
 * wakeup_bytes (the consumer also drains on a timer). A wakeup is an irq_work self-IPI, a VM exit under KVM:
 * waking on every record past the threshold until the consumer ran cost more than the rest of the program. */
static __always_inline long ring_output(const volatile struct mb_config *cfg, void *data, __u64 size)
{
	__u64 waiting = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 step = cfg->wakeup_bytes;
	__u64 wakeup = waiting / step != (waiting + size) / step ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;

	return bpf_ringbuf_output(&events, data, size, wakeup);
}

static __always_inline void fill_header(struct mb_event *header, const volatile struct mb_config *cfg, __u64 conn,
					__u8 type)
{
	header->timestamp_ns = bpf_ktime_get_ns() + cfg->realtime_offset_ns;
	header->conn = conn;
	header->offset = 0;
	header->length = 0;
	header->copied = 0;
	header->type = type;
	header->direction = 0;
	header->flags = 0;
	header->reserved = 0;
}

static __always_inline void emit_close(const volatile struct mb_config *cfg, __u64 conn)
{
	struct mb_event header;

	fill_header(&header, cfg, conn, MB_EVENT_CLOSE);
	if (ring_output(cfg, &header, sizeof(header)))
		count(MB_COUNTER_DROPPED_EVENTS, 1);
}

/* Start tracking fd if its socket is on a watched port; otherwise remember that it is not. */
static __always_inline struct mb_connection *track(const volatile struct mb_config *cfg, const struct mb_fd_key *key,
						   struct sock *sk, bool mid_stream)
{
	struct mb_connection fresh = {};
	__u16 local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u16 remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__u16 watched = cfg->side == MB_SIDE_CLIENT ? remote_port : local_port;
	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch_event *event;
	__u8 ignored = 1;
	__u32 zero = 0;
	__u64 *next;

	if (!bpf_map_lookup_elem(&watched_ports, &watched)) {
		bpf_map_update_elem(&ignored_fds, key, &ignored, BPF_ANY);
		return NULL;
	}
	next = bpf_map_lookup_elem(&next_conn, &zero);
	if (!next)
		return NULL;
	fresh.conn = __sync_fetch_and_add(next, 1) + 1;
	if (bpf_map_update_elem(&connections, key, &fresh, BPF_NOEXIST)) {
		/* Either another thread of this process got there first (use its entry) or the table is full. */
		struct mb_connection *existing = bpf_map_lookup_elem(&connections, key);

		if (!existing)
			count(MB_COUNTER_TABLE_FULL, 1);
		return existing;
	}
	bpf_map_update_elem(&owners, &key->tgid, &ignored, BPF_ANY);

	event = bpf_map_lookup_elem(&scratch, &cpu);
	if (event) {
		struct mb_open_info *info = &event->open;

		fill_header(&event->header, cfg, fresh.conn, MB_EVENT_OPEN);
		event->header.flags = mid_stream ? MB_FLAG_MID_STREAM : 0;
		__builtin_memset(info, 0, sizeof(*info));
		info->family = BPF_CORE_READ(sk, __sk_common.skc_family);
		info->local_port = local_port;
		info->remote_port = remote_port;
		if (info->family == AF_INET) {
			BPF_CORE_READ_INTO(&info->local_addr, sk, __sk_common.skc_rcv_saddr);
			BPF_CORE_READ_INTO(&info->remote_addr, sk, __sk_common.skc_daddr);
		} else {
			BPF_CORE_READ_INTO(&info->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
			BPF_CORE_READ_INTO(&info->remote_addr, sk, __sk_common.skc_v6_daddr);
		}
		if (ring_output(cfg, &event->header, sizeof(event->header) + sizeof(*info)))
			count(MB_COUNTER_DROPPED_EVENTS, 1);
	}
	return bpf_map_lookup_elem(&connections, key);
}

/* Forget whatever was known about (tgid, fd): the fd number now names something else. */
static __always_inline void forget(const volatile struct mb_config *cfg, const struct mb_fd_key *key)
{
	struct mb_connection *known = bpf_map_lookup_elem(&connections, key);

	if (known) {
		emit_close(cfg, known->conn);
		bpf_map_delete_elem(&connections, key);
	}
	bpf_map_delete_elem(&ignored_fds, key);
}

/* The connection behind (tgid, fd) if it is watched, deciding lazily for fds opened before the capture. */
static __always_inline struct mb_connection *watched_connection(const volatile struct mb_config *cfg,
								const struct mb_fd_key *key)
{
	struct mb_connection *known = bpf_map_lookup_elem(&connections, key);
	struct sock *sk;

	if (known)
		return known;
	if (bpf_map_lookup_elem(&ignored_fds, key))
		return NULL;
	sk = tcp_sock_of_fd(key->fd);
	if (!sk) {
		__u8 ignored = 1;

		bpf_map_update_elem(&ignored_fds, key, &ignored, BPF_ANY);
		return NULL;
	}
	return track(cfg, key, sk, true);
}

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
