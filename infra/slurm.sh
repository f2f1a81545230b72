#!/usr/bin/env bash
# A one-machine SLURM (22.05, Debian 12) for the pxpool batch-launcher tests.
#   infra/slurm.sh start|stop|status|env
# Writes /etc/slurm/slurm.conf, starts munged (unless one already works),
# slurmctld and slurmd, waits for the node to be idle and runs a probe job.
# When the lab of infra/lab.sh is running, two more nodes run on its hosts pxlab2 and
# pxlab3 (one slurmd in each host's namespaces), in a partition of their own, "lab".
# Logs and pid files live in $PXPOOL_INFRA_DIR/slurm (default /tmp/pxpool-infra/slurm).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

INFRA_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
STATE="$INFRA_DIR/slurm"
PARTITION=debug
CLUSTER=pxpool
NODE_CPUS="${PXPOOL_INFRA_SLURM_CPUS:-8}"
CONF=/etc/slurm/slurm.conf
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
CTLD_LOG="$STATE/slurmctld.log"
SLURMD_LOG="$STATE/slurmd.log"
CTLD_PID="$STATE/slurmctld.pid"
SLURMD_PID="$STATE/slurmd.pid"
MUNGE_LOG="$STATE/munged.log"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_SYS_PID="$MUNGE_RUN/munged.pid"
MUNGE_OURS="$STATE/munged.ours" # holds the pid of a munged this script started
PROBE_OUT="$STATE/probe.out"
READY_TIMEOUT="${PXPOOL_INFRA_SLURM_TIMEOUT:-60}"
PROBE_TIMEOUT=30
# The lab nodes: auto = when infra/lab.sh's hosts are running, 1 = required, 0 = never.
LAB="$HERE/lab.sh"
LAB_MODE="${PXPOOL_INFRA_SLURM_LAB:-auto}"
LAB_PARTITION=lab
LAB_NODES=(pxlab2 pxlab3)
LAB_CPUS="${PXPOOL_INFRA_SLURM_LAB_CPUS:-4}"
WITH_LAB=0
LAB_ADDRS=()   # of LAB_NODES, from infra/lab.sh env
LAB_LOG_DIR="" # lab slurmd logs and the lab probe job's output, in the lab's shared directory

LAST_LOG="$CTLD_LOG"

log() { echo "infra: slurm: $*" >&2; }
die() {
    echo "infra: slurm: ERROR: $*" >&2
    local f
    for f in ${LAST_LOG}; do
        if [[ -s "$f" ]]; then
            echo "infra: slurm: last lines of $f:" >&2
            tail -n 25 "$f" >&2 || true
        else
            echo "infra: slurm: (log $f is empty or missing)" >&2
        fi
    done
    exit 1
}

hostname_short() { hostname -s 2>/dev/null || hostname | cut -d. -f1; }
NODE="$(hostname_short)"

# Prints pid if the pid file names a live process whose command is $2, else nothing.
live_pid() { # pidfile comm
    [[ -f "$1" ]] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$1")"
    if [[ -n "$pid" && -r "/proc/$pid/comm" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]; then
        echo "$pid"
    fi
}

wait_gone() { # pid seconds
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

stop_pid() { # name pid
    local name=$1 pid=$2
    [[ -n "$pid" ]] || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 15; then
        log "$name pid $pid still alive 15s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || die "$name pid $pid still alive after SIGKILL"
    fi
}

# ---------------------------------------------------------------- munge

munge_works() { timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        log "munged already answering"
        return 0
    fi
    getent passwd munge >/dev/null || die "user munge missing; run infra/install.sh"
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge /etc/munge
    if [[ ! -s "$MUNGE_KEY" ]]; then
        log "creating $MUNGE_KEY"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    # A dead munged may have left its socket and pid file behind.
    rm -f "$MUNGE_RUN/munge.socket.2" "$MUNGE_RUN/munge.socket.2.lock" "$MUNGE_SYS_PID"
    : >"$MUNGE_LOG"
    chown munge:munge "$MUNGE_LOG"
    log "starting munged as user munge (log $MUNGE_LOG)"
    LAST_LOG="$MUNGE_LOG"
    runuser -u munge -- /usr/sbin/munged --log-file="$MUNGE_LOG" \
        --pid-file="$MUNGE_SYS_PID" --key-file="$MUNGE_KEY" ||
        die "munged failed to start"
    local deadline=$((SECONDS + 10))
    until munge_works; do
        ((SECONDS < deadline)) || die "munged does not answer (munge -n | unmunge) within 10s"
        sleep 0.2
    done
    local pid
    pid="$(live_pid "$MUNGE_SYS_PID" munged)"
    [[ -n "$pid" ]] && echo "$pid" >"$MUNGE_OURS"
    log "munged ready (pid ${pid:-?})"
}

stop_munge() {
    [[ -f "$MUNGE_OURS" ]] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$MUNGE_OURS")"
    if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == munged ]]; then
        stop_pid munged "$pid"
    fi
    rm -f "$MUNGE_OURS"
}

