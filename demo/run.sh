#!/usr/bin/env bash
# make demo: two crisp "nodes" on one machine, pods talking across them without NAT.
#
# Each node is its own network namespace running its own crisp (own socket, root, netns dir and
# CNI conf: bridge + host-local with the node's pod CIDR, no masquerade). The nodes are joined by
# a veth "wire" with addresses that exist only inside the two node namespaces, and each node
# routes the other's pod CIDR via the other's wire address, as a cloud route table or a routing
# daemon would. Two pods per node are started through each node's socket by a real CRI client
# (crictl when it is on PATH, grpcurl otherwise), every call printed. A tiny TCP "who are you"
# helper (examples/whoami.rs) runs in the pods' namespaces and proves: same-node pod -> pod over
# the bridge, cross-node pod -> pod over the wire, the receiver sees the sender's pod IP (no
# NAT), pod -> the other node's address. Then it prints every hop of one cross-node packet with
# the names read from the live system and writes an SVG of the live topology.
#
# Everything is torn down (pods through crisp, then the daemons, then the node namespaces) on
# every exit path, and the script exits non-zero when any proof or the leftover check fails.
# All traffic stays inside the namespaces this script creates.
#
# Environment: CRISP_BIN, WHOAMI_BIN (default: target/release/crisp and
# target/release/examples/whoami), DEMO_OUT_DIR (default target/demo), CNI_BIN_DIR, and
# DEMO_SKIP_ROUTES=1 to leave out the nodes' routes to each other's pods: then the cross-node
# proofs fail and the demo must say so and exit non-zero (tests/demo.rs checks that it does).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRISP_BIN=${CRISP_BIN:-$REPO/target/release/crisp}
WHOAMI_BIN=${WHOAMI_BIN:-$REPO/target/release/examples/whoami}
OUT_DIR=${DEMO_OUT_DIR:-$REPO/target/demo}
CNI_BIN_DIR=${CNI_BIN_DIR:-/opt/cni/bin:/usr/lib/cni}
PORT=7000
# Seconds a whoami server lives at most, so one outlives a killed driver only briefly.
SERVER_LIFETIME=120

say() { printf '\n== %s\n' "$*"; }
cmd() { printf '  $ %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

# --- preconditions: say what is missing and stop ----------------------------------------------
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, mounts)"
[ -x "$CRISP_BIN" ] || die "crisp is not built: $CRISP_BIN (run make build)"
[ -x "$WHOAMI_BIN" ] || die "the whoami helper is not built: $WHOAMI_BIN (cargo build --example whoami)"
for tool in ip bridge nsenter jq mountpoint; do
    command -v "$tool" >/dev/null || die "$tool is not on PATH (make deps)"
done
if command -v crictl >/dev/null; then CLIENT=crictl; else CLIENT=grpcurl; fi
command -v "$CLIENT" >/dev/null || die "grpcurl is not on PATH (make deps)"
for plugin in bridge host-local; do
    found=
    IFS=: read -ra dirs <<<"$CNI_BIN_DIR"
    for d in "${dirs[@]}"; do [ -x "$d/$plugin" ] && found=1; done
    [ -n "$found" ] || die "CNI plugin $plugin not found in $CNI_BIN_DIR (make deps)"
done

# --- the run's names: unique per run, so parallel runs (and the tests) never collide -----------
RUN="$$$(printf '%04x' $((RANDOM)))"
PREFIX="crisp-demo-$RUN"
NODES=(a b)
PODS=(a1 a2 b1 b2)
declare -A NS SOCK DIR BRIDGE WIRE WIRE_IP WIRE_PEER_IP CIDR GW CRISP_PID
declare -A POD_NODE POD_ID POD_IP POD_NETNS SERVER_PID
declare -A ETH_IFX ETH_MAC ETH_PEER_IFX VETH VETH_IFX VETH_MASTER
NS[a]="$PREFIX-a" NS[b]="$PREFIX-b"
BRIDGE[a]=crisp-a0 BRIDGE[b]=crisp-b0
WIRE[a]=wire-a WIRE[b]=wire-b
WIRE_IP[a]=192.168.77.1 WIRE_IP[b]=192.168.77.2
WIRE_PEER_IP[a]=192.168.77.2 WIRE_PEER_IP[b]=192.168.77.1
CIDR[a]=10.244.1.0/24 CIDR[b]=10.244.2.0/24
GW[a]=10.244.1.1 GW[b]=10.244.2.1
for p in "${PODS[@]}"; do POD_NODE[$p]=${p:0:1}; done
other() { if [ "$1" = a ]; then echo b; else echo a; fi; }

host_links() { ip -j link show | jq -r '.[].ifname' | sort; }
our_netns() { ip netns list | awk '{print $1}' | grep -F -- "$PREFIX" || true; }
HOST_LINKS_BEFORE=$(host_links)
TMP=$(mktemp -d "/tmp/$PREFIX.XXXXXX")
FAILED=()

