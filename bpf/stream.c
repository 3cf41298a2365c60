//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Per-event streaming: every call of a watched cgroup goes through the ring
 * buffer on its own. This is what `escape-sensor record` uses to capture a
 * container's raw stream for offline training and for the differential test,
 * and it is case (e) of the overhead benchmark: the role sysdig plays in the
 * papers, with bags built in userspace.
 */
#include "escape.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u32);
} stream_watched SEC(".maps");

/* Failed reservations per cgroup: a recording that lost calls says so. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u64);
} stream_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} calls SEC(".maps");

const struct call_rec *unused_call_rec __attribute__((unused));

SEC("tp_btf/sys_enter")
int BPF_PROG(stream_enter, struct pt_regs *regs, long id)
{
	__u64 cg = bpf_get_current_cgroup_id();
	if (!bpf_map_lookup_elem(&stream_watched, &cg))
		return 0;

	struct call_rec *r = bpf_ringbuf_reserve(&calls, sizeof(*r), 0);
	if (!r) {
		__u64 *d = bpf_map_lookup_elem(&stream_drops, &cg);
		if (d)
			__sync_fetch_and_add(d, 1);
		return 0;
	}
	r->kind = REC_CALL;
	r->nr = nr_of(id);
	r->pad = 0;
	r->tid = (__u32)bpf_get_current_pid_tgid();
	r->pad2 = 0;
	r->ts = bpf_ktime_get_ns();
	r->cgid = cg;
	bpf_ringbuf_submit(r, 0);
	return 0;
}
