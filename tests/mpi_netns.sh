# mpi_netns.sh — sourced by tests/mpi_test.sh and bench/mpi_bench.sh: two
# network namespaces joined by a veth pair, the link shaped, and an mpirun
# that puts one rank in each (as on two machines of a LAN).
#
#   netns_up DIR     makes namespaces esmpi<pid>a/b (addresses 10.233.77.1
#                    and .2 on veth esv<pid>a/b), shapes the link (netem rate
#                    1gbit delay 0.2ms each way; where the kernel has no
#                    netem, tbf at 1gbit without the delay) and writes the
#                    rsh agent into DIR.  Sets NS_A NS_B NS_VA NS_VB, and
#                    NS_SHAPE ("netem", "tbf" or "none"); returns 1, with
#                    the reason in NS_WHY, when namespaces cannot be made.
#   netns_mpirun TIMEOUT ARGS...
#                    mpirun in namespace A, bounded by TIMEOUT seconds, with
#                    two ranks (A's own and one started in B through the
#                    agent, as ssh would start it on another machine), over
#                    the link's addresses only (TCP); ARGS: the program and
#                    its arguments (absolute paths: B starts in /).
#                    $NS_MPIRUN_OPTS goes to mpirun first.
#   netns_down       kills what runs in the namespaces and removes them.
NS_A= NS_B=
netns_up() {
    NS_A=esmpi$$a NS_B=esmpi$$b NS_VA=esv$$a NS_VB=esv$$b NS_DIR=$1
    NS_SHAPE=none NS_WHY=
    if ! { ip netns add "$NS_A" && ip netns add "$NS_B" && ip link add "$NS_VA" type veth peer name "$NS_VB" &&
           ip link set "$NS_VA" netns "$NS_A" && ip link set "$NS_VB" netns "$NS_B" &&
           ip -n "$NS_A" addr add 10.233.77.1/24 dev "$NS_VA" && ip -n "$NS_B" addr add 10.233.77.2/24 dev "$NS_VB" &&
           ip -n "$NS_A" link set "$NS_VA" up && ip -n "$NS_B" link set "$NS_VB" up &&
           ip -n "$NS_A" link set lo up && ip -n "$NS_B" link set lo up; } > "$NS_DIR/ns.log" 2>&1; then
        NS_WHY=$(tail -1 "$NS_DIR/ns.log")
        netns_down
        return 1
    fi
    if ip netns exec "$NS_A" tc qdisc add dev "$NS_VA" root netem rate 1gbit delay 0.2ms > "$NS_DIR/ns.log" 2>&1 &&
        ip netns exec "$NS_B" tc qdisc add dev "$NS_VB" root netem rate 1gbit delay 0.2ms > "$NS_DIR/ns.log" 2>&1; then
        NS_SHAPE=netem
    elif ip netns exec "$NS_A" tc qdisc replace dev "$NS_VA" root tbf rate 1gbit burst 128kb latency 10ms &&
        ip netns exec "$NS_B" tc qdisc replace dev "$NS_VB" root tbf rate 1gbit burst 128kb latency 10ms; then
        NS_SHAPE=tbf
        NS_WHY="no netem in this kernel ($(tail -1 "$NS_DIR/ns.log"))"
    fi
    cat > "$NS_DIR/agent.sh" <<EOF
#!/bin/sh
host=\$1
shift
case "\$host" in
10.233.77.1) ns=$NS_A ;;
10.233.77.2) ns=$NS_B ;;
*) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
EOF
    chmod +x "$NS_DIR/agent.sh"
}

netns_mpirun() {
    t=$1
    shift
    # the launcher's own check of its daemons' connection: TCP keepalive
    # shellcheck disable=SC2086
    timeout "$t" ip netns exec "$NS_A" mpirun ${NS_MPIRUN_OPTS:-} --mca oob_tcp_keepalive_time 5 \
        --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 3 --mca plm_rsh_agent "$NS_DIR/agent.sh" \
        --mca btl tcp,self --mca btl_tcp_if_include 10.233.77.0/24 --mca oob_tcp_if_include 10.233.77.0/24 \
        --host 10.233.77.1,10.233.77.2 -np 2 --map-by node "$@"
}

netns_down() {
    for ns in $NS_A $NS_B; do
        # what was started there (a launcher daemon cut off by a link taken down)
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    NS_A= NS_B=
}
