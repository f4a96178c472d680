// SPDX-License-Identifier: MIT OR Apache-2.0
//
// tachyond's XDP program: sends the NTP requests tachyond serves to the
// AF_XDP socket of the receive queue they arrived on, and passes every other
// frame to the kernel untouched.
//
// Redirected: IPv4 (no options, not a fragment) or IPv6 (UDP right after the
// fixed header) UDP datagrams, with or without one VLAN tag, whose
// destination port is the served port and whose destination address is a
// served one (or any, for a wildcard listen address). Everything else is
// XDP_PASS: ARP, ICMP, TCP, other UDP ports (the sync thread's upstream
// replies come *from* port 123 to an ephemeral port), fragments, IPv6
// extension headers, frames longer than 1,536 bytes, NTP mode 6 (control
// queries), the metrics and control endpoints.
//
// Two programs, the same filter: tachyon_ntp gives a redirected frame, in the
// XDP metadata area just before it, the CLOCK_TAI time the program saw it
// (struct rx_meta): the receive timestamp, taken before the frame is copied
// to the socket (bpf_ktime_get_tai_ns needs Linux 6.1). Some kernels refuse
// bpf_xdp_adjust_meta to XDP programs altogether; there the loader falls back
// to tachyon_ntp_plain, which redirects without a stamp, and user space reads
// the clock when it takes the frames from the ring.
//
// Rebuild the committed object with scripts/build-bpf after any change here.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Queues an interface may have that tachyond can serve.
#define MAX_QUEUES 256
// Served addresses per family.
#define MAX_ADDRESSES 64
// Longer frames are left to the kernel: a socket's 2 KiB frame holds at
// most 1,792 bytes after the kernel's headroom, and no NTP request needs
// more than a standard Ethernet frame.
#define MAX_FRAME 1536
// Marks metadata written by this program ("NTPX").
#define RX_META_MAGIC 0x4e545058

struct config {
	__u16 port;   // network byte order
	__u8 any_ipv4; // 1: every IPv4 destination address is served
	__u8 any_ipv6;
	__u32 reserved;
};

// What user space finds in the 16 bytes before a redirected frame.
struct rx_meta {
	__u64 rx_tai_ns;
	__u32 magic;
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} ntp_config SEC(".maps");

struct ipv6_key {
	__u8 octets[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ADDRESSES);
	__type(key, __u32); // network byte order
	__type(value, __u8);
} served_ipv4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ADDRESSES);
	__type(key, struct ipv6_key);
	__type(value, __u8);
} served_ipv6 SEC(".maps");

struct vlan_tag {
	__be16 tci;
	__be16 ethertype;
};

struct ipv4_header {
	__u8 version_ihl;
	__u8 tos;
	__be16 total_length;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 checksum;
	__be32 source;
	__be32 destination;
};

struct ipv6_header {
	__be32 version_class_flow;
	__be16 payload_length;
	__u8 next_header;
	__u8 hop_limit;
	struct ipv6_key source;
	struct ipv6_key destination;
};

struct udp_header {
	__be16 source;
	__be16 destination;
	__be16 length;
	__u16 checksum;
};

// Whether the IPv4 datagram at `ip` is served; sets *udp past its header.
static __always_inline int served_v4(void *ip, void *end, const struct config *cfg, void **udp)
{
	struct ipv4_header *h = ip;
	if ((void *)(h + 1) > end)
		return 0;
	// No options (a reply is built in place with a 20-byte header); no
	// fragment: MF set or an offset.
	if (h->version_ihl != 0x45 || (h->frag_off & bpf_htons(0x3fff)) != 0)
		return 0;
	if (h->protocol != IPPROTO_UDP)
		return 0;
	if (!cfg->any_ipv4) {
		__u32 key = h->destination;
		if (!bpf_map_lookup_elem(&served_ipv4, &key))
			return 0;
	}
	*udp = h + 1;
	return 1;
}

static __always_inline int served_v6(void *ip, void *end, const struct config *cfg, void **udp)
{
	struct ipv6_header *h = ip;
	if ((void *)(h + 1) > end)
		return 0;
	// Extension headers (fragments among them) are the kernel's.
	if (h->next_header != IPPROTO_UDP)
		return 0;
	if (!cfg->any_ipv6) {
		struct ipv6_key key = h->destination;
		if (!bpf_map_lookup_elem(&served_ipv6, &key))
			return 0;
	}
	*udp = h + 1;
	return 1;
}

// The filter; `stamp` (a constant in each program) adds the receive stamp.
static __always_inline int filter(struct xdp_md *ctx, int stamp)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	const struct config *cfg = bpf_map_lookup_elem(&ntp_config, &zero);
	if (!cfg)
		return XDP_PASS;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || end - data > MAX_FRAME)
		return XDP_PASS;
	void *next = eth + 1;
	__be16 ethertype = eth->h_proto;
	if (ethertype == bpf_htons(ETH_P_8021Q) || ethertype == bpf_htons(ETH_P_8021AD)) {
		struct vlan_tag *tag = next;
		if ((void *)(tag + 1) > end)
			return XDP_PASS;
		ethertype = tag->ethertype;
		next = tag + 1;
	}

	void *udp_start = 0;
	if (ethertype == bpf_htons(ETH_P_IP)) {
		if (!served_v4(next, end, cfg, &udp_start))
			return XDP_PASS;
	} else if (ethertype == bpf_htons(ETH_P_IPV6)) {
		if (!served_v6(next, end, cfg, &udp_start))
			return XDP_PASS;
	} else {
		return XDP_PASS;
	}
	struct udp_header *udp = udp_start;
	if ((void *)(udp + 1) > end || udp->destination != cfg->port)
		return XDP_PASS;
	// Mode 6 (ntpq's control queries) is answered on the kernel's sockets:
	// rare, several datagrams long, never built in place.
	__u8 *first = (void *)(udp + 1);
	if ((void *)(first + 1) <= end && (*first & 7) == 6)
		return XDP_PASS;

	// The receive timestamp, in the metadata area. A driver without
	// metadata support refuses the adjustment: the frame goes without it
	// and user space reads the clock instead.
	if (stamp) {
		__u64 now = bpf_ktime_get_tai_ns();
		if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct rx_meta)) == 0) {
			struct rx_meta *meta = (void *)(long)ctx->data_meta;
			if ((void *)(meta + 1) <= (void *)(long)ctx->data) {
				meta->rx_tai_ns = now;
				meta->magic = RX_META_MAGIC;
				meta->reserved = 0;
			}
		}
	}
	// A queue without a socket passes the frame to the kernel.
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int tachyon_ntp(struct xdp_md *ctx)
{
	return filter(ctx, 1);
}

SEC("xdp")
int tachyon_ntp_plain(struct xdp_md *ctx)
{
	return filter(ctx, 0);
}

// The kernel takes "Dual MIT/GPL" as GPL-compatible; this file is offered
// under MIT or Apache-2.0 (SPDX line above).
char LICENSE[] SEC("license") = "Dual MIT/GPL";
