# shellcheck shell=bash
# bench/netns.sh: shared by the bench scripts that put a server and ntp-blast
# in two network namespaces (bench/compare, bench/overload). Sourced, not run.
# Traffic stays between the namespaces the caller creates here.

# netns_pair NS_S NS_C VETH_S VETH_C ADDR_S ADDR_C: two fresh namespaces joined
# by a veth pair, IPv4 only, with permanent neighbour entries so that no ARP
# happens inside a measurement. Namespaces left by an interrupted run go first.
netns_pair() {
    local ns_s=$1 ns_c=$2 veth_s=$3 veth_c=$4 addr_s=$5 addr_c=$6 ns mac_s mac_c
    netns_remove "$ns_s" "$ns_c"
    ip netns add "$ns_s"
    ip netns add "$ns_c"
    ip link add "$veth_s" netns "$ns_s" type veth peer name "$veth_c" netns "$ns_c"
    for ns in "$ns_s" "$ns_c"; do
        ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip -n "$ns" link set lo up
    done
    ip -n "$ns_s" addr add "$addr_s/24" dev "$veth_s"
    ip -n "$ns_c" addr add "$addr_c/24" dev "$veth_c"
    ip -n "$ns_s" link set "$veth_s" up
    ip -n "$ns_c" link set "$veth_c" up
    mac_s=$(ip netns exec "$ns_s" cat "/sys/class/net/$veth_s/address")
    mac_c=$(ip netns exec "$ns_c" cat "/sys/class/net/$veth_c/address")
    ip -n "$ns_c" neigh replace "$addr_s" lladdr "$mac_s" dev "$veth_c" nud permanent
    ip -n "$ns_s" neigh replace "$addr_c" lladdr "$mac_c" dev "$veth_s" nud permanent
}

# netns_remove NS...: removes the namespaces that exist (the veth goes with them).
netns_remove() {
    local ns
    for ns in "$@"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

# cpu_ticks PID: utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# udp_drops NS: datagrams the kernel dropped for a full socket receive queue in
# NS (UDP RcvbufErrors), since the namespace was made.
udp_drops() {
    # shellcheck disable=SC2016 # awk's own $ fields
    ip netns exec "$1" awk '$1 == "Udp:" { if (!n) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; n = 1 } else print $c }' /proc/net/snmp
}

# chrony_conf ADDR PORT DIR: chronyd serving its own clock at stratum 1 on
# ADDR:PORT, no command sockets, its pid and drift files in DIR. Run it with -x
# so that it never touches the clock.
chrony_conf() {
    printf 'local stratum 1\nallow all\nbindaddress %s\nport %s\ncmdport 0\nbindcmdaddress /\npidfile %s\ndriftfile %s\n' \
        "$1" "$2" "$3/chronyd.pid" "$3/chrony.drift"
}