# --- teardown, on every exit path -----------------------------------------------------------------
cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    set +e
    say "Teardown: the pods' workloads, the pods through crisp, the daemons, the nodes"
    for p in "${PODS[@]}"; do
        if [ -n "${SERVER_PID[$p]:-}" ]; then kill "${SERVER_PID[$p]}" 2>/dev/null; fi
    done
    for n in "${NODES[@]}"; do
        if [ -n "${SERVER_PID[node-$n]:-}" ]; then kill "${SERVER_PID[node-$n]}" 2>/dev/null; fi
    done
    wait_pids "${SERVER_PID[@]}"
    # Every pod the node's crisp knows, not only those we got an id for: a run interrupted
    # during RunPodSandbox still has its pod removed through crisp.
    for n in "${NODES[@]}"; do
        [ -n "${CRISP_PID[$n]:-}" ] && kill -0 "${CRISP_PID[$n]}" 2>/dev/null || continue
        cri_list "$n" || {
            FAILED+=("teardown: ListPodSandbox on node $n")
            continue
        }
        for id in $ANSWER; do
            cri_stop "$n" "$id" || FAILED+=("teardown: StopPodSandbox $id on node $n")
            cri_remove "$n" "$id" || FAILED+=("teardown: RemovePodSandbox $id on node $n")
        done
    done
    for n in "${NODES[@]}"; do
        [ -n "${CRISP_PID[$n]:-}" ] || continue
        cmd "kill -TERM ${CRISP_PID[$n]}    # crisp of node $n"
        kill -TERM "${CRISP_PID[$n]}" 2>/dev/null
        local i=0
        while kill -0 "${CRISP_PID[$n]}" 2>/dev/null && [ $i -lt 100 ]; do
            sleep 0.1
            if [ "$p" = "$SRC" ]; then
                badge $((PX + 196)) 106 1
                badge $((PX + 196)) 250 2
            elif [ "$p" = "$DST" ]; then
                badge $((PX + 196)) 250 8
                badge $((PX + 196)) 106 9
            fi
            i=$((i + 1))
        done
        if kill -0 "${CRISP_PID[$n]}" 2>/dev/null; then
            note "crisp of node $n ignored SIGTERM for 10 s; killing it"
            kill -KILL "${CRISP_PID[$n]}" 2>/dev/null
            FAILED+=("teardown: crisp of node $n did not stop on SIGTERM")
        fi
        wait "${CRISP_PID[$n]}" 2>/dev/null
    done
    # IP addresses host-local still holds after RemovePodSandbox would be leaked addresses.
    for n in "${NODES[@]}"; do
        local held
        held=$(find "$TMP/$n/ipam" -type f -name '*.*.*.*' ! -name 'last_reserved_ip*' -printf '%f ' 2>/dev/null)
        if [ -n "$held" ] && [ -n "${POD_ID[*]}" ]; then
            note "node $n: host-local still holds $held"
            FAILED+=("teardown: node $n leaked pod IPs $held")
        fi
    done
    # Pins crisp could not remove (a failed step): unmount and delete them ourselves.
    for n in "${NODES[@]}"; do
        for pin in "$TMP/$n/netns"/*; do
            [ -e "$pin" ] || continue
            note "leftover pod namespace pin $pin: removing it"
            umount -l "$pin" 2>/dev/null
            rm -f "$pin"
            FAILED+=("teardown: crisp left the pin $pin")
        done
    done
    for n in "${NODES[@]}"; do
        if ip netns list | awk '{print $1}' | grep -qxF -- "${NS[$n]}"; then
            cmd "ip netns delete ${NS[$n]}"
            ip netns delete "${NS[$n]}"
        fi
    done
    rm -rf "$TMP"

    say "Leftovers"
    local left links_after new_links
    left=$(our_netns)
    links_after=$(host_links)
    new_links=$(comm -13 <(echo "$HOST_LINKS_BEFORE") <(echo "$links_after"))
    note "ip netns list entries of this run: ${left:-none}"
    note "host links: $(echo "$HOST_LINKS_BEFORE" | wc -l) before, $(echo "$links_after" | wc -l) after; new: ${new_links:-none}"
    [ -z "$left" ] || FAILED+=("leftover namespaces: $left")
    [ -z "$new_links" ] || FAILED+=("new host links: $new_links")

    say "Result"
    if [ ${#FAILED[@]} -eq 0 ] && [ "$rc" -eq 0 ]; then
        note "all proofs passed; nothing left behind"
        exit 0
    fi
    for f in "${FAILED[@]}"; do note "FAILED: $f"; done
    [ "$rc" -eq 0 ] && rc=1
    note "demo failed (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'printf "demo: step failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

wait_pids() {
    local pid
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# --- the CRI client: every call printed; answers land in $ANSWER --------------------------------
# grpcurl as it ships, no -authority: crisp accepts the socket path it sends as :authority.
GRPCURL=(grpcurl -plaintext -emit-defaults -unix)
grpc() { # NODE METHOD BODY
    local sock=${SOCK[$1]}
    cmd "${GRPCURL[*]} -d '$3' $sock runtime.v1.RuntimeService/$2"
    ANSWER=$("${GRPCURL[@]}" -max-time 60 -d "$3" "$sock" "runtime.v1.RuntimeService/$2")
}
crictl_() { # NODE ARGS...
    local n=$1
    shift
    cmd "crictl -r unix://${SOCK[$n]} -t 60s $*"
    ANSWER=$(crictl -r "unix://${SOCK[$n]}" -t 60s "$@")
}
cri_run() { # NODE POD -> POD_ID
    local n=$1 p=$2 config
    config=$(jq -nc --arg p "$p" --arg logs "$TMP/$n/logs/$p" '{
        metadata: {name: $p, namespace: "demo", uid: ("uid-" + $p), attempt: 0},
        hostname: $p, log_directory: $logs,
        labels: {app: "whoami", pod: $p},
        linux: {security_context: {namespace_options: {network: "POD", pid: "CONTAINER", ipc: "POD"}}}}')
    if [ "$CLIENT" = crictl ]; then
        echo "$config" >"$TMP/$p.json"
        crictl_ "$n" runp "$TMP/$p.json"
        POD_ID[$p]=$ANSWER
    else
        grpc "$n" RunPodSandbox "{\"config\":$config}"
        POD_ID[$p]=$(jq -r .podSandboxId <<<"$ANSWER")
    fi
    note "-> pod sandbox id ${POD_ID[$p]}"
}
cri_status() { # NODE POD -> POD_IP, POD_NETNS
    local n=$1 p=$2 status info
    if [ "$CLIENT" = crictl ]; then
        crictl_ "$n" inspectp -o json "${POD_ID[$p]}"
        status=$(jq -c .status <<<"$ANSWER")
        info=$(jq -c '.info.info' <<<"$ANSWER")
    else
        grpc "$n" PodSandboxStatus "{\"pod_sandbox_id\":\"${POD_ID[$p]}\",\"verbose\":true}"
        status=$(jq -c .status <<<"$ANSWER")
        info=$(jq -r '.info.info' <<<"$ANSWER")
    fi
    POD_IP[$p]=$(jq -r .network.ip <<<"$status")
    POD_NETNS[$p]=$(jq -r .netnsPath <<<"$info")
    note "-> state $(jq -r .state <<<"$status"), ip ${POD_IP[$p]}, netns ${POD_NETNS[$p]}"
    [ "$(jq -r .state <<<"$status")" = SANDBOX_READY ] || die "pod $p is not ready: $status"
    [ -e "${POD_NETNS[$p]}" ] || die "pod $p: crisp reports netns ${POD_NETNS[$p]}, which does not exist"
}
cri_list() { # NODE -> ids in $ANSWER
    if [ "$CLIENT" = crictl ]; then
        crictl_ "$1" pods -q --no-trunc
    else
        grpc "$1" ListPodSandbox '{}' && ANSWER=$(jq -r '.items[]?.id' <<<"$ANSWER")
    fi
}
cri_stop() {
    if [ "$CLIENT" = crictl ]; then crictl_ "$1" stopp "$2"; else grpc "$1" StopPodSandbox "{\"pod_sandbox_id\":\"$2\"}"; fi
}
cri_remove() {
    if [ "$CLIENT" = crictl ]; then crictl_ "$1" rmp "$2"; else grpc "$1" RemovePodSandbox "{\"pod_sandbox_id\":\"$2\"}"; fi
}

in_node() { # NODE CMD... (net namespace only)
    local n=$1
    shift
    nsenter --net="/run/netns/${NS[$n]}" "$@"
}
in_pod() { # POD CMD... (net namespace only)
    local p=$1
    shift
    nsenter --net="${POD_NETNS[$p]}" "$@"
}

# === 1. the nodes ================================================================================
say "1. Two nodes: network namespaces ${NS[a]} and ${NS[b]}, joined by a veth wire"
for n in "${NODES[@]}"; do
    cmd "ip netns add ${NS[$n]}"
    ip netns add "${NS[$n]}"
    ip -n "${NS[$n]}" link set lo up
    # Routing between the nodes is the point; IPv6 is off so the wire carries only the demo's
    # IPv4 packets and its counters show exactly them.
    cmd "nsenter --net=/run/netns/${NS[$n]} sysctl -w net.ipv4.ip_forward=1 net.ipv6.conf.{all,default}.disable_ipv6=1"
    in_node "$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1
done
cmd "ip -n ${NS[a]} link add ${WIRE[a]} type veth peer name ${WIRE[b]} netns ${NS[b]}"
ip -n "${NS[a]}" link add "${WIRE[a]}" type veth peer name "${WIRE[b]}" netns "${NS[b]}"
for n in "${NODES[@]}"; do
    o=$(other "$n")
    cmd "ip -n ${NS[$n]} addr add ${WIRE_IP[$n]}/30 dev ${WIRE[$n]}; ip -n ${NS[$n]} link set ${WIRE[$n]} up"
    ip -n "${NS[$n]}" addr add "${WIRE_IP[$n]}/30" dev "${WIRE[$n]}"
    ip -n "${NS[$n]}" link set "${WIRE[$n]}" up
    if [ -n "${DEMO_SKIP_ROUTES:-}" ]; then
        note "DEMO_SKIP_ROUTES is set: node $n gets no route to ${CIDR[$o]}, so the cross-node proofs must fail"
        continue
    fi
    cmd "ip -n ${NS[$n]} route add ${CIDR[$o]} via ${WIRE_PEER_IP[$n]}    # the other node's pods"
    ip -n "${NS[$n]}" route add "${CIDR[$o]}" via "${WIRE_PEER_IP[$n]}" dev "${WIRE[$n]}"
done

# === 2. one crisp per node =======================================================================
say "2. One crisp per node, entered into the node namespace with setns(CLONE_NEWNET) only"
for n in "${NODES[@]}"; do
    DIR[$n]=$TMP/$n
    SOCK[$n]=$TMP/$n/crisp.sock
    mkdir -p "${DIR[$n]}"/{conf,root,netns,ipam,logs}
    jq -n --arg br "${BRIDGE[$n]}" --arg cidr "${CIDR[$n]}" --arg gw "${GW[$n]}" \
        --arg data "${DIR[$n]}/ipam" '{
        cniVersion: "1.0.0", name: "demo-pods",
        plugins: [{type: "bridge", bridge: $br, isGateway: true, ipMasq: false, hairpinMode: true,
                   ipam: {type: "host-local", ranges: [[{subnet: $cidr, gateway: $gw}]],
                          routes: [{dst: "0.0.0.0/0"}], dataDir: $data}}]}' \
        >"${DIR[$n]}/conf/10-demo.conflist"
    note "node $n CNI conf ${DIR[$n]}/conf/10-demo.conflist: bridge ${BRIDGE[$n]}, pods ${CIDR[$n]}, ipMasq false"
    cmd "nsenter --net=/run/netns/${NS[$n]} $CRISP_BIN --socket ${SOCK[$n]} --root ${DIR[$n]}/root --netns-dir ${DIR[$n]}/netns --cni-conf-dir ${DIR[$n]}/conf --cni-bin-dir $CNI_BIN_DIR &"
    nsenter --net="/run/netns/${NS[$n]}" "$CRISP_BIN" --socket "${SOCK[$n]}" --root "${DIR[$n]}/root" \
        --netns-dir "${DIR[$n]}/netns" --cni-conf-dir "${DIR[$n]}/conf" \
        --cni-bin-dir "$CNI_BIN_DIR" >"${DIR[$n]}/crisp.log" 2>&1 &
    CRISP_PID[$n]=$!
done
for n in "${NODES[@]}"; do
    for _ in $(seq 300); do
        kill -0 "${CRISP_PID[$n]}" 2>/dev/null || die "crisp of node $n exited: $(cat "${DIR[$n]}/crisp.log")"
        [ -S "${SOCK[$n]}" ] && "${GRPCURL[@]}" -max-time 2 "${SOCK[$n]}" \
            runtime.v1.RuntimeService/Version >/dev/null 2>&1 && break
        sleep 0.1
    done
    "${GRPCURL[@]}" -max-time 2 "${SOCK[$n]}" runtime.v1.RuntimeService/Version >/dev/null ||
        die "crisp of node $n does not answer Version on ${SOCK[$n]}: $(tail -n 5 "${DIR[$n]}/crisp.log")"
    grpc "$n" Status '{}'
    note "-> $(jq -r '[.status.conditions[] | "\(.type)=\(.status // false)"] | join(" ")' <<<"$ANSWER")"
    jq -e '.status.conditions[] | select(.type == "NetworkReady") | .status == true' <<<"$ANSWER" >/dev/null ||
        die "node $n: crisp says the network is not ready: $ANSWER"
done

# === 3. the pods =================================================================================
say "3. Two pods per node, through each node's socket with $CLIENT"
for p in "${PODS[@]}"; do
    cri_run "${POD_NODE[$p]}" "$p"
    cri_status "${POD_NODE[$p]}" "$p"
done

# The workload: a whoami server in every pod, and one on node b's own wire address.
for p in "${PODS[@]}"; do
    nsenter --net="${POD_NETNS[$p]}" "$WHOAMI_BIN" serve "$p" "0.0.0.0:$PORT" "$SERVER_LIFETIME" \
        >"$TMP/$p.whoami.log" 2>&1 &
    SERVER_PID[$p]=$!
done
nsenter --net="/run/netns/${NS[b]}" "$WHOAMI_BIN" serve node-b "${WIRE_IP[b]}:$PORT" "$SERVER_LIFETIME" \
    >"$TMP/node-b.whoami.log" 2>&1 &
SERVER_PID[node-b]=$!
note "whoami serving on :$PORT in each pod's namespace and on node b's ${WIRE_IP[b]}:$PORT"
for s in "${PODS[@]}" node-b; do
    for _ in $(seq 100); do
        grep -q listening "$TMP/$s.whoami.log" 2>/dev/null && break
        kill -0 "${SERVER_PID[$s]}" 2>/dev/null || die "whoami in $s exited: $(cat "$TMP/$s.whoami.log")"
        sleep 0.05
    done
    grep -q listening "$TMP/$s.whoami.log" || die "whoami in $s did not start listening"
done

# === 4. the proofs ===============================================================================
pass() { note "PASS  $*"; }
fail() {
    note "FAIL  $*"
    FAILED+=("$*")
}
wire_packets() { # NODE -> tx+rx packets on its wire end
    ip -n "${NS[$1]}" -j -s link show dev "${WIRE[$1]}" | jq '.[0].stats64 | .tx.packets + .rx.packets'
}
# ask FROM TARGET_NAME TARGET_IP: one exchange; sets SENT_FROM, SEEN_AS, SEEN_BY
ask() {
    local from=$1 name=$2 ip=$3 out
    SENT_FROM='' SEEN_AS='' SEEN_BY=''
    cmd "nsenter --net=${POD_NETNS[$from]} whoami ask $ip:$PORT    # from pod $from"
    if ! out=$(in_pod "$from" "$WHOAMI_BIN" ask "$ip:$PORT" 2>&1); then
        note "$out"
        return 1
    fi
    SENT_FROM=$(sed -n 's/^local=\([^ ]*\) .*/\1/p' <<<"$out")
    SEEN_BY=$(sed -n 's/.* reply=name=\([^ ]*\) .*/\1/p' <<<"$out")
    SEEN_AS=$(sed -n 's/.* peer=\([^ ]*\).*/\1/p' <<<"$out")
    note "sender   $from: connected from $SENT_FROM to $ip:$PORT"
    note "receiver $SEEN_BY answered: \"${out#* reply=}\""
    note "receiver log: $(grep -F "peer=$SENT_FROM" "$TMP/$name.whoami.log" | tail -n1)"
    [ "$SEEN_BY" = "$name" ]
}
no_nat() { # FROM: the receiver saw exactly the sender's pod IP and port
    local from=$1
    if [ "${SEEN_AS%:*}" = "${POD_IP[$from]}" ] && [ "$SEEN_AS" = "$SENT_FROM" ]; then
        pass "no NAT: $SEEN_BY saw the source as $SEEN_AS, $from's own pod IP ${POD_IP[$from]}"
    else
        fail "NAT: $SEEN_BY saw the source as '$SEEN_AS', but $from sent from '$SENT_FROM' (pod IP ${POD_IP[$from]})"
    fi
}

