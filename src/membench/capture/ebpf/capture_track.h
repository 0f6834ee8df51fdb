/* SPDX-License-Identifier: GPL-2.0 */
/* capture.bpf.c's connection tracking: which sockets are watched TCP connections, their connection numbers, and
 * the open and close events. Included by capture.bpf.c alone, after capture_maps.h. */
#ifndef MEMBENCH_CAPTURE_TRACK_H
#define MEMBENCH_CAPTURE_TRACK_H

/* bpf_ringbuf_output that wakes the consumer only once this CPU has written wakeup_bytes since its last wakeup
 * (the consumer also drains on a timer). A wakeup is an irq_work self-IPI, a VM exit under KVM: waking on every
 * record cost more than the rest of the program. The tally is per CPU: asking the ring for its backlog
 * (bpf_ringbuf_query) read the consumer's position, a cache line the consumer writes on every drain. */
static __always_inline long ring_output(const volatile struct mb_config *cfg, void *data, __u64 size)
{
	__u32 zero = 0;
	__u64 *unannounced = bpf_map_lookup_elem(&unannounced_bytes, &zero);
	__u64 wakeup = BPF_RB_NO_WAKEUP;

	if (unannounced) {
		*unannounced += size;
		if (*unannounced >= cfg->wakeup_bytes) {
			*unannounced = 0;
			wakeup = BPF_RB_FORCE_WAKEUP;
		}
	}
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

/* Whether sk is a TCP connection on a watched port: its local port in a server, its remote port in a client. */
static __always_inline bool on_watched_port(const volatile struct mb_config *cfg, const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	__u16 port = cfg->side == MB_SIDE_CLIENT ? bpf_ntohs(sk->__sk_common.skc_dport) : sk->__sk_common.skc_num;

	if (sk->sk_protocol != IPPROTO_TCP || (family != AF_INET && family != AF_INET6))
		return false;
	return bpf_map_lookup_elem(&watched_ports, &port) != NULL;
}

static __always_inline void emit_open(const volatile struct mb_config *cfg, const struct sock *sk, __u64 conn,
				      bool mid_stream)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch_event *event = bpf_map_lookup_elem(&scratch, &cpu);
	struct mb_open_info *info;

	if (!event)
		return;
	info = &event->open;
	fill_header(&event->header, cfg, conn, MB_EVENT_OPEN);
	event->header.flags = mid_stream ? MB_FLAG_MID_STREAM : 0;
	__builtin_memset(info, 0, sizeof(*info));
	info->family = sk->__sk_common.skc_family;
	info->local_port = sk->__sk_common.skc_num;
	info->remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	if (info->family == AF_INET) {
		*(__be32 *)info->local_addr = sk->__sk_common.skc_rcv_saddr;
		*(__be32 *)info->remote_addr = sk->__sk_common.skc_daddr;
	} else {
		BPF_CORE_READ_INTO(&info->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&info->remote_addr, sk, __sk_common.skc_v6_daddr);
	}
	if (ring_output(cfg, &event->header, sizeof(event->header) + sizeof(*info)))
		count(MB_COUNTER_DROPPED_EVENTS, 1);
}

/* Decide whether sk, first seen moving bytes, is captured. `state` is its storage if it was created while
 * capturing (by its handshake): its bytes are then seen from the first one; without it the socket is older than
 * the capture and is joined mid-stream. The caller is the process that moves the bytes: the pid filter applies
 * here, once per socket. */
static __always_inline struct mb_sock_state *decide(const volatile struct mb_config *cfg, const struct sock *sk,
						    struct mb_sock_state *state)
{
	bool mid_stream = state == NULL;
	bool wanted = on_watched_port(cfg, sk) && pid_wanted(cfg, bpf_get_current_pid_tgid() >> 32);
	__u32 zero = 0;
	__u64 *next;

	if (!state)
		state = bpf_sk_storage_get(&sock_states, (void *)sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!state) {
		if (wanted)
			count(MB_COUNTER_TABLE_FULL, 1);
		return NULL;
	}
	next = bpf_map_lookup_elem(&next_conn, &zero);
	/* Two threads may move the socket's first bytes at once: the one that settles the verdict opens it. */
	if (__sync_val_compare_and_swap(&state->verdict, MB_VERDICT_NEW,
					wanted && next ? MB_VERDICT_WATCHED : MB_VERDICT_IGNORED) != MB_VERDICT_NEW)
		return state->verdict == MB_VERDICT_WATCHED ? state : NULL;
	if (!wanted || !next)
		return NULL;
	state->conn = __sync_fetch_and_add(next, 1) + 1;
	emit_open(cfg, sk, state->conn, mid_stream);
	return state;
}

/* The state of sk if it is a watched connection, deciding on its first bytes. */
static __always_inline struct mb_sock_state *watched_state(const volatile struct mb_config *cfg,
							   const struct sock *sk)
{
	struct mb_sock_state *state = bpf_sk_storage_get(&sock_states, (void *)sk, NULL, 0);

	if (state && state->verdict == MB_VERDICT_WATCHED)
		return state;
	if (state && state->verdict == MB_VERDICT_IGNORED)
		return NULL;
	return decide(cfg, sk, state);
}

#endif