# ---------------------------------------------------------------- the lab nodes

# Reads the lab's names and paths from infra/lab.sh env (the lab need not be running).
load_lab() {
    [[ -z "$LAB_LOG_DIR" ]] || return 0
    [[ -x "$LAB" ]] || return 1
    local env_lines hosts addrs shared i j
    env_lines="$("$LAB" env 2>/dev/null)" || return 1
    # The values are shell-quoted: evaluated into local variables only.
    eval "hosts=$(sed -n 's/^export PXPOOL_LAB_HOSTS=//p' <<<"$env_lines")"
    eval "addrs=$(sed -n 's/^export PXPOOL_LAB_ADDRS=//p' <<<"$env_lines")"
    eval "shared=$(sed -n 's/^export PXPOOL_LAB_SHARED_DIR=//p' <<<"$env_lines")"
    [[ -n "$hosts" && -n "$addrs" && -n "$shared" ]] || return 1
    LAB_LOG_DIR="$shared/slurm"
    read -r -a hosts <<<"$hosts"
    read -r -a addrs <<<"$addrs"
    LAB_ADDRS=()
    for i in "${!LAB_NODES[@]}"; do
        for j in "${!hosts[@]}"; do
            [[ "${hosts[$j]}" != "${LAB_NODES[$i]}" ]] || LAB_ADDRS[i]="${addrs[$j]}"
        done
        [[ -n "${LAB_ADDRS[$i]:-}" ]] || LAST_LOG="" die "infra/lab.sh has no host ${LAB_NODES[$i]}"
    done
}

# Sets WITH_LAB: whether slurm.conf gets the lab nodes.
decide_lab() {
    WITH_LAB=0
    case "$LAB_MODE" in
    0) return 0 ;;
    auto | 1) ;;
    *) LAST_LOG="" die "PXPOOL_INFRA_SLURM_LAB must be auto, 0 or 1 (is '$LAB_MODE')" ;;
    esac
    if load_lab && "$LAB" status "${LAB_NODES[@]}" >/dev/null 2>&1; then
        # slurm.conf then names the controller without an address: the machine resolves
        # its own name as always, each lab host to the lab's bridge address.
        getent ahostsv4 "$NODE" >/dev/null ||
            LAST_LOG="" die "$NODE (this machine's name: SlurmctldHost when the lab nodes are in) does not resolve here"
        WITH_LAB=1
    elif [[ "$LAB_MODE" == 1 ]]; then
        "$LAB" status "${LAB_NODES[@]}" >&2 || true
        LAST_LOG="" die "PXPOOL_INFRA_SLURM_LAB=1 but lab hosts ${LAB_NODES[*]} are not running; run infra/lab.sh start first"
    fi
}

# The slurmd of lab node $1 (running in that lab host's namespaces), if any.
lab_slurmd_pid() {
    [[ -x "$LAB" ]] || return 0
    local p
    for p in $("$LAB" pids "$1" 2>/dev/null); do
        if [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == slurmd ]]; then
            echo "$p"
            return 0
        fi
    done
}