say "4. Proofs"
printf '\n  4.1 same node: pod a1 -> pod a2 over bridge %s\n' "${BRIDGE[a]}"
before=$(wire_packets a)
if ask a1 a2 "${POD_IP[a2]}"; then
    after=$(wire_packets a)
    if [ "$after" = "$before" ]; then
        pass "same-node pod -> pod: a1 ${POD_IP[a1]} -> a2 ${POD_IP[a2]}; wire packets $before -> $after (the wire was not used)"
    else
        fail "same-node a1 -> a2 went over the wire ($before -> $after packets)"
    fi
    no_nat a1
else
    fail "same-node pod -> pod: a1 could not reach a2 at ${POD_IP[a2]}:$PORT"
fi

for pair in "a1 b1" "b2 a2"; do
    read -r from to <<<"$pair"
    fn=${POD_NODE[$from]} tn=${POD_NODE[$to]}
    printf '\n  4.%s cross node: pod %s (node %s) -> pod %s (node %s) over the wire\n' \
        "$([ "$from" = a1 ] && echo 2 || echo 3)" "$from" "$fn" "$to" "$tn"
    before=$(wire_packets "$fn")
    if ask "$from" "$to" "${POD_IP[$to]}"; then
        after=$(wire_packets "$fn")
        if [ "$after" -gt "$before" ]; then
            pass "cross-node pod -> pod: $from ${POD_IP[$from]} -> $to ${POD_IP[$to]}; ${WIRE[$fn]} packets $before -> $after"
        else
            fail "cross-node $from -> $to: no packets crossed ${WIRE[$fn]} ($before -> $after)"
        fi
        no_nat "$from"
    else
        fail "cross-node pod -> pod: $from could not reach $to at ${POD_IP[$to]}:$PORT"
    fi
