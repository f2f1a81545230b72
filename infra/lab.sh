#!/usr/bin/env bash
# A lab of three hosts on this machine for the pxpool multi-host tests.
#   infra/lab.sh start|stop|status|env|check
#   infra/lab.sh partition|heal|down|up HOST   faults for the tests (HOST: pxlab1..pxlab3)
#   infra/lab.sh exec HOST COMMAND [ARG...]    run COMMAND on HOST as root, without ssh
#   infra/lab.sh pids HOST                     every process running on HOST
# Each host is a network namespace with its own address on the bridge pxpool-br0
# (198.18.0.0/24; nothing is routed off the machine), its own UTS namespace (hostname)
# and mount namespace (private tmpfs on /tmp and /dev/shm, the rest of the filesystem
# shared with the machine as over NFS), and its own sshd on port 22.
# State and logs live in $PXPOOL_INFRA_DIR/lab (default /tmp/pxpool-infra/lab); that
# directory is visible at the same path on every lab host.
set -euo pipefail

INFRA_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
STATE="$(realpath -m "$INFRA_DIR/lab")"
SELF="$(realpath "${BASH_SOURCE[0]}")"
HOSTS=(pxlab1 pxlab2 pxlab3)
CLIENT_NAME=pxlab0 # the machine, as the lab hosts see it
NET=198.18.0
PREFIX=24
SUBNET="$NET.0/$PREFIX"
CLIENT_ADDR="$NET.1"
BRIDGE=pxpool-br0
USER_NAME=root
SSHD=/usr/sbin/sshd
START_TIMEOUT="${PXPOOL_INFRA_LAB_TIMEOUT:-20}"
ETC_HOSTS=/etc/hosts
BLOCK_BEGIN="# BEGIN pxpool lab: added by infra/lab.sh start, removed by infra/lab.sh stop"
BLOCK_END="# END pxpool lab"
GUARD_TABLE=pxpool_lab           # on the machine (family ip): nothing from the lab is routed off it
PARTITION_TABLE=pxpool_partition # inside a host's namespace (family inet): lab.sh partition

CLIENT_KEY="$STATE/id_ed25519"
AUTH_KEYS="$STATE/authorized_keys"
SSH_CONFIG="$STATE/ssh_config"
SHARED="$STATE/shared"
TEST_SSHD_KEY="$INFRA_DIR/sshd/id_ed25519.pub" # infra/sshd.sh's client key, also let in

LAST_LOG=""

log() { echo "infra: lab: $*" >&2; }
die() {
    echo "infra: lab: ERROR: $*" >&2
    local f
    for f in ${LAST_LOG}; do
        if [[ -s "$f" ]]; then
            echo "infra: lab: last lines of $f:" >&2
            tail -n 20 "$f" >&2 || true
        else
            echo "infra: lab: (log $f is empty or missing)" >&2
        fi
    done
    exit 1
}

machine_name() { hostname -s 2>/dev/null || hostname | cut -d. -f1; }

# The machine's own name, which the lab hosts resolve to the client address (SLURM's
# SlurmctldHost names it), unless it would clash with a lab name.
machine_alias() {
    local machine
    machine="$(machine_name)"
    if [[ -n "$machine" && "$machine" != localhost && "$machine" != "$CLIENT_NAME" &&
        " ${HOSTS[*]} " != *" $machine "* ]]; then
        echo "$machine"
    fi
}

# ---------------------------------------------------------------- names of a host

host_index() { # host -> 1..N, or die
    local i
    for i in "${!HOSTS[@]}"; do
        if [[ "${HOSTS[$i]}" == "$1" ]]; then
            echo $((i + 1))
            return 0
        fi
    done
    die "unknown lab host '${1:-}' (the lab hosts are ${HOSTS[*]})"
}
ns_of() { echo "pxpool-lab$(host_index "$1")"; }
veth_of() { echo "veth-$1"; }
addr_of() { echo "$NET.$((10 + $(host_index "$1")))"; }
dir_of() { echo "$STATE/$1"; }

# ---------------------------------------------------------------- processes of a host

ns_inode() { stat -L -c %i "/run/netns/$1" 2>/dev/null || true; }

# Every pid whose network namespace is $1 (an inode number), by /proc/PID/ns/net.
pids_in_netns() {
    [[ -n "$1" ]] || return 0
    # a process that exited meanwhile, or one whose namespace even root may not stat
    # (the machine's own init can be such), makes stat fail: skip it, not the script
    # shellcheck disable=SC2012 # stat of the ns links, not a listing
    { stat -L -c '%i %n' /proc/[0-9]*/ns/net 2>/dev/null || true; } |
        awk -v ino="$1" '$1 == ino { split($2, p, "/"); print p[3] }'
}

# Every process on host $1: in its network namespace now, or in the one it had when it
# was created (should /run/netns/NAME have been removed behind this script's back).
host_pids() {
    local h=$1 ns recorded
    ns="$(ns_of "$h")"
    recorded="$(cat "$(dir_of "$h")/netns.inode" 2>/dev/null || true)"
    {
        pids_in_netns "$(ns_inode "$ns")"
        [[ -z "$recorded" || "$recorded" == "$(ns_inode "$ns")" ]] || pids_in_netns "$recorded"
    } | sort -un
}

