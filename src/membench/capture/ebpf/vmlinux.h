/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The few kernel types capture.bpf.c touches, written by hand instead of a multi-megabyte bpftool dump.
 * Struct layouts here do not have to match the running kernel: every struct carries preserve_access_index,
 * so clang records field accesses by name and libbpf relocates them against /sys/kernel/btf/vmlinux at load
 * time (members nested in the kernel's anonymous unions are found by name too).
 */
#ifndef MEMBENCH_VMLINUX_H
#define MEMBENCH_VMLINUX_H

typedef unsigned char __u8;
typedef short int __s16;
typedef short unsigned int __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long int __s64;
typedef long long unsigned int __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
typedef __u16 umode_t;

enum {
	false = 0,
	true = 1,
};

/* From the UAPI <linux/bpf.h>: only what the map definitions and helper flags use. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_SK_STORAGE = 24,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

struct bpf_map;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/* x86-64 user registers saved at syscall entry: the syscall number and its first four arguments. */
struct pt_regs {
	long unsigned int r10;
	long unsigned int dx;
	long unsigned int si;
	long unsigned int di;
	long unsigned int orig_ax;
};

struct in6_addr {
	__u8 s6_addr[16];
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	short unsigned int skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
};

/* x86 thread_info.status holds TS_COMPAT during a 32-bit syscall. */
struct thread_info {
	__u32 status;
};

struct task_struct {
	struct thread_info thread_info;
};

#pragma clang attribute pop

#endif