lab_slurmd_running() { [[ -n "$(lab_slurmd_pid "$1")" ]]; }

lab_slurmds() {
    local n
    for n in "${LAB_NODES[@]}"; do lab_slurmd_pid "$n"; done
}

lab_stepds() { # the slurmstepd processes on the lab hosts
    [[ -x "$LAB" ]] || return 0
    local n p
    for n in "${LAB_NODES[@]}"; do
        for p in $("$LAB" pids "$n" 2>/dev/null); do
            [[ "$(cat "/proc/$p/comm" 2>/dev/null)" != slurmstepd ]] || echo "$p"
        done
    done
}

start_lab_slurmd() { # node
    local n=$1 log="$LAB_LOG_DIR/$1-slurmd.log"
    mkdir -p "$LAB_LOG_DIR"
    : >"$log"
    LAST_LOG="$log"
    log "starting slurmd -N $n inside lab host $n (log $log)"
    # Its pid file ($SLURMD_PID) goes to the host's own /tmp.
    "$LAB" exec "$n" mkdir -p "$STATE" || die "cannot run a command on lab host $n (infra/lab.sh exec)"
    "$LAB" exec "$n" slurmd -c -f "$CONF" -N "$n" -L "$log" || die "slurmd of lab node $n failed to start"
}

start_lab_nodes() { # starts the lab slurmds not running, waits for the nodes, runs the lab probe
    local n
    for n in "${LAB_NODES[@]}"; do
        lab_slurmd_running "$n" || start_lab_slurmd "$n"
    done
    for n in "${LAB_NODES[@]}"; do
        wait_idle "$n" lab_slurmd_running "$CTLD_LOG $LAB_LOG_DIR/$n-slurmd.log"
    done
    log "lab nodes ${LAB_NODES[*]} are idle (partition $LAB_PARTITION, $LAB_CPUS CPUs each)"
    lab_probe_job
}

# A job of 2 nodes on the lab partition: one task on each lab node names its host.
lab_probe_job() {
    local out="$LAB_LOG_DIR/lab-probe.out" jobid deadline=$((SECONDS + PROBE_TIMEOUT)) want got n=0
    rm -f "$out"
    LAST_LOG="$CTLD_LOG $out"
    jobid="$(timeout 15 sbatch --parsable -J pxpool-lab-probe -p "$LAB_PARTITION" -N "${#LAB_NODES[@]}" \
        --ntasks-per-node=1 -t 1 -D "$LAB_LOG_DIR" -o "$out" \
        --wrap "srun -N ${#LAB_NODES[@]} --ntasks-per-node=1 hostname")" ||
        die "sbatch of the lab probe job failed"
    jobid="${jobid%%;*}"
    while timeout 10 squeue -h -j "$jobid" 2>/dev/null | grep -q .; do
        if ((SECONDS >= deadline)); then
            timeout 10 scontrol show job "$jobid" >&2 2>&1 || true
            timeout 10 scancel "$jobid" 2>/dev/null || true
            die "lab probe job $jobid did not finish within ${PROBE_TIMEOUT}s"
        fi
        sleep 0.3
    done
    want="$(printf '%s\n' "${LAB_NODES[@]}" | sort | tr '\n' ' ')"
    # The batch step may have finished a moment before its output is flushed.
    while got="$(sort "$out" 2>/dev/null | tr '\n' ' ')" && [[ "$got" != "$want" ]] && ((n < 20)); do
        sleep 0.1
        n=$((n + 1))
    done
    [[ "$got" == "$want" ]] ||
        die "lab probe job $jobid: 'srun -N ${#LAB_NODES[@]}' printed '$got', not one line per lab node ('$want'; see $out)"
    log "lab probe job $jobid ran one task on each of ${LAB_NODES[*]}"
}

# ---------------------------------------------------------------- slurm.conf

real_memory_mb() {
    local kb
    kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    echo $((kb * 9 / 10 / 1024))
}

