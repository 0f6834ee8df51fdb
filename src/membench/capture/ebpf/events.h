/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kernel/user contract of membench's eBPF capture: the one definition of every event and map layout.
 * capture.bpf.c includes it; events.py mirrors it with struct formats, and a test compares the two through
 * the BTF of the compiled object. Change both sides together.
 */
#ifndef MEMBENCH_EVENTS_H
#define MEMBENCH_EVENTS_H

/* Largest payload one event can carry (a power of two: the BPF side masks with MB_COPY_MAX - 1). The
 * effective limit is mb_config.copy_limit, set by user space. */
#define MB_COPY_MAX 65536
/* Most iovecs walked per readv/writev/recvmsg/sendmsg (the kernel's UIO_MAXIOV). */
#define MB_MAX_IOV 1024
#define MB_MAX_PORTS 64
#define MB_MAX_PIDS 1024

enum mb_event_type {
	MB_EVENT_DATA = 1,  /* header followed by `copied` payload bytes */
	MB_EVENT_OPEN = 2,  /* header followed by struct mb_open_info */
	MB_EVENT_CLOSE = 3, /* header only */
};

/* Socket direction; user space maps it to request/response according to the watched side. */
enum mb_direction {
	MB_DIR_INGRESS = 0, /* read, readv, recvfrom, recvmsg */
	MB_DIR_EGRESS = 1,  /* write, writev, sendto, sendmsg */
};

enum mb_flags {
	MB_FLAG_TRUNCATED = 1,  /* copied < length: the tail was not copied */
	MB_FLAG_MID_STREAM = 2, /* open event of a connection first seen by traffic, not by accept/connect */
};

/* Fixed header of every ring buffer record. */
struct mb_event {
	__u64 timestamp_ns; /* CLOCK_REALTIME, from the monotonic clock plus mb_config.realtime_offset_ns */
	__u64 conn;         /* connection id: a generation counter, unique for the whole capture */
	__u64 offset;       /* stream offset of the first byte, per direction, counting every byte moved */
	__u32 length;       /* bytes the syscall moved */
	__u32 copied;       /* payload bytes that follow this header */
	__u8 type;          /* enum mb_event_type */
	__u8 direction;     /* enum mb_direction */
	__u16 flags;        /* enum mb_flags */
	__u32 reserved;     /* keeps the payload 8-byte aligned */
};

/* Payload of MB_EVENT_OPEN. IPv4 addresses are stored in the first 4 bytes. */
struct mb_open_info {
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;  /* host byte order */
	__u16 remote_port; /* host byte order */
	__u16 family;      /* AF_INET or AF_INET6 */
	__u16 reserved;
};

enum mb_side {
	MB_SIDE_SERVER = 0, /* watch sockets whose local port is watched (inside memcached) */
	MB_SIDE_CLIENT = 1, /* watch sockets whose remote port is watched (inside the clients) */
};

/* The configuration: a read-only global (section .rodata.config) that user space fills before loading, so
 * the verifier sees its values as constants and prunes what they rule out (libbpf-bootstrap's pattern). */
struct mb_config {
	__s64 realtime_offset_ns;
	__u32 copy_limit;   /* <= MB_COPY_MAX */
	/* Wake the consumer only once a CPU has written this many bytes since its last wakeup (it also polls on
	 * a timer): one wakeup per batch instead of one per event. */
	__u32 wakeup_bytes;
	__u8 side;          /* enum mb_side */
	__u8 filter_pids;   /* 1: only tgids present in `target_pids` */
	/* Events of at most copy_limit bytes a read/write/recvfrom/sendto may be copied in; the last one carries the
	 * rest of the call as its missing tail. Few in a server, whose reads past its buffer are mostly values read
	 * into place, but also long multi-get lines; many in a client, whose one send may be a whole pipeline. */
	__u16 plain_pieces;
	__u8 reserved[4];
};

/* A writable global (section .data.switch), set by user space once every program is attached: a capture that
 * started with some tracepoints attached and others not would see a busy connection's requests without their
 * replies. */
struct mb_switch {
	__u8 enabled;
	__u8 reserved[7];
};

/* What the capture knows of one TCP socket: BPF socket storage (`sock_states`), which the kernel frees with the
 * socket, so that no entry outlives the socket whose address may be reused. */
enum mb_verdict {
	MB_VERDICT_NEW = 0,     /* created while capturing (seen from its handshake), not yet decided */
	MB_VERDICT_WATCHED = 1, /* a connection on a watched port: `conn` and `offset` are live */
	MB_VERDICT_IGNORED = 2, /* not captured: another port, another process, not IPv4/IPv6 */
};

struct mb_sock_state {
	__u64 conn;      /* connection number, once watched */
	__u64 offset[2]; /* next stream offset, indexed by enum mb_direction */
	__u32 verdict;   /* enum mb_verdict; 32 bits, the narrowest a BPF compare-and-swap takes */
	__u32 reserved;
};

/* Indexes of the per-CPU `counters` array map. */
enum mb_counter {
	MB_COUNTER_DROPPED_EVENTS = 0, /* ring buffer full: event lost, stream offset still advanced */
	MB_COUNTER_DROPPED_BYTES = 1,  /* payload bytes (length) of the dropped data events */
	MB_COUNTER_TABLE_FULL = 2,     /* watched socket not tracked: no memory for its socket storage */
	MB_COUNTER_COUNT = 3,
};

#endif