in_host_netns() { # pid host
    local ino
    ino="$(ns_inode "$(ns_of "$2")")"
    [[ -n "$ino" && "$(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null)" == "$ino" ]]
}

# Prints the pid in file $1 if it is alive, named $2 and on host $3; else nothing.
host_pid_from() { # pidfile comm host
    [[ -f "$1" ]] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$1")"
    if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] && in_host_netns "$pid" "$3"; then
        echo "$pid"
    fi
}
holder_pid() { host_pid_from "$(dir_of "$1")/holder.pid" sleep "$1"; }
sshd_pid() { host_pid_from "$(dir_of "$1")/sshd.pid" sshd "$1"; }

# End every process on host $1: signal $2 first, SIGKILL after $3 seconds.
kill_host() { # host signal grace
    local h=$1 sig=$2 grace=$3 pids deadline
    pids="$(host_pids "$h" | tr '\n' ' ')"
    [[ -n "${pids// /}" ]] || return 0
    log "$h: sending SIG$sig to its processes: $pids"
    # shellcheck disable=SC2086
    kill -"$sig" $pids 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while pids="$(host_pids "$h" | tr '\n' ' ')" && [[ -n "${pids// /}" ]]; do
        if ((SECONDS >= deadline)); then
            if [[ "$sig" == KILL ]]; then
                ps -o pid,stat,args -p "${pids// /,}" >&2 || true
                die "$h: processes still alive 5s after SIGKILL: $pids"
            fi
            log "$h: still alive ${grace}s after SIG$sig; sending SIGKILL: $pids"
            sig=KILL grace=5 deadline=$((SECONDS + 5))
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        fi
        sleep 0.1
    done
}

# ---------------------------------------------------------------- ssh

ssh_host() { # seconds host command: runs command on host over ssh, its stdout on ours
    local t=$1 h=$2
    shift 2
    timeout "$t" ssh -F "$SSH_CONFIG" "$h" "$@" </dev/null
}

ssh_probe() { [[ "$(ssh_host 10 "$1" hostname 2>/dev/null)" == "$1" ]]; }