done

printf '\n  4.4 pod a1 -> node b at its own address %s\n' "${WIRE_IP[b]}"
if ask a1 node-b "${WIRE_IP[b]}"; then
    pass "pod -> other node: a1 ${POD_IP[a1]} -> node b ${WIRE_IP[b]}"
    no_nat a1
else
    fail "pod -> other node: a1 could not reach node b at ${WIRE_IP[b]}:$PORT"
fi

# === 5. the path of one cross-node packet, read from the live system ============================
# pod_links POD: its eth0 and, by the veth peer index, the node end of its veth and that end's bridge.
pod_links() {
    local p=$1 n=${POD_NODE[$1]} eth veth
    eth=$(in_pod "$p" ip -j link show dev eth0)
    ETH_IFX[$p]=$(jq -r '.[0].ifindex' <<<"$eth")
    ETH_MAC[$p]=$(jq -r '.[0].address' <<<"$eth")
    ETH_PEER_IFX[$p]=$(jq -r '.[0].link_index' <<<"$eth")
    veth=$(ip -n "${NS[$n]}" -j link show | jq -c --argjson i "${ETH_PEER_IFX[$p]}" '.[] | select(.ifindex == $i)')
    VETH[$p]=$(jq -r '.ifname // empty' <<<"$veth")
    VETH_IFX[$p]=$(jq -r '.ifindex // empty' <<<"$veth")
    VETH_MASTER[$p]=$(jq -r '.master // empty' <<<"$veth")
    # The peer relation must hold both ways: the node end points back at the pod's eth0.
    [ -n "${VETH[$p]}" ] && [ "$(jq -r '.link_index' <<<"$veth")" = "${ETH_IFX[$p]}" ] ||
        fail "pod $p: no veth in node $n whose peer is eth0 (ifindex ${ETH_IFX[$p]})"
}
addr_of() { # NODE DEV -> first IPv4 address/prefix
    ip -n "${NS[$1]}" -j -4 addr show dev "$2" | jq -r '.[0].addr_info[0] | "\(.local)/\(.prefixlen)"'
}
route_entry() { # NODE DST -> the most specific table entry containing DST, as text
    ip -n "${NS[$1]}" -j route show match "$2" | jq -r '
        if length == 0 then "(no route)" else
        map(. + {len: (if .dst == "default" then 0 elif (.dst | test("/")) then (.dst | split("/")[1] | tonumber) else 32 end)})
        | max_by(.len) | [.dst, (if .gateway then "via \(.gateway)" else empty end), "dev \(.dev)",
          (if .protocol then "proto \(.protocol)" else empty end), (if .scope then "scope \(.scope)" else empty end)] | join(" ") end'
}
fdb_port() { # NODE BRIDGE MAC -> bridge port the MAC was learned on
    bridge -n "${NS[$1]}" -j fdb show br "$2" | jq -r --arg m "$3" '[.[] | select(.mac == $m and .ifname != null) | .ifname][0] // empty'
}

