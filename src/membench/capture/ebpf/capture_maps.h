/* SPDX-License-Identifier: GPL-2.0 */
/* capture.bpf.c's maps, its configuration and the user-space structs it reads: included by it alone. */
#ifndef MEMBENCH_CAPTURE_MAPS_H
#define MEMBENCH_CAPTURE_MAPS_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define MSG_PEEK 0x2
#define MSG_TRUNC 0x20
#define MSG_ERRQUEUE 0x2000
/* include/net/tcp_states.h: the states a socket is created in, by connect() and by a listener's handshake. */
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
/* include/uapi/linux/bpf.h */
#define BPF_F_NO_PREALLOC 1
#define BPF_SK_STORAGE_GET_F_CREATE 1

/* thread_info.status bit of a task inside a 32-bit (ia32) syscall, whose numbers are not those below. */
#define TS_COMPAT 0x0002

/* x86-64 numbers (arch/x86/entry/syscalls/syscall_64.tbl) of the syscalls whose user buffers are copied. */
enum x86_64_syscall {
	SYS_READ = 0,
	SYS_WRITE = 1,
	SYS_READV = 19,
	SYS_WRITEV = 20,
	SYS_SENDTO = 44,
	SYS_RECVFROM = 45,
	SYS_SENDMSG = 46,
	SYS_RECVMSG = 47,
};

/* How the buffer argument of the syscall that moved the bytes is to be read. */
enum mb_buffer_kind {
	MB_BUFFER_PLAIN = 0,  /* pointer to the bytes */
	MB_BUFFER_IOVEC = 1,  /* pointer to an iovec array */
	MB_BUFFER_MSGHDR = 2, /* pointer to a user msghdr */
	MB_BUFFER_NONE = 3,   /* no user buffer to read (sendfile, splice, io_uring, a kernel thread): a hole */
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
/* Where a program that declares its iovec array right after its msghdr has it (memcached's transmit() does):
 * the next 16-byte boundary after the 56-byte msghdr. */
#define MB_IOV_AFTER_MSGHDR 64

/* State of the walk over the iovecs of one vectored syscall. The header of the event being built lives in
 * the CPU's scratch slot; an event is flushed before an iovec that would not fit in it, so truncation only
 * ever cuts a single iovec larger than the copy limit (a big value), never the small ones after it (the
 * next items of a multi-get reply). It lives in the scratch slot, not on the stack: the verifier then sees
 * the same unknown values at every iteration of bpf_loop instead of exploring each one. */
struct iovec_walk {
	/* sendmsg/recvmsg's header, read in one copy with the MB_IOV_AFTER_MSGHDR - sizeof(msg) + sizeof(batch)
	 * bytes after it: where the iovec array is there, its first batch is already read. */
	struct user_msghdr msg;
	__u8 msg_gap[MB_IOV_AFTER_MSGHDR - sizeof(struct user_msghdr)];
	struct user_iovec batch[MB_IOV_BATCH]; /* iovecs [index & ~(MB_IOV_BATCH - 1), +MB_IOV_BATCH) */
	__u64 iovecs;
	__u64 first_batch_read; /* batch already holds iovecs [0, MB_IOV_BATCH) */
	__u64 count;        /* iovecs in the array */
	__u64 remaining;    /* bytes moved by the syscall not yet attributed to an iovec */
	__u64 offset;       /* stream offset of the event being built */
	__u64 length;       /* bytes moved covered by the event being built */
	__u32 copied;       /* bytes copied into the event being built */
	__u32 limit;
};
_Static_assert(__builtin_offsetof(struct iovec_walk, batch) - __builtin_offsetof(struct iovec_walk, msg) ==
	       MB_IOV_AFTER_MSGHDR, "batch must be read with the msghdr");
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

/* Per-socket state, kept by the kernel beside each socket and freed with it. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mb_sock_state);
} sock_states SEC(".maps");

/* One slot per CPU, indexed by CPU number (user space sizes it to the possible CPUs): a per-CPU array would be
 * simpler, but its values are capped at 32 KiB. Only the data programs use it, and they run with preemption off
 * and never in interrupts (sockets send and receive from process context), so a slot is never shared by two
 * events being built. */
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

/* Bytes this CPU put in the ring since it last woke the consumer (ring_output). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unannounced_bytes SEC(".maps");

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

#endif