render_conf() {
    local mem ctld_host="$NODE(127.0.0.1)" spool="$SLURMD_SPOOL" nodes=ALL
    mem="$(real_memory_mb)"
    if ((WITH_LAB)); then
        # Each host resolves the controller's name itself; each node has a spool of its own.
        ctld_host="$NODE" spool="$SLURMD_SPOOL/%n" nodes="$NODE"
    fi
    cat <<EOF
# Written by infra/slurm.sh (pxpool test cluster). Rewritten on every start.
ClusterName=$CLUSTER
SlurmctldHost=$ctld_host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / NODE_CPUS))
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
KillWait=5
MinJobAge=5
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$NODE_CPUS RealMemory=$mem State=UNKNOWN
EOF
    local i lab_nodes
    if ((WITH_LAB)); then
        for i in "${!LAB_NODES[@]}"; do
            echo "NodeName=${LAB_NODES[$i]} NodeAddr=${LAB_ADDRS[$i]} NodeHostname=${LAB_NODES[$i]} CPUs=$LAB_CPUS RealMemory=$((mem * LAB_CPUS / NODE_CPUS)) State=UNKNOWN"
        done
    fi
    echo "PartitionName=$PARTITION Nodes=$nodes Default=YES MaxTime=INFINITE State=UP"
    if ((WITH_LAB)); then
        lab_nodes="${LAB_NODES[*]}"
        echo "PartitionName=$LAB_PARTITION Nodes=${lab_nodes// /,} Default=NO MaxTime=INFINITE State=UP"
    fi
}

# ---------------------------------------------------------------- readiness

node_state() { timeout 10 sinfo -h -n "${1:-$NODE}" -o %t 2>/dev/null | head -n1; }

local_slurmd_running() { [[ -n "$(live_pid "$SLURMD_PID" slurmd)" ]]; }

wait_idle() { # [node [function telling whether its slurmd runs [logs to show on failure]]]
    local node=${1:-$NODE} running=${2:-local_slurmd_running}
    local deadline=$((SECONDS + READY_TIMEOUT)) st resumed=0
    LAST_LOG="${3:-$CTLD_LOG $SLURMD_LOG}"
    local t0=$SECONDS
    while :; do
        if ((SECONDS - t0 >= 3)); then
            [[ -n "$(live_pid "$CTLD_PID" slurmctld)" ]] || die "slurmctld is no longer running"
            "$running" "$node" || die "slurmd of node $node is not running (it exited after starting)"
        fi
        st="$(node_state "$node" || true)"
        case "$st" in
        idle | mix | alloc) return 0 ;;
        down | drain | drng | fail | failg | inval | down\* | drain\* | fail\*)
            if ((resumed < 3)); then
                log "node $node is '$st'; resuming it"
                timeout 10 scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
                resumed=$((resumed + 1))
            fi
            ;;
        esac
        if ((SECONDS >= deadline)); then
            timeout 10 sinfo -N -l >&2 2>&1 || true
            timeout 10 scontrol show node "$node" >&2 2>&1 || true
            die "node $node not idle within ${READY_TIMEOUT}s (last state '${st:-no answer from slurmctld}')"
        fi
        sleep 0.5
    done
}