for p in "${PODS[@]}"; do pod_links "$p"; done
SRC=a1 DST=b1
say "5. Every hop of one packet from pod $SRC (${POD_IP[$SRC]}) to pod $DST (${POD_IP[$DST]}), read from the live system"
note "(ip -j link/addr/route, ip route get, bridge -j fdb, ip -j neigh; veth peers matched by ifindex)"

# A lookup that finds nothing prints "-" so the check below it names the broken hop.
route_get() { "$@" 2>/dev/null | jq -r '.[0] | "\(.gateway // "-") \(.dev // "-")"' || echo "- -"; }
src_route=$(route_get in_pod "$SRC" ip -j route get "${POD_IP[$DST]}")
read -r src_gw src_dev <<<"$src_route"
hop() { printf '    %-3s %-9s %-14s %s\n' "$@"; }
echo
hop 1 "pod $SRC" eth0 "$(in_pod "$SRC" ip -j -4 addr show dev eth0 | jq -r '.[0].addr_info[0] | "\(.local)/\(.prefixlen)"') mac ${ETH_MAC[$SRC]} ifindex ${ETH_IFX[$SRC]}; route get ${POD_IP[$DST]}: via $src_gw dev $src_dev"
hop 2 "node a" "${VETH[$SRC]}" "veth ifindex ${VETH_IFX[$SRC]} = the peer index of $SRC's eth0; its peer index ${ETH_IFX[$SRC]} = $SRC's eth0; master ${VETH_MASTER[$SRC]}"
port=$(fdb_port a "${BRIDGE[a]}" "${ETH_MAC[$SRC]}")
hop 3 "node a" "${BRIDGE[a]}" "bridge $(addr_of a "${BRIDGE[a]}") (= $SRC's gateway $src_gw); fdb: ${ETH_MAC[$SRC]} learned on ${port:-?}"
[ "$port" = "${VETH[$SRC]}" ] || fail "hop 3: bridge ${BRIDGE[a]} has not learned $SRC's MAC on ${VETH[$SRC]} (found '${port}')"
[ "$src_gw" = "${GW[a]}" ] || fail "hop 1: $SRC's next hop is '$src_gw', not the bridge ${GW[a]}"
fwd_a=$(route_get ip -n "${NS[a]}" -j route get "${POD_IP[$DST]}" from "${POD_IP[$SRC]}" iif "${BRIDGE[a]}")
read -r a_gw a_dev <<<"$fwd_a"
hop 4 "node a" route "$(route_entry a "${POD_IP[$DST]}")   (route get ${POD_IP[$DST]} from ${POD_IP[$SRC]} iif ${BRIDGE[a]}: via $a_gw dev $a_dev)"
[ "$a_dev" = "${WIRE[a]}" ] && [ "$a_gw" = "${WIRE_IP[b]}" ] ||
    fail "hop 4: node a forwards ${POD_IP[$DST]} via '$a_gw' dev '$a_dev', not via ${WIRE_IP[b]} dev ${WIRE[a]}"
