/* SPDX-License-Identifier: GPL-2.0 */
/* capture.bpf.c's connection tracking: which fds are watched TCP sockets, their connection numbers, and the
 * open and close events. Included by capture.bpf.c alone, after capture_maps.h. */
#ifndef MEMBENCH_CAPTURE_TRACK_H
#define MEMBENCH_CAPTURE_TRACK_H

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
	fresh.sock = (__u64)sk;
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

/* What an fd number names may have changed: no negative verdict cached before holds any more. Called after the
 * maps changed: a verdict cached from the maps as they were then carries an older generation. */
static __always_inline void verdicts_changed(void)
{
	__sync_fetch_and_add(&verdict_generation, 1);
}

/* This CPU's cache entry for (tgid, fd), which holds its verdict if it matches. */
static __always_inline struct ignored_entry *ignored_cache_entry(const struct mb_fd_key *key)
{
	__u32 zero = 0;
	struct ignored_cache *cache = bpf_map_lookup_elem(&ignored_cache, &zero);

	return cache ? &cache->entries[(key->tgid * 31 + (__u32)key->fd) & (MB_IGNORED_CACHE - 1)] : NULL;
}

/* Forget whatever was known about (tgid, fd), `known` being its connection if watched: the fd number now names
 * something else. */
static __always_inline void forget_known(const volatile struct mb_config *cfg, const struct mb_fd_key *key,
					 struct mb_connection *known)
{
	if (known) {
		emit_close(cfg, known->conn);
		bpf_map_delete_elem(&connections, key);
	}
	bpf_map_delete_elem(&ignored_fds, key);
	verdicts_changed();
}

static __always_inline void forget(const volatile struct mb_config *cfg, const struct mb_fd_key *key)
{
	forget_known(cfg, key, bpf_map_lookup_elem(&connections, key));
}

/* The connection behind (tgid, fd) if it is watched, deciding lazily for fds opened before the capture. */
static __always_inline struct mb_connection *watched_connection(const volatile struct mb_config *cfg,
								const struct mb_fd_key *key)
{
	/* Read before the maps: a verdict changed meanwhile then leaves the cache entry made below stale. */
	__u64 generation = verdict_generation;
	struct ignored_entry *cached = ignored_cache_entry(key);
	struct mb_connection *known;
	struct sock *sk;

	if (cached && cached->generation == generation + 1 && cached->key.tgid == key->tgid &&
	    cached->key.fd == key->fd)
		return NULL;
	known = bpf_map_lookup_elem(&connections, key);
	if (known)
		return known;
	if (bpf_map_lookup_elem(&ignored_fds, key)) {
		if (cached) {
			cached->key = *key;
			cached->generation = generation + 1;
		}
		return NULL;
	}
	sk = tcp_sock_of_fd(key->fd);
	if (!sk) {
		__u8 ignored = 1;

		bpf_map_update_elem(&ignored_fds, key, &ignored, BPF_ANY);
		return NULL;
	}
	return track(cfg, key, sk, true);
}

#endif