tcp_open() { # address port seconds (from the machine)
    timeout "$3" bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

make_client_key() {
    mkdir -p "$STATE" "$SHARED"
    chmod 0755 "$STATE"
    chmod 1777 "$SHARED"
    if [[ ! -s "$CLIENT_KEY" || ! -s "$CLIENT_KEY.pub" ]]; then
        rm -f "$CLIENT_KEY" "$CLIENT_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C pxpool-lab-client -f "$CLIENT_KEY" >/dev/null
    fi
    chmod 0600 "$CLIENT_KEY"
    {
        cat "$CLIENT_KEY.pub"
        if [[ -s "$TEST_SSHD_KEY" ]]; then cat "$TEST_SSHD_KEY"; fi
    } >"$AUTH_KEYS.new"
    chmod 0600 "$AUTH_KEYS.new"
    mv -f "$AUTH_KEYS.new" "$AUTH_KEYS"
    local h
    {
        echo "# Written by infra/lab.sh: ssh -F $SSH_CONFIG pxlab1"
        for h in "${HOSTS[@]}"; do
            cat <<EOF
Host $h
    HostName $(addr_of "$h")
    User $USER_NAME
    IdentityFile $CLIENT_KEY
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
EOF
        done
    } >"$SSH_CONFIG"
}

write_host_files() { # host: its host key, sshd_config and /etc/hosts
    local h=$1 dir use_pam=no
    dir="$(dir_of "$h")"
    mkdir -p "$dir"
    if [[ ! -s "$dir/ssh_host_ed25519_key" || ! -s "$dir/ssh_host_ed25519_key.pub" ]]; then
        rm -f "$dir/ssh_host_ed25519_key" "$dir/ssh_host_ed25519_key.pub"
        ssh-keygen -q -t ed25519 -N '' -C "$h" -f "$dir/ssh_host_ed25519_key" >/dev/null
    fi
    chmod 0600 "$dir/ssh_host_ed25519_key"
    # As infra/sshd.sh: PAM only where root's password is locked (key logins refused otherwise).
    if [[ "$(getent shadow "$USER_NAME" 2>/dev/null | cut -d: -f2)" == '!'* ]]; then
        use_pam=yes
    fi
    cat >"$dir/sshd_config" <<EOF
# Written by infra/lab.sh: the sshd of lab host $h (inside its namespaces). Do not edit.
Port 22
ListenAddress 0.0.0.0
AddressFamily inet
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $AUTH_KEYS
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM $use_pam
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
GatewayPorts no
MaxStartups 100:30:200
MaxSessions 100
LogLevel INFO
Subsystem sftp internal-sftp
EOF
    local g
    {
        echo "# Written by infra/lab.sh: /etc/hosts of lab host $h"
        printf '127.0.0.1\tlocalhost\n'
        printf '::1\tlocalhost ip6-localhost ip6-loopback\n'
        echo "$CLIENT_ADDR	$CLIENT_NAME $(machine_alias)"
        for g in "${HOSTS[@]}"; do printf '%s\t%s\n' "$(addr_of "$g")" "$g"; done
    } >"$dir/hosts"
    chmod 0644 "$dir/hosts"
}

# ---------------------------------------------------------------- the machine's side

subnet_in_use_elsewhere() {
    ip -4 -o route show to "$SUBNET" 2>/dev/null | grep -v " dev $BRIDGE " | grep -q . ||
        ip -4 -o addr show 2>/dev/null | awk '{print $2, $4}' | grep -v "^$BRIDGE " | grep -q " $NET\."
}

bridge_up() {
    if subnet_in_use_elsewhere; then
        ip -4 -o addr show >&2 || true
        die "$SUBNET is already in use by another interface; the lab needs it for itself"
    fi
    if ! ip link show dev "$BRIDGE" >/dev/null 2>&1; then
        log "creating bridge $BRIDGE ($CLIENT_ADDR/$PREFIX)"
        ip link add name "$BRIDGE" type bridge || die "ip link add $BRIDGE type bridge failed"
    fi
    if ! ip -4 -o addr show dev "$BRIDGE" | grep -q " $CLIENT_ADDR/$PREFIX "; then
        ip addr add "$CLIENT_ADDR/$PREFIX" dev "$BRIDGE" || die "cannot add $CLIENT_ADDR/$PREFIX to $BRIDGE"
    fi
    ip link set "$BRIDGE" up || die "cannot set $BRIDGE up"
}

guard_up() {
    # Nothing from the lab is routed off the machine, whatever ip_forward says (lab hosts
    # have no default route either); bridged traffic between lab hosts is not affected.
    nft list table ip "$GUARD_TABLE" >/dev/null 2>&1 && return 0
    nft -f - <<EOF || die "cannot load the nftables table ip $GUARD_TABLE on the machine"
table ip $GUARD_TABLE {
    chain forward {
        type filter hook forward priority filter; policy accept;
        ip saddr $SUBNET ip daddr != $SUBNET drop
        ip daddr $SUBNET ip saddr != $SUBNET drop
    }
}
EOF
}

# /etc/hosts without our block (all other lines as they are).
hosts_without_block() {
    awk -v b="$BLOCK_BEGIN" -v e="$BLOCK_END" '
        $0 == b { skip = 1; next }
        skip && $0 == e { skip = 0; next }
        !skip { print }
    ' "$ETC_HOSTS"
}

HOSTS_CHANGED=0
write_etc_hosts() { # content: replaces /etc/hosts atomically (HOSTS_CHANGED=1) unless it is the same
    local content=$1 tmp
    HOSTS_CHANGED=0
    [[ "$content" != "$(cat "$ETC_HOSTS")" ]] || return 0
    if grep -qxF "$BLOCK_BEGIN" "$ETC_HOSTS" && ! grep -qxF "$BLOCK_END" "$ETC_HOSTS"; then
        die "$ETC_HOSTS has the line '$BLOCK_BEGIN' but no '$BLOCK_END': fix it by hand"
    fi
    tmp="$(mktemp "$ETC_HOSTS.pxlab.XXXXXX")"
    printf '%s\n' "$content" >"$tmp"
    chmod --reference="$ETC_HOSTS" "$tmp"
    chown --reference="$ETC_HOSTS" "$tmp"
    # A rename is atomic for readers; a bind-mounted /etc/hosts (containers) cannot be
    # renamed over, so that one is rewritten in place.
    if ! mv -f "$tmp" "$ETC_HOSTS" 2>/dev/null; then
        cat "$tmp" >"$ETC_HOSTS"
        rm -f "$tmp"
    fi
    HOSTS_CHANGED=1
}

hosts_block_add() {
    local block h
    block="$BLOCK_BEGIN"$'\n'"$CLIENT_ADDR	$CLIENT_NAME"
    for h in "${HOSTS[@]}"; do block+=$'\n'"$(addr_of "$h")	$h"; done
    block+=$'\n'"$BLOCK_END"
    write_etc_hosts "$(hosts_without_block)"$'\n'"$block"
}

hosts_block_remove() {
    HOSTS_CHANGED=0
    grep -qxF "$BLOCK_BEGIN" "$ETC_HOSTS" || return 0
    write_etc_hosts "$(hosts_without_block)"
}

# ---------------------------------------------------------------- one host

host_partitioned() { nsenter --net="/run/netns/$(ns_of "$1")" nft list table inet "$PARTITION_TABLE" >/dev/null 2>&1; }

# Whether the host still sees its own hosts file as /etc/hosts: replacing the machine's
# /etc/hosts by a rename (lab.sh start and stop do, so does sed -i) detaches it.
hosts_bound() {
    local holder
    holder="$(holder_pid "$1")"
    [[ -n "$holder" && "$(stat -L -c %d:%i "/proc/$holder/root/etc/hosts" 2>/dev/null)" == \
        "$(stat -c %d:%i "$(dir_of "$1")/hosts" 2>/dev/null)" ]]
}

bind_hosts_file() {
    nsenter --target "$(holder_pid "$1")" --mount -- mount --bind "$(dir_of "$1")/hosts" /etc/hosts ||
        die "$1: cannot bind its hosts file over /etc/hosts"
}

host_healthy() { # quiet: 0 when the host is up, reachable and answers ssh with its name
    local h=$1 ns veth
    ns="$(ns_of "$h")"
    veth="$(veth_of "$h")"
    [[ -e "/run/netns/$ns" ]] || return 1
    ip link show dev "$veth" 2>/dev/null | grep -q "master $BRIDGE .*state UP" || return 1
    [[ -n "$(holder_pid "$h")" && -n "$(sshd_pid "$h")" ]] || return 1
    ! host_partitioned "$h" || return 1
    host_sees_checkout "$h" || return 1
    ssh_probe "$h"
}

# A host started from another checkout under /tmp has that one bound, not this one.
host_sees_checkout() {
    local checkout
    checkout="$(dirname "$(dirname "$SELF")")"
    nsenter --target "$(holder_pid "$1")" --mount -- test -e "$checkout/infra/lab.sh"
}

# Nothing of host $1 is left: processes, namespace, veth pair.
host_remove() {
    local h=$1 ns veth dir
    ns="$(ns_of "$h")"
    veth="$(veth_of "$h")"
    dir="$(dir_of "$h")"
    kill_host "$h" TERM 3
    if [[ -e "/run/netns/$ns" ]]; then
        log "$h: deleting network namespace $ns"
        ip netns delete "$ns" || die "ip netns delete $ns failed"
    fi
    if ip link show dev "$veth" >/dev/null 2>&1; then
        # deleting the namespace removes the pair too, a moment later: gone is fine
        ip link delete "$veth" 2>/dev/null || link_gone "$veth" ||
            die "ip link delete $veth failed, and $veth is still there 2s later"
    fi
    rm -f "$dir/holder.pid" "$dir/sshd.pid" "$dir/netns.inode"
}

# True once link $1 no longer exists (waits up to 2s).
link_gone() {
    local i
    for i in $(seq 20); do
        ip link show dev "$1" >/dev/null 2>&1 || return 0
        sleep 0.1
    done
    return 1
}

host_create() { # network namespace, veth pair on the bridge, address; then boot
    local h=$1 ns veth addr dir
    ns="$(ns_of "$h")"
    veth="$(veth_of "$h")"
    addr="$(addr_of "$h")"
    dir="$(dir_of "$h")"
    mkdir -p "$dir"
    log "$h: creating network namespace $ns ($addr/$PREFIX on $BRIDGE)"
    ip netns add "$ns" || die "ip netns add $ns failed"
    ns_inode "$ns" >"$dir/netns.inode"
    ip link add "$veth" type veth peer name eth0 netns "$ns" || die "cannot create veth pair $veth/eth0 for $ns"
    ip link set "$veth" master "$BRIDGE" || die "cannot attach $veth to $BRIDGE"
    ip link set "$veth" up || die "cannot set $veth up"
    ip -n "$ns" link set lo up || die "cannot set lo up in $ns"
    ip -n "$ns" addr add "$addr/$PREFIX" dev eth0 || die "cannot add $addr/$PREFIX in $ns"
    ip -n "$ns" link set eth0 up || die "cannot set eth0 up in $ns"
    host_boot "$h"
}

# Starts the holder (new UTS and mount namespaces inside the host's network namespace:
# hostname, private /tmp and /dev/shm) and the host's sshd in them; waits for ssh.
host_boot() {
    local h=$1 ns dir holder deadline t0=$SECONDS
    ns="$(ns_of "$h")"
    dir="$(dir_of "$h")"
    write_host_files "$h"
    rm -f "$dir/holder.pid" "$dir/sshd.pid"
    : >"$dir/boot.log"
    : >"$dir/sshd.log"
    LAST_LOG="$dir/boot.log"
    setsid nsenter --net="/run/netns/$ns" -- unshare --uts --mount --propagation private -- \
        "$BASH" "$SELF" _boot "$h" </dev/null >>"$dir/boot.log" 2>&1 &
    deadline=$((SECONDS + 10))
    until holder="$(holder_pid "$h")" && [[ -n "$holder" ]]; do
        ((SECONDS < deadline)) || die "$h: the namespaces of the host were not set up within 10s"
        sleep 0.05
    done
    LAST_LOG="$dir/sshd.log"
    nsenter --target "$holder" --net --uts --mount --root --wd -- \
        "$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log" || die "$h: sshd failed to start"
    deadline=$((SECONDS + START_TIMEOUT))
    until ssh_probe "$h"; do
        ((SECONDS < deadline)) || die "$h: ssh to $(addr_of "$h") did not answer with hostname $h within ${START_TIMEOUT}s"
        sleep 0.2
    done
    log "$h: up ($(addr_of "$h"), netns $ns, holder pid $holder, sshd pid $(sshd_pid "$h"), $((SECONDS - t0))s)"
}

# Internal: the holder of a host's UTS and mount namespaces, run by host_boot through
# unshare. Never run it on the machine itself: it sets the hostname.
cmd_boot() {
    local h=${1:-} dir stage=/dev/shm/.pxlab-tmp rel
    host_index "$h" >/dev/null
    dir="$(dir_of "$h")"
    if [[ "$(readlink /proc/self/ns/uts)" == "$(readlink /proc/1/ns/uts)" ||
        "$(readlink /proc/self/ns/mnt)" == "$(readlink /proc/1/ns/mnt)" ]]; then
        die "_boot runs only inside new UTS and mount namespaces (infra/lab.sh start starts it)"
    fi
    hostname "$h"
    mount -t tmpfs -o mode=1777 pxlab-shm /dev/shm
    # The new /tmp is set up aside, with the lab's state directory bound into it at its
    # usual path (the host's sshd reads its files there), then moved over /tmp.
    mkdir "$stage"
    mount -t tmpfs -o mode=1777 pxlab-tmp "$stage"
    # So is the project's checkout when it lives under /tmp (a fresh clone in CI): the
    # hosts run its code like a cluster's nodes run code from the shared home.
    local shared
    for shared in "$STATE" "$(dirname "$(dirname "$SELF")")"; do
        case "$shared/" in
        /tmp/*)
            rel="${shared#/tmp/}"
            mkdir -p "$stage/$rel"
            mount --bind "$shared" "$stage/$rel"
            ;;
        esac
    done
    mount --move "$stage" /tmp
    rmdir "$stage"
    mount --bind "$dir/hosts" /etc/hosts
    # The machine's named network namespaces are not this host's business.
    umount --recursive --lazy /run/netns 2>/dev/null || true
    cd /
    echo $$ >"$dir/holder.pid"
    exec -a "pxpool-lab-holder $h" sleep infinity
}

# ---------------------------------------------------------------- commands

need_root_and_tools() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, mounts, /etc/hosts)"
    local b
    for b in ip nsenter unshare setsid nft ssh ssh-keygen; do
        command -v "$b" >/dev/null || die "$b not found; run infra/install.sh first"
    done
    [[ -x "$SSHD" ]] || die "$SSHD not found; run infra/install.sh first"
    case "$STATE/" in
    /dev/shm/*) die "PXPOOL_INFRA_DIR is under /dev/shm, which is private to each lab host" ;;
    esac
}

cmd_start() {
    need_root_and_tools
    local t0=$SECONDS h healthy=()
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
    make_client_key
    bridge_up
    guard_up
    for h in "${HOSTS[@]}"; do
        if host_healthy "$h"; then healthy+=("$h"); fi
    done
    hosts_block_add
    if ((HOSTS_CHANGED)); then log "added the lab's names to $ETC_HOSTS"; fi
    for h in "${healthy[@]}"; do
        if ! hosts_bound "$h"; then
            log "$h: binding its hosts file over /etc/hosts again (the machine's was replaced)"
            bind_hosts_file "$h"
        fi
    done
    for h in "${HOSTS[@]}"; do
        if [[ " ${healthy[*]} " == *" $h "* ]]; then
            log "$h: already running ($(addr_of "$h"), holder pid $(holder_pid "$h"), sshd pid $(sshd_pid "$h"))"
            continue
        fi
        host_remove "$h"
        host_create "$h"
    done
    log "ready in $((SECONDS - t0))s: ssh -F $SSH_CONFIG pxlab1"
}

cmd_stop() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    local h did=0
    for h in "${HOSTS[@]}"; do
        if [[ -e "/run/netns/$(ns_of "$h")" || -n "$(host_pids "$h")" ]] ||
            ip link show dev "$(veth_of "$h")" >/dev/null 2>&1; then
            did=1
            host_remove "$h"
        fi
    done
    if ip link show dev "$BRIDGE" >/dev/null 2>&1; then
        log "deleting bridge $BRIDGE"
        ip link delete "$BRIDGE" || die "ip link delete $BRIDGE failed"
        did=1
    fi
    if nft list table ip "$GUARD_TABLE" >/dev/null 2>&1; then
        nft delete table ip "$GUARD_TABLE" || die "nft delete table ip $GUARD_TABLE failed"
        did=1
    fi
    hosts_block_remove
    if ((HOSTS_CHANGED)); then
        log "removed the lab's names from $ETC_HOSTS"
        did=1
    fi
    if ((did)); then log "stopped"; else log "not running"; fi
}

host_status_line() { # host: prints one line, returns 0 up, 3 absent, 1 otherwise
    local h=$1 ns holder sshd
    ns="$(ns_of "$h")"
    if [[ ! -e "/run/netns/$ns" ]]; then
        echo "$h: not running (no network namespace $ns)"
        return 3
    fi
    holder="$(holder_pid "$h")"
    sshd="$(sshd_pid "$h")"
    if [[ -z "$holder" ]]; then
        echo "$h: down (namespace $ns, no host processes; infra/lab.sh up $h)"
        return 1
    fi
    if host_partitioned "$h"; then
        echo "$h: partitioned ($(addr_of "$h") drops all traffic; infra/lab.sh heal $h)"
        return 1
    fi
    if [[ -z "$sshd" ]] || ! ssh_probe "$h"; then
        echo "$h: holder pid $holder, but ssh $h fails (log $(dir_of "$h")/sshd.log)"
        return 1
    fi
    if ! hosts_bound "$h"; then
        echo "$h: its /etc/hosts is the machine's, not its own (the machine's was replaced); infra/lab.sh start repairs it"
        return 1
    fi
    echo "$h: running, $(addr_of "$h"), netns $ns, holder pid $holder, sshd pid $sshd"
}

cmd_status() {
    local hosts=("$@") h rc=0 absent=0 st
    ((${#hosts[@]})) || hosts=("${HOSTS[@]}")
    for h in "${hosts[@]}"; do
        host_index "$h" >/dev/null
        st=0
        host_status_line "$h" || st=$?
        if ((st == 3)); then absent=$((absent + 1)); elif ((st != 0)); then rc=1; fi
    done
    if ! ip link show dev "$BRIDGE" >/dev/null 2>&1; then
        echo "bridge $BRIDGE: missing"
        ((absent == ${#hosts[@]})) && return 3
        return 1
    fi
    if ((absent == ${#hosts[@]})); then
        rc=3
    elif ((absent > 0)); then
        rc=1
    fi
    return $rc
}

lab_python() {
    if [[ -n "${PXPOOL_INFRA_LAB_PYTHON:-}" ]]; then
        echo "$PXPOOL_INFRA_LAB_PYTHON"
    else
        python3 -c 'import sys; print(sys.executable)' 2>/dev/null || echo python3
    fi
}

cmd_env() {
    local h addrs=() nss=()
    for h in "${HOSTS[@]}"; do
        addrs+=("$(addr_of "$h")")
        nss+=("$(ns_of "$h")")
    done
    # Lists of plain names and addresses, in single quotes.
    printf "export PXPOOL_LAB_HOSTS='%s'\n" "${HOSTS[*]}"
    printf "export PXPOOL_LAB_ADDRS='%s'\n" "${addrs[*]}"
    printf "export PXPOOL_LAB_NETNS='%s'\n" "${nss[*]}"
    printf 'export PXPOOL_LAB_CLIENT_ADDR=%q\n' "$CLIENT_ADDR"
    printf 'export PXPOOL_LAB_CLIENT_NAME=%q\n' "$CLIENT_NAME"
    printf 'export PXPOOL_LAB_SSH_USER=%q\n' "$USER_NAME"
    printf 'export PXPOOL_LAB_SSH_KEY=%q\n' "$CLIENT_KEY"
    printf 'export PXPOOL_LAB_SSH_CONFIG=%q\n' "$SSH_CONFIG"
    printf 'export PXPOOL_LAB_SHARED_DIR=%q\n' "$SHARED"
    printf 'export PXPOOL_LAB_PYTHON=%q\n' "$(lab_python)"
    printf 'export PXPOOL_LAB_SCRIPT=%q\n' "$SELF"
}

# ---------------------------------------------------------------- faults

need_host_ns() { # host
    [[ -e "/run/netns/$(ns_of "$1")" ]] || die "$1 is not running (no network namespace $(ns_of "$1")); run infra/lab.sh start"
}

cmd_partition() {
    local h=$1 ns
    host_index "$h" >/dev/null
    need_host_ns "$h"
    ns="$(ns_of "$h")"
    # Every packet in or out of the host except on lo, i.e. all traffic to and from its lab
    # address, is dropped: connections to and from it time out (ARP still answers).
    nsenter --net="/run/netns/$ns" nft -f - <<EOF || die "$h: cannot load nftables table inet $PARTITION_TABLE in $ns"
table inet $PARTITION_TABLE
delete table inet $PARTITION_TABLE
table inet $PARTITION_TABLE {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "lo" accept
        drop
    }
    chain output {
        type filter hook output priority filter; policy accept;
        oifname "lo" accept
        drop
    }
}
EOF
    log "$h: partitioned (all traffic to and from $(addr_of "$h") dropped; infra/lab.sh heal $h)"
}

cmd_heal() {
    local h=$1 ns
    host_index "$h" >/dev/null
    need_host_ns "$h"
    ns="$(ns_of "$h")"
    if host_partitioned "$h"; then
        nsenter --net="/run/netns/$ns" nft delete table inet "$PARTITION_TABLE" ||
            die "$h: cannot delete nftables table inet $PARTITION_TABLE in $ns"
        log "$h: healed"
    else
        log "$h: not partitioned"
    fi
}

# A host going down is a power loss: every process on it is killed (SIGKILL, nothing
# runs its cleanup), its link goes down (connections to its address fail: "No route to
# host" once the neighbours forget it, which they are made to do at once), its private
# /tmp and /dev/shm are lost, and so is a partition (firewall rules do not survive).
cmd_down() {
    local h=$1 ns veth addr g
    host_index "$h" >/dev/null
    need_host_ns "$h"
    ns="$(ns_of "$h")"
    veth="$(veth_of "$h")"
    addr="$(addr_of "$h")"
    kill_host "$h" KILL 5
    nsenter --net="/run/netns/$ns" nft delete table inet "$PARTITION_TABLE" 2>/dev/null || true
    ip link set "$veth" down 2>/dev/null || true
    ip -n "$ns" link set eth0 down 2>/dev/null || true
    ip neigh flush to "$addr" dev "$BRIDGE" 2>/dev/null || true
    for g in "${HOSTS[@]}"; do
        [[ "$g" == "$h" || ! -e "/run/netns/$(ns_of "$g")" ]] || ip -n "$(ns_of "$g")" neigh flush to "$addr" 2>/dev/null || true
    done
    rm -f "$(dir_of "$h")/holder.pid" "$(dir_of "$h")/sshd.pid"
    log "$h: down (processes killed, link down); infra/lab.sh up $h boots it again"
}

# A host coming back up boots: link up, fresh /tmp and /dev/shm, its sshd. Only sshd:
# infra/slurm.sh start brings back a lab host's slurmd.
cmd_up() {
    local h=$1 ns veth
    host_index "$h" >/dev/null
    need_root_and_tools
    need_host_ns "$h"
    ns="$(ns_of "$h")"
    veth="$(veth_of "$h")"
    if [[ -n "$(holder_pid "$h")" ]] && ssh_probe "$h"; then
        log "$h: already up"
        return 0
    fi
    kill_host "$h" KILL 5
    ip link set "$veth" up || die "cannot set $veth up (run infra/lab.sh start)"
    ip -n "$ns" link set eth0 up || die "cannot set eth0 up in $ns"
    host_boot "$h"
}

cmd_exec() {
    local h=${1:-} holder
    host_index "$h" >/dev/null
    shift
    (($#)) || die "usage: $0 exec HOST COMMAND [ARG...]"
    holder="$(holder_pid "$h")"
    [[ -n "$holder" ]] || die "$h is not up (infra/lab.sh status)"
    exec nsenter --target "$holder" --net --uts --mount --root --wd -- "$@"
}

cmd_pids() {
    host_index "${1:-}" >/dev/null
    host_pids "$1"
}

# ---------------------------------------------------------------- check

CHECK_HEAL=""
check_cleanup() {
    if [[ -n "$CHECK_HEAL" ]]; then cmd_heal "$CHECK_HEAL" || true; fi
    if [[ -n "${CHECK_LISTENER:-}" ]]; then kill "$CHECK_LISTENER" 2>/dev/null || true; fi
}

cmd_check() {
    local t0=$SECONDS h g ns out want token python port lfd n=${#HOSTS[@]} i next
    cmd_status >/dev/null 2>&1 || {
        cmd_status >&2 || true
        die "the lab is not (all) up: see the status above; infra/lab.sh start repairs it"
    }
    trap check_cleanup EXIT
    python="$(lab_python)"
    # The lab's names on the machine; no route off the lab from any host.
    for h in "$CLIENT_NAME" "${HOSTS[@]}"; do
        want="$CLIENT_ADDR"
        [[ "$h" == "$CLIENT_NAME" ]] || want="$(addr_of "$h")"
        out="$(getent ahostsv4 "$h" | awk 'NR == 1 { print $1 }')"
        [[ "$out" == "$want" ]] || die "on the machine, $h resolves to '${out}', not $want ($ETC_HOSTS)"
    done
    for h in "${HOSTS[@]}"; do
        ns="$(ns_of "$h")"
        [[ -z "$(ip -n "$ns" route show default)" ]] || die "$h: has a default route: $(ip -n "$ns" route show default)"
        [[ "$(ip -n "$ns" -4 route show | awk '{print $1}' | sort -u | tr '\n' ' ')" == "$SUBNET " ]] ||
            die "$h: routes other than $SUBNET: $(ip -n "$ns" -4 route show | tr '\n' ';')"
    done
    # Inside the hosts the machine's own name is the client address too (SLURM names it).
    local names="$CLIENT_NAME" machine
    want="$CLIENT_ADDR"
    machine="$(machine_alias)"
    if [[ -n "$machine" ]]; then
        names+=" $machine"
        want+=" $CLIENT_ADDR"
    fi
    for g in "${HOSTS[@]}"; do
        names+=" $g"
        want+=" $(addr_of "$g")"
    done
    # Round 1, one ssh per host: its hostname; the lab's names as it resolves them; /tmp
    # and /dev/shm are tmpfs, a file is written in each; the machine's python imports pxpool.
    token="pxlab-check-$$-$RANDOM"
    for h in "${HOSTS[@]}"; do
        # shellcheck disable=SC2016 # $n and $1 are for the remote shell and awk
        out="$(ssh_host 30 "$h" 'hostname
            echo $(for n in '"$names"'; do getent ahostsv4 $n | awk "NR == 1 { print \$1 }"; done)
            echo $(stat -f -c %T /tmp) $(stat -f -c %T /dev/shm)
            echo '"$h"' >/tmp/'"$token-$h"' && echo '"$h"' >/dev/shm/'"$token-$h"' && echo written
            '"$python"' -c "import pxpool; print(\"pxpool\", pxpool.__name__)" 2>&1 | tail -n 3' 2>&1)" ||
            die "$h: ssh $h failed: $out"
        [[ "$(sed -n 1p <<<"$out")" == "$h" ]] || die "$h: ssh $h hostname printed '$(sed -n 1p <<<"$out")'"
        [[ "$(sed -n 2p <<<"$out")" == "$want" ]] ||
            die "$h: $names resolve to '$(sed -n 2p <<<"$out")' on $h, not '$want'"
        [[ "$(sed -n 3p <<<"$out")" == "tmpfs tmpfs" ]] ||
            die "$h: /tmp and /dev/shm should be tmpfs mounts of its own, are: $(sed -n 3p <<<"$out")"
        [[ "$(sed -n 4p <<<"$out")" == written ]] || die "$h: cannot write in /tmp or /dev/shm"
        [[ "$(sed -n 5p <<<"$out")" == "pxpool pxpool" ]] ||
            die "$h: $python -c 'import pxpool' failed over ssh: $(sed -n '5,$p' <<<"$out")"
    done
    log "check: hostnames, the lab's names, routes ok; $python imports pxpool on every host"
    # Round 2: a host sees only its own file in /tmp and /dev/shm (the machine none), reaches
    # the machine on $CLIENT_ADDR over TCP, and the next host's sshd.
    exec {lfd}< <(exec "$python" -c '
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(8); s.settimeout(30)
print(s.getsockname()[1], flush=True)
for _ in range(int(sys.argv[2])):
    c, _ = s.accept(); c.sendall(b"pxlab0-ok\n"); c.close()
' "$CLIENT_ADDR" "$n")
    CHECK_LISTENER=$!
    read -r -t 10 port <&"$lfd" || die "could not listen on $CLIENT_ADDR ($python socket)"
    for ((i = 0; i < n; i++)); do
        h="${HOSTS[$i]}"
        next="${HOSTS[$(((i + 1) % n))]}"
        # shellcheck disable=SC2016 # for the remote shell
        out="$(ssh_host 15 "$h" 'echo $(ls /tmp/'"$token"'-* /dev/shm/'"$token"'-* 2>/dev/null); rm -f /tmp/'"$token"'-* /dev/shm/'"$token"'-*
            exec 3<>/dev/tcp/'"$CLIENT_ADDR/$port"' && head -n1 <&3
            exec 4<>/dev/tcp/'"$next"'/22 && head -c 7 <&4; echo' 2>&1)" || true
        [[ "$(sed -n 1p <<<"$out")" == "/dev/shm/$token-$h /tmp/$token-$h" ]] ||
            die "$h: expected to see only its own files in /tmp and /dev/shm, saw: '$(sed -n 1p <<<"$out")'"
        [[ "$(sed -n '2,$p' <<<"$out")" == $'pxlab0-ok\nSSH-2.0' ]] ||
            die "$h: TCP to $CLIENT_ADDR:$port and to $next:22 failed: $(sed -n '2,$p' <<<"$out")"
    done
    exec {lfd}<&-
    if compgen -G "/tmp/$token-*" >/dev/null || compgen -G "/dev/shm/$token-*" >/dev/null; then
        die "files written in a lab host's /tmp or /dev/shm appeared on the machine"
    fi
    log "check: /tmp and /dev/shm are private to each host; every host reaches $CLIENT_ADDR and its neighbour over TCP"
    # nftables inside a namespace: a partition blocks traffic, healing restores it.
    h="${HOSTS[-1]}"
    g="${HOSTS[0]}"
    CHECK_HEAL="$h"
    cmd_partition "$h" 2>/dev/null
    if tcp_open "$(addr_of "$h")" 22 1; then die "$h is partitioned but the machine still connects to $(addr_of "$h"):22"; fi
    if ssh_host 10 "$g" "timeout 1 bash -c 'exec 3<>/dev/tcp/$h/22'" 2>/dev/null; then
        die "$h is partitioned but $g still connects to $h:22"
    fi
    cmd_heal "$h" 2>/dev/null
    CHECK_HEAL=""
    tcp_open "$(addr_of "$h")" 22 5 || die "$h was healed but the machine cannot connect to $(addr_of "$h"):22"
    ssh_probe "$h" || die "$h was healed but ssh $h fails"
    log "check: a partition of $h blocked TCP from the machine and from $g; heal restored it"
    log "check: ok in $((SECONDS - t0))s"
}

usage() {
    echo "usage: $0 start|stop|status [HOST...]|env|check" >&2
    echo "       $0 partition|heal|down|up|pids HOST" >&2
    echo "       $0 exec HOST COMMAND [ARG...]" >&2
    echo "hosts: ${HOSTS[*]}" >&2
    exit 2
}

cmd="${1:-}"
(($#)) && shift
case "$cmd" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status "$@" ;;
env) cmd_env ;;
check) cmd_check ;;
partition | heal | down | up | pids)
    (($# == 1)) || usage
    "cmd_$cmd" "$1"
    ;;
exec) cmd_exec "$@" ;;
_boot) cmd_boot "$@" ;;
*) usage ;;
esac