wire_a=$(ip -n "${NS[a]}" -j link show dev "${WIRE[a]}")
wire_b=$(ip -n "${NS[b]}" -j link show dev "${WIRE[b]}")
wire_b_mac=$(jq -r '.[0].address' <<<"$wire_b")
neigh_mac=$(ip -n "${NS[a]}" -j neigh show dev "${WIRE[a]}" to "${WIRE_IP[b]}" | jq -r '.[0].lladdr // empty')
hop 5 wire "${WIRE[a]} -> ${WIRE[b]}" "$(addr_of a "${WIRE[a]}") ifindex $(jq -r '.[0].ifindex' <<<"$wire_a") peer index $(jq -r '.[0].link_index' <<<"$wire_a") = ${WIRE[b]} ifindex $(jq -r '.[0].ifindex' <<<"$wire_b") $(addr_of b "${WIRE[b]}"); neigh ${WIRE_IP[b]} lladdr ${neigh_mac:-?} = ${WIRE[b]} mac $wire_b_mac"
[ "$(jq -r '.[0].link_index' <<<"$wire_a")" = "$(jq -r '.[0].ifindex' <<<"$wire_b")" ] ||
    fail "hop 5: ${WIRE[a]}'s peer index is not ${WIRE[b]}'s ifindex"