probe_job() {
    rm -f "$PROBE_OUT"
    local jobid deadline=$((SECONDS + PROBE_TIMEOUT))
    LAST_LOG="$CTLD_LOG $SLURMD_LOG $PROBE_OUT"
    # shellcheck disable=SC2016 # $(hostname) is for the job's shell
    jobid="$(timeout 15 sbatch --parsable -J pxpool-probe -p "$PARTITION" -n 2 -t 1 \
        -o "$PROBE_OUT" --wrap 'echo probe-batch $(hostname); srun -n 2 echo probe-step')" ||
        die "sbatch of the probe job failed"
    jobid="${jobid%%;*}"
    while timeout 10 squeue -h -j "$jobid" 2>/dev/null | grep -q .; do
        if ((SECONDS >= deadline)); then
            timeout 10 scontrol show job "$jobid" >&2 2>&1 || true
            timeout 10 scancel "$jobid" 2>/dev/null || true
            die "probe job $jobid (sbatch + srun) did not finish within ${PROBE_TIMEOUT}s"
        fi
        sleep 0.3
    done
    # The batch step may have finished a moment before its output is flushed.
    local n=0
    while ((n < 20)) && [[ "$(grep -c '^probe-step$' "$PROBE_OUT" 2>/dev/null || true)" != 2 ]]; do
        sleep 0.1
        n=$((n + 1))
    done
    grep -q '^probe-batch ' "$PROBE_OUT" 2>/dev/null || die "probe job $jobid ran no batch script (see $PROBE_OUT)"
    [[ "$(grep -c '^probe-step$' "$PROBE_OUT")" == 2 ]] ||
        die "probe job $jobid: 'srun -n 2' inside the batch job did not run 2 tasks (see $PROBE_OUT)"
    log "probe job $jobid ran (sbatch + srun -n 2)"
}

# ---------------------------------------------------------------- commands

daemons_running() {
    [[ -n "$(live_pid "$CTLD_PID" slurmctld)" && -n "$(live_pid "$SLURMD_PID" slurmd)" ]]
}

cmd_start() {
    local b
    for b in slurmctld slurmd sbatch srun sinfo munged; do
        command -v "$b" >/dev/null || [[ -x "/usr/sbin/$b" ]] || die "$b not found; run infra/install.sh first"
    done
    mkdir -p "$STATE"
    decide_lab
    local conf_new
    conf_new="$(render_conf)"
    if daemons_running && munge_works; then
        if [[ -f "$CONF" && "$(cat "$CONF")" == "$conf_new" ]] &&
            [[ "$(node_state || true)" =~ ^(idle|mix|alloc)$ ]]; then
            log "already running (slurmctld $(live_pid "$CTLD_PID" slurmctld), slurmd $(live_pid "$SLURMD_PID" slurmd), node $NODE $(node_state))"
            probe_job
            if ((WITH_LAB)); then start_lab_nodes; fi
            return 0
        fi
        log "running but config or node state differs; restarting"
    fi
    stop_daemons
    local port
    for port in 6817 6818; do
        if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
            if command -v ss >/dev/null; then ss -ltnp "sport = :$port" >&2 2>/dev/null || true; fi
            LAST_LOG="" die "port $port (slurmctld 6817, slurmd 6818) is already in use by another process"
        fi
    done
    start_munge
    mkdir -p /etc/slurm
    printf '%s\n' "$conf_new" >"$CONF"
    chmod 0644 "$CONF"
    # Cold start: nothing from an earlier run (jobs, node state, cluster name) is reused.
    rm -rf "$CTLD_SPOOL" "$SLURMD_SPOOL"
    install -d -m 0755 "$CTLD_SPOOL" "$SLURMD_SPOOL"
    if ((WITH_LAB)); then
        local n
        for n in "$NODE" "${LAB_NODES[@]}"; do install -d -m 0755 "$SLURMD_SPOOL/$n"; done
    fi
    : >"$CTLD_LOG"
    : >"$SLURMD_LOG"
    rm -f "$CTLD_PID" "$SLURMD_PID"

    log "starting slurmctld (log $CTLD_LOG)"
    LAST_LOG="$CTLD_LOG"
    slurmctld -c -f "$CONF" >>"$CTLD_LOG" 2>&1 || die "slurmctld failed to start"
    local t0=$SECONDS
    until timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; do
        if ((SECONDS - t0 >= 3)) && [[ -z "$(live_pid "$CTLD_PID" slurmctld)" ]]; then
            die "slurmctld exited right after starting"
        fi
        ((SECONDS - t0 < 20)) || die "slurmctld does not answer 'scontrol ping' within 20s"
        sleep 0.3
    done

    log "starting slurmd on node $NODE (log $SLURMD_LOG)"
    LAST_LOG="$SLURMD_LOG"
    slurmd -c -f "$CONF" >>"$SLURMD_LOG" 2>&1 || die "slurmd failed to start"
    wait_idle
    log "node $NODE is $(node_state) (partition $PARTITION, $NODE_CPUS CPUs)"
    probe_job
    if ((WITH_LAB)); then start_lab_nodes; fi
}

