#!/usr/bin/env bash
# A one-machine SLURM (22.05, Debian 12) for the pxpool batch-launcher tests.
#   infra/slurm.sh start|stop|status|env
# Writes /etc/slurm/slurm.conf, starts munged (unless one already works),
# slurmctld and slurmd, waits for the node to be idle and runs a probe job.
# Logs and pid files live in $PXPOOL_INFRA_DIR/slurm (default /tmp/pxpool-infra/slurm).
set -euo pipefail

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

# ---------------------------------------------------------------- slurm.conf

real_memory_mb() {
    local kb
    kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    echo $((kb * 9 / 10 / 1024))
}

render_conf() {
    local mem
    mem="$(real_memory_mb)"
    cat <<EOF
# Written by infra/slurm.sh (pxpool test cluster). Rewritten on every start.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
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
SlurmdSpoolDir=$SLURMD_SPOOL
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
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# ---------------------------------------------------------------- readiness

node_state() { timeout 10 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1; }

wait_idle() {
    local deadline=$((SECONDS + READY_TIMEOUT)) st resumed=0
    LAST_LOG="$CTLD_LOG $SLURMD_LOG"
    local t0=$SECONDS
    while :; do
        if ((SECONDS - t0 >= 3)); then
            [[ -n "$(live_pid "$CTLD_PID" slurmctld)" ]] || die "slurmctld is no longer running"
            [[ -n "$(live_pid "$SLURMD_PID" slurmd)" ]] || die "slurmd is not running (it exited after starting)"
        fi
        st="$(node_state || true)"
        case "$st" in
        idle | mix | alloc) return 0 ;;
        down | drain | drng | fail | failg | inval | down\* | drain\* | fail\*)
            if ((resumed < 3)); then
                log "node $NODE is '$st'; resuming it"
                timeout 10 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                resumed=$((resumed + 1))
            fi
            ;;
        esac
        if ((SECONDS >= deadline)); then
            timeout 10 sinfo -N -l >&2 2>&1 || true
            timeout 10 scontrol show node "$NODE" >&2 2>&1 || true
            die "node $NODE not idle within ${READY_TIMEOUT}s (last state '${st:-no answer from slurmctld}')"
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
    local conf_new
    conf_new="$(render_conf)"
    if daemons_running && munge_works; then
        if [[ -f "$CONF" && "$(cat "$CONF")" == "$conf_new" ]] &&
            [[ "$(node_state || true)" =~ ^(idle|mix|alloc)$ ]]; then
            log "already running (slurmctld $(live_pid "$CTLD_PID" slurmctld), slurmd $(live_pid "$SLURMD_PID" slurmd), node $NODE $(node_state))"
            probe_job
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
    # Job steps that survived scancel keep running without slurmd: end them and
    # what they run. Ours are the slurmstepd processes writing to our slurmd log.
    local s t
    for s in $(our_stepds); do
        t="$(descendants "$s" | tr '\n' ' ')"
        log "stopping leftover slurmstepd pid $s${t:+ and its processes: $t}"
        # shellcheck disable=SC2086
        kill -KILL "$s" $t 2>/dev/null || true
    done
    stop_pid slurmctld "$ctld"
    rm -f "$CTLD_PID" "$SLURMD_PID"
}

cmd_stop() {
    if [[ -z "$(live_pid "$CTLD_PID" slurmctld)$(live_pid "$SLURMD_PID" slurmd)" && ! -f "$MUNGE_OURS" ]]; then
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