[ "$neigh_mac" = "$wire_b_mac" ] || fail "hop 5: node a's neighbour entry for ${WIRE_IP[b]} is '$neigh_mac', not ${WIRE[b]}'s MAC $wire_b_mac"
fwd_b=$(route_get ip -n "${NS[b]}" -j route get "${POD_IP[$DST]}" from "${POD_IP[$SRC]}" iif "${WIRE[b]}")
fwd_b=${fwd_b#* }
hop 6 "node b" route "$(route_entry b "${POD_IP[$DST]}")   (route get ${POD_IP[$DST]} from ${POD_IP[$SRC]} iif ${WIRE[b]}: dev $fwd_b)"
[ "$fwd_b" = "${BRIDGE[b]}" ] || fail "hop 6: node b forwards ${POD_IP[$DST]} to '$fwd_b', not ${BRIDGE[b]}"
dst_neigh=$(ip -n "${NS[b]}" -j neigh show dev "${BRIDGE[b]}" to "${POD_IP[$DST]}" | jq -r '.[0].lladdr // empty')
port=$(fdb_port b "${BRIDGE[b]}" "${ETH_MAC[$DST]}")
hop 7 "node b" "${BRIDGE[b]}" "bridge $(addr_of b "${BRIDGE[b]}"); neigh ${POD_IP[$DST]} lladdr ${dst_neigh:-?}; fdb: ${ETH_MAC[$DST]} learned on ${port:-?}"
[ "$dst_neigh" = "${ETH_MAC[$DST]}" ] || fail "hop 7: node b's neighbour entry for ${POD_IP[$DST]} is '$dst_neigh', not $DST's MAC ${ETH_MAC[$DST]}"
[ "$port" = "${VETH[$DST]}" ] || fail "hop 7: bridge ${BRIDGE[b]} has not learned $DST's MAC on ${VETH[$DST]} (found '$port')"
hop 8 "node b" "${VETH[$DST]}" "veth ifindex ${VETH_IFX[$DST]}, master ${VETH_MASTER[$DST]}; its peer index ${ETH_IFX[$DST]} = $DST's eth0"
hop 9 "pod $DST" eth0 "$(in_pod "$DST" ip -j -4 addr show dev eth0 | jq -r '.[0].addr_info[0] | "\(.local)/\(.prefixlen)"') mac ${ETH_MAC[$DST]} ifindex ${ETH_IFX[$DST]}"

# === 6. the diagram ==============================================================================
mkdir -p "$OUT_DIR"
SVG=$OUT_DIR/topology.svg
x() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' <<<"$*"; }
# badge X Y N: the hop number of section 5, on an element the traced packet crosses.
badge() {
    printf '<circle cx="%d" cy="%d" r="9" fill="#c0392b"/><text x="%d" y="%d" fill="#ffffff" font-weight="bold" text-anchor="middle">%s</text>\n' \
        "$1" "$2" "$1" $(($2 + 4)) "$3"
}
{
    cat <<'EOF'
<svg xmlns="http://www.w3.org/2000/svg" width="1040" height="620" viewBox="0 0 1040 620" font-family="monospace" font-size="12">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c0392b"/></marker></defs>
<rect width="1040" height="620" fill="#ffffff"/>
EOF
    printf '<text x="20" y="24" font-size="15" font-weight="bold">crisp demo: pods on two nodes, no NAT (live topology, run %s)</text>\n' "$RUN"
    for n in "${NODES[@]}"; do
        o=$(other "$n")
        if [ "$n" = a ]; then X=20; else X=540; fi
        printf '<rect x="%d" y="40" width="480" height="540" rx="10" fill="#f4f7fb" stroke="#34495e"/>\n' "$X"
        printf '<text x="%d" y="60" font-weight="bold">node %s: netns %s</text>\n' $((X + 12)) "$n" "$(x "${NS[$n]}")"
        printf '<text x="%d" y="76">crisp socket %s</text>\n' $((X + 12)) "$(x "${SOCK[$n]}")"
        i=0
        for p in "${PODS[@]}"; do
            [ "${POD_NODE[$p]}" = "$n" ] || continue
            PX=$((X + 20 + i * 230))
            printf '<rect x="%d" y="92" width="210" height="92" rx="6" fill="#e8f6ef" stroke="#27ae60"/>\n' "$PX"
            printf '<text x="%d" y="110" font-weight="bold">pod %s</text>\n' $((PX + 8)) "$p"
            printf '<text x="%d" y="126">netns %s…</text>\n' $((PX + 8)) "$(x "$(basename "${POD_NETNS[$p]}" | cut -c1-20)")"
            printf '<text x="%d" y="146">eth0 %s/24</text>\n' $((PX + 8)) "${POD_IP[$p]}"
            printf '<text x="%d" y="162">mac %s</text>\n' $((PX + 8)) "${ETH_MAC[$p]}"
            printf '<text x="%d" y="178">ifindex %s, peer %s</text>\n' $((PX + 8)) "${ETH_IFX[$p]}" "${ETH_PEER_IFX[$p]}"
            printf '<line x1="%d" y1="184" x2="%d" y2="236" stroke="#34495e" stroke-width="2"/>\n' $((PX + 105)) $((PX + 105))
            printf '<rect x="%d" y="236" width="210" height="40" rx="6" fill="#fdf2e3" stroke="#e67e22"/>\n' "$PX"
            printf '<text x="%d" y="252">%s</text>\n' $((PX + 8)) "$(x "${VETH[$p]}")"
            printf '<text x="%d" y="268">ifindex %s, master %s</text>\n' $((PX + 8)) "${VETH_IFX[$p]}" "$(x "${VETH_MASTER[$p]}")"
            printf '<line x1="%d" y1="276" x2="%d" y2="310" stroke="#34495e" stroke-width="2"/>\n' $((PX + 105)) $((PX + 105))
            if [ "$p" = "$SRC" ]; then
                badge $((PX + 196)) 106 1
                badge $((PX + 196)) 250 2
            elif [ "$p" = "$DST" ]; then
                badge $((PX + 196)) 250 8
                badge $((PX + 196)) 106 9
            fi
            i=$((i + 1))
        done
        printf '<rect x="%d" y="310" width="440" height="44" rx="6" fill="#eaf0fb" stroke="#2c6fbb"/>\n' $((X + 20))
        printf '<text x="%d" y="328" font-weight="bold">bridge %s  %s</text>\n' $((X + 28)) "$(x "${BRIDGE[$n]}")" "$(addr_of "$n" "${BRIDGE[$n]}")"
        printf '<text x="%d" y="346">pod CIDR %s (host-local), ipMasq false</text>\n' $((X + 28)) "${CIDR[$n]}"
        printf '<rect x="%d" y="380" width="440" height="76" rx="6" fill="#ffffff" stroke="#7f8c8d" stroke-dasharray="4 3"/>\n' $((X + 20))
        printf '<text x="%d" y="398" font-weight="bold">node %s routing table</text>\n' $((X + 28)) "$n"
        printf '<text x="%d" y="416"%s>%s</text>\n' $((X + 28)) "$([ "$n" = "${POD_NODE[$DST]}" ] && echo ' fill="#c0392b"')" "$(x "$(route_entry "$n" "${GW[$n]}")")"
        printf '<text x="%d" y="432"%s>%s</text>\n' $((X + 28)) "$([ "$n" = "${POD_NODE[$SRC]}" ] && echo ' fill="#c0392b"')" "$(x "$(route_entry "$n" "${GW[$o]}")")"
        printf '<text x="%d" y="448">%s</text>\n' $((X + 28)) "$(x "$(route_entry "$n" "${WIRE_PEER_IP[$n]}")")"
        if [ "$n" = "${POD_NODE[$SRC]}" ]; then
            badge $((X + 446)) 326 3
            badge $((X + 446)) 396 4
        else
            badge $((X + 446)) 326 7
            badge $((X + 446)) 396 6
        fi
        if [ "$n" = a ]; then WX=$((X + 260)); else WX=$((X + 20)); fi
        printf '<rect x="%d" y="490" width="200" height="44" rx="6" fill="#f9ebea" stroke="#c0392b"/>\n' "$WX"
        printf '<text x="%d" y="508" font-weight="bold">%s</text>\n' $((WX + 8)) "$(x "${WIRE[$n]}")"
        printf '<text x="%d" y="524">%s</text>\n' $((WX + 8)) "$(addr_of "$n" "${WIRE[$n]}")"
    done
    printf '<line x1="480" y1="512" x2="560" y2="512" stroke="#c0392b" stroke-width="4"/>\n'
    printf '<text x="468" y="556">veth wire</text>\n'
    badge 520 528 5
    # The traced packet: a1 eth0 -> veth -> bridge -> route -> wire -> route -> bridge -> veth -> b1 eth0.
    # Drawn through the gaps between the boxes so it never covers a name.
    printf '<polyline points="145,184 145,296 490,296 490,500 550,500 550,296 665,296 665,184" fill="none" stroke="#c0392b" stroke-width="2" stroke-dasharray="6 4" marker-end="url(#arrow)"/>\n'
    printf '<text x="20" y="598" fill="#c0392b">dashed, numbered: the traced packet %s %s -> %s %s, hops 1-9 as in section 5</text>\n' "$SRC" "${POD_IP[$SRC]}" "$DST" "${POD_IP[$DST]}"
    printf '<text x="20" y="614" fill="#c0392b">(eth0, veth, bridge, route, wire, route, bridge, veth, eth0); red route lines: the entries it used</text>\n'
    echo '</svg>'
} >"$SVG"
say "6. Diagram of the live topology: $SVG"

[ ${#FAILED[@]} -eq 0 ] || exit 1