descendants() { # pid: prints all descendant pids
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
        echo "$c"
        descendants "$c"
    done
}

our_stepds() {
    local d pid
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        [[ "$(cat "$d/comm" 2>/dev/null)" == slurmstepd ]] || continue
        if find "$d/fd" -mindepth 1 -maxdepth 1 -lname "$SLURMD_LOG" -print -quit 2>/dev/null | grep -q .; then
            echo "$pid"
        fi
    done
}

stop_daemons() {
    local ctld slurmd_pid
    ctld="$(live_pid "$CTLD_PID" slurmctld)"
    slurmd_pid="$(live_pid "$SLURMD_PID" slurmd)"
    if [[ -n "$ctld" ]]; then
        if timeout 10 squeue -h -o %i 2>/dev/null | grep -q .; then
            log "cancelling all jobs"
            timeout 10 scancel --full --user=root 2>/dev/null || true
            timeout 10 scancel --full 2>/dev/null || true
            local deadline=$((SECONDS + 20))
            while timeout 10 squeue -h -o %i 2>/dev/null | grep -q .; do
                if ((SECONDS >= deadline)); then
                    log "jobs still listed 20s after scancel; stopping daemons anyway"
                    break
                fi
                sleep 0.5
            done
        fi
    fi
    stop_pid slurmd "$slurmd_pid"
    local n
    for n in "${LAB_NODES[@]}"; do stop_pid "slurmd of lab node $n" "$(lab_slurmd_pid "$n")"; done
    # Job steps that survived scancel keep running without slurmd: end them and
    # what they run. Ours are the slurmstepd processes writing to our slurmd log,
    # and those on the lab hosts.
    local s t
    for s in $(our_stepds) $(lab_stepds); do
        t="$(descendants "$s" | tr '\n' ' ')"
        log "stopping leftover slurmstepd pid $s${t:+ and its processes: $t}"
        # shellcheck disable=SC2086
        kill -KILL "$s" $t 2>/dev/null || true
    done
    stop_pid slurmctld "$ctld"
    rm -f "$CTLD_PID" "$SLURMD_PID"
}

cmd_stop() {
    if [[ -z "$(live_pid "$CTLD_PID" slurmctld)$(live_pid "$SLURMD_PID" slurmd)$(lab_slurmds)" && ! -f "$MUNGE_OURS" ]]; then
        log "not running"
        return 0
    fi
    stop_daemons
    stop_munge
    log "stopped"
}

cmd_status() {
    local ctld slurmd_pid rc=0
    ctld="$(live_pid "$CTLD_PID" slurmctld)"
    slurmd_pid="$(live_pid "$SLURMD_PID" slurmd)"
    if [[ -n "$ctld" ]]; then echo "slurmctld: running, pid $ctld"; else echo "slurmctld: not running"; fi
    if [[ -n "$slurmd_pid" ]]; then echo "slurmd:    running, pid $slurmd_pid"; else echo "slurmd:    not running"; fi
    local n p
    for n in "${LAB_NODES[@]}"; do
        p="$(lab_slurmd_pid "$n")"
        if [[ -n "$p" ]]; then echo "slurmd $n: running in lab host $n, pid $p"; fi
    done
    if munge_works; then echo "munged:    answering"; else echo "munged:    not answering"; fi
    if [[ -n "$ctld" ]]; then
        timeout 10 sinfo || rc=1
        timeout 10 squeue || rc=1
    fi
    [[ -n "$ctld" && -n "$slurmd_pid" ]] || rc=3
    return $rc
}

cmd_env() {
    printf 'export PXPOOL_TEST_SLURM_PARTITION=%q\n' "$PARTITION"
    printf 'export PXPOOL_TEST_SLURM_LAB_PARTITION=%q\n' "$LAB_PARTITION"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
