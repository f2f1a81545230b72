#!/usr/bin/env bash
# A one-machine Son of Grid Engine (8.1.9, Debian 12) for the pxpool SGE tests.
#   infra/sge.sh install|start|stop|status|env|check
# install: gridengine-master/-exec/-client with a debconf preseed, no daemons started.
# start:   cold start (fresh spool from the package's init_cluster), then sge_qmaster,
#          the configuration (root jobs, 1 s scheduling, queue all.q without load
#          thresholds, PE smp) and sge_execd, by hand; waits until the queue takes jobs.
# check:   a probe job must run within 30 s.
# Logs and scratch files live in $PXPOOL_INFRA_DIR/sge (default /tmp/pxpool-infra/sge).
set -euo pipefail

INFRA_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
STATE="$INFRA_DIR/sge"
LOG="$STATE/sge.log"
PACKAGES=(gridengine-master gridengine-exec gridengine-client)
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
COMMON="$SGE_ROOT/$SGE_CELL/common"
SPOOL=/var/spool/gridengine
QMASTER_PID="$SPOOL/qmaster/qmaster.pid"
QMASTER_LOG="$SPOOL/qmaster/messages"
ADMIN=sgeadmin
QUEUE=all.q
PE=smp
SLOTS="${PXPOOL_INFRA_SGE_SLOTS:-8}"
READY_TIMEOUT="${PXPOOL_INFRA_SGE_TIMEOUT:-30}"
PROBE_TIMEOUT=30
PROBE_OUT="$STATE/probe.out"
# the client wrappers in /usr/bin; PBS commands elsewhere on PATH must not shadow them
QSUB=/usr/bin/qsub QSTAT=/usr/bin/qstat QDEL=/usr/bin/qdel QCONF=/usr/bin/qconf

log() { echo "infra: sge: $*" >&2; }
die() {
    echo "infra: sge: ERROR: $*" >&2
    local f
    for f in "$LOG" "$QMASTER_LOG" "$SPOOL"/execd/*/messages; do
        if [[ -s "$f" ]]; then
            echo "infra: sge: last lines of $f:" >&2
            tail -n 20 "$f" >&2 || true
        fi
    done
    exit 1
}

HOST="$(hostname -s 2>/dev/null || hostname | cut -d. -f1)"

installed() { [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]; }

# Prints the pid if the pid file names a live process whose command is $2, else nothing.
live_pid() { # pidfile comm
    local file pid
    for file in $1; do
        [[ -f "$file" ]] || continue
        pid="$(tr -dc '0-9' <"$file")"
        if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]; then
            echo "$pid"
            return 0
        fi
    done
}
qmaster_pid() { live_pid "$QMASTER_PID" sge_qmaster; }
execd_pid() { live_pid "$SPOOL/execd/*/execd.pid" sge_execd; }

wait_gone() { # pid seconds
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

kill_pid() { # name pid [grace]: SIGTERM, then SIGKILL after grace seconds (default 10)
    local name=$1 pid=$2 grace=${3:-10}
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$grace"; then
        log "$name pid $pid still alive ${grace}s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || die "$name pid $pid still alive after SIGKILL"
    fi
}

q() { timeout 15 "$@" 2>>"$LOG"; } # a client command with a bounded wait, errors to the log

# ---------------------------------------------------------------- install

POLICY=/usr/sbin/policy-rc.d
OUR_POLICY=0
cleanup() { if [[ $OUR_POLICY -eq 1 ]]; then rm -f "$POLICY"; fi; }

cmd_install() {
    mkdir -p "$STATE"
    LOG="$STATE/install.log"
    local missing=() p
    for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
    if ((${#missing[@]} == 0)); then
        log "gridengine packages already installed"
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "must run as root to install: ${missing[*]}"
    # Configure the cluster at install time (the master is this host, cell "default").
    debconf-set-selections <<EOF || die "debconf-set-selections failed"
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string $SGE_CELL
gridengine-common shared/gridenginemaster string $HOST
EOF
    # The postinst scripts would start sge_qmaster/sge_execd through init.d: this script
    # starts its own, so forbid that for the install unless a policy is already in place.
    if [[ ! -e "$POLICY" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY"
        chmod 0755 "$POLICY"
        OUR_POLICY=1
        trap cleanup EXIT
    fi
    log "apt-get install ${missing[*]} (log $LOG)"
    local apt=(apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=120
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}")
    if ! DEBIAN_FRONTEND=noninteractive timeout 600 "${apt[@]}" >>"$LOG" 2>&1; then
        log "install failed; apt-get update and one retry"
        timeout 300 apt-get update >>"$LOG" 2>&1 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive timeout 600 "${apt[@]}" >>"$LOG" 2>&1 ||
            die "apt-get install ${missing[*]} failed"
    fi
    for p in "${PACKAGES[@]}"; do installed "$p" || die "$p still not installed after apt-get"; done
    log "installed ${missing[*]}"
}

# ---------------------------------------------------------------- start

queue_ready() { # the queue instance on this host exists and has no state flags (u, a, d, E)
    local line
    line="$(q "$QSTAT" -f -q "$QUEUE" | grep -E "^$QUEUE@" | head -n 1)" || return 1
    [[ -n "$line" ]] || return 1
    # columns: queuename qtype resv/used/tot. load_avg arch [states]
    [[ "$(awk '{print NF}' <<<"$line")" -eq 5 && "$line" != *-NA-* ]]
}

fresh_spool() {
    # A cold start: no jobs or settings survive from an earlier run.
    rm -rf "$SPOOL"/spooldb "$SPOOL"/qmaster "$SPOOL"/execd
    local d
    for d in "$SPOOL/qmaster/job_scripts" "$SPOOL/spooldb" "$SPOOL/execd"; do
        mkdir -p "$d"
    done
    chown -R "$ADMIN:$ADMIN" "$SPOOL/qmaster" "$SPOOL/spooldb" "$SPOOL/execd"
    # made by gridengine-common's postinst only when debconf said to configure a cell
    mkdir -p "$COMMON"
    chown "$ADMIN:$ADMIN" "$SGE_ROOT/$SGE_CELL" "$COMMON"
    [[ -f "$COMMON/bootstrap" ]] ||
        install -m0644 -o "$ADMIN" -g "$ADMIN" /usr/share/gridengine/default-bootstrap "$COMMON/bootstrap"
    su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SPOOL/spooldb $ADMIN" \
        "$ADMIN" >>"$LOG" 2>&1 || die "init_cluster failed"
    echo "$HOST" >"$COMMON/act_qmaster"
    # Connections from 127.0.0.1 resolve to "localhost": make it the same host as $HOST.
    if [[ "$HOST" != localhost ]]; then
        echo "$HOST localhost" >"$COMMON/host_aliases"
    fi
    chown "$ADMIN:$ADMIN" "$COMMON/act_qmaster" "$COMMON/host_aliases" 2>/dev/null || true
}

configure() {
    local dir="$STATE/conf"
    rm -rf "$dir"
    mkdir -p "$dir"
    # global configuration (qconf -Mconf takes the file name as the configuration name)
    q "$QCONF" -sconf | grep -v '^#' | sed -e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/' \
        -e 's#^mailer .*#mailer /bin/true#' -e 's/^load_report_time .*/load_report_time 00:00:05/' \
        >"$dir/global" || die "qconf -sconf failed"
    q "$QCONF" -Mconf "$dir/global" >>"$LOG" || die "qconf -Mconf (min_uid/min_gid 0) failed"
    q "$QCONF" -ssconf | sed -e 's/^schedule_interval .*/schedule_interval 0:0:1/' \
        -e 's/^flush_submit_sec .*/flush_submit_sec 1/' -e 's/^flush_finish_sec .*/flush_finish_sec 1/' \
        >"$dir/sched" || die "qconf -ssconf failed"
    q "$QCONF" -Msconf "$dir/sched" >>"$LOG" || die "qconf -Msconf (schedule_interval) failed"
    q "$QCONF" -as "$HOST" >>"$LOG" || die "qconf -as $HOST (submit host) failed"
    printf '%s\n' "hostname $HOST" "load_scaling NONE" "complex_values NONE" "user_lists NONE" \
        "xuser_lists NONE" "projects NONE" "xprojects NONE" "usage_scaling NONE" \
        "report_variables NONE" >"$dir/host"
    q "$QCONF" -Ae "$dir/host" >>"$LOG" || die "qconf -Ae (execution host $HOST) failed"
    printf '%s\n' "pe_name $PE" "slots 999" "user_lists NONE" "xuser_lists NONE" \
        "start_proc_args NONE" "stop_proc_args NONE" 'allocation_rule $pe_slots' \
        "control_slaves FALSE" "job_is_first_task TRUE" "urgency_slots min" \
        "accounting_summary FALSE" "qsort_args NONE" >"$dir/pe"
    q "$QCONF" -Ap "$dir/pe" >>"$LOG" || die "qconf -Ap (PE $PE) failed"
    q "$QCONF" -sq | sed -e "s/^qname .*/qname $QUEUE/" -e "s/^hostlist .*/hostlist $HOST/" \
        -e "s/^slots .*/slots $SLOTS/" -e 's/^load_thresholds .*/load_thresholds NONE/' \
        -e "s/^pe_list .*/pe_list $PE/" -e 's#^shell .*#shell /bin/bash#' >"$dir/queue" ||
        die "qconf -sq (queue template) failed"
    q "$QCONF" -Aq "$dir/queue" >>"$LOG" || die "qconf -Aq (queue $QUEUE) failed"
}

qmaster_answers() { q "$QCONF" -sh >/dev/null; }

wait_for() { # what seconds command...
    local what=$1 limit=$2 deadline=$((SECONDS + $2))
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || die "$what not within ${limit}s"
        sleep 0.2
    done
}

cmd_start() {
    local b
    for b in "$QSUB" "$QCONF" /usr/sbin/sge_qmaster /usr/sbin/sge_execd; do
        [[ -x "$b" ]] || die "$b not found; run infra/sge.sh install first"
    done
    mkdir -p "$STATE"
    if [[ -n "$(qmaster_pid)" && -n "$(execd_pid)" ]] && queue_ready; then
        log "already running (qmaster pid $(qmaster_pid), execd pid $(execd_pid)); queue $QUEUE ready"
        return 0
    fi
    getent hosts "$HOST" >/dev/null || die "host name $HOST does not resolve (add it to /etc/hosts)"
    cmd_stop
    : >"$LOG"
    local t0=$SECONDS
    log "fresh spool under $SPOOL (log $LOG)"
    fresh_spool
    log "starting sge_qmaster"
    /usr/sbin/sge_qmaster >>"$LOG" 2>&1 || die "sge_qmaster failed to start"
    wait_for "sge_qmaster answering" "$READY_TIMEOUT" qmaster_answers
    configure
    log "starting sge_execd"
    /usr/sbin/sge_execd >>"$LOG" 2>&1 || die "sge_execd failed to start"
    wait_for "queue $QUEUE@$HOST taking jobs" "$READY_TIMEOUT" queue_ready
    log "running in $((SECONDS - t0))s: queue $QUEUE ($SLOTS slots), PE $PE, qmaster pid $(qmaster_pid)"
}

# ---------------------------------------------------------------- check, stop, status, env

cmd_check() {
    [[ -n "$(qmaster_pid)" ]] || die "sge_qmaster is not running; run infra/sge.sh start"
    mkdir -p "$STATE"
    rm -f "$PROBE_OUT"
    printf '#!/bin/bash\necho "sge-probe $(id -un) $NSLOTS"\n' >"$STATE/probe.sh"
    local out jobid deadline=$((SECONDS + PROBE_TIMEOUT))
    out="$(cd "$STATE" && q "$QSUB" -N pxpool-sge-probe -q "$QUEUE" -pe "$PE" 2 -j y -o "$PROBE_OUT" \
        -S /bin/bash "$STATE/probe.sh")" || die "qsub of the probe job failed"
    jobid="$(sed -n 's/^Your job \([0-9]*\).*/\1/p' <<<"$out")"
    [[ -n "$jobid" ]] || die "qsub printed no job id: $out"
    until grep -q '^sge-probe root 2$' "$PROBE_OUT" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            q "$QSTAT" -j "$jobid" >>"$LOG" || true
            q "$QDEL" "$jobid" >/dev/null || true
            die "SGE probe job $jobid (2 slots, PE $PE, as root) did not run within ${PROBE_TIMEOUT}s"
        fi
        sleep 0.2
    done
    log "probe job $jobid ran as root with 2 slots"
}

cmd_stop() {
    local master execd deadline
    master="$(qmaster_pid)"
    execd="$(execd_pid)"
    if [[ -z "$master$execd" ]]; then
        log "not running"
        return 0
    fi
    mkdir -p "$STATE"
    local shepherds=""
    [[ -n "$execd" ]] && shepherds="$(pgrep -P "$execd" -x sge_shepherd || true)"
    if [[ -n "$master" ]]; then
        if [[ -n "$(q "$QSTAT" -u '*')" ]]; then
            log "deleting all jobs"
            q "$QDEL" -f -u '*' >>"$LOG" || true
            deadline=$((SECONDS + 15))
            while [[ -n "$(q "$QSTAT" -u '*')" ]] && ((SECONDS < deadline)); do sleep 0.3; done
        fi
        # -kej: the execution daemon and whatever jobs it still runs
        [[ -n "$execd" ]] && { q "$QCONF" -kej "$HOST" >>"$LOG" || true; }
    fi
    if [[ -n "$execd" ]]; then
        log "stopping sge_execd (pid $execd)"
        wait_gone "$execd" 10 || kill_pid sge_execd "$execd"
    fi
    if [[ -n "$master" ]]; then
        log "stopping sge_qmaster (pid $master)"
        # SIGTERM starts a clean shutdown that takes ~9 s; the next start makes a fresh
        # spool anyway, so do not wait for it
        kill_pid sge_qmaster "$master" 2
    fi
    # shepherds (and their jobs) the execd left behind
    local pid
    for pid in $shepherds; do
        if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == sge_shepherd ]]; then kill_pid sge_shepherd "$pid"; fi
    done
    return 0
}

cmd_status() {
    local master execd
    master="$(qmaster_pid)"
    execd="$(execd_pid)"
    if [[ -n "$master" && -n "$execd" ]] && queue_ready; then
        log "running: qmaster pid $master, execd pid $execd, queue $QUEUE ready"
        return 0
    fi
    log "not running (qmaster pid ${master:-none}, execd pid ${execd:-none})"
    return 3
}

cmd_env() {
    printf 'export PXPOOL_TEST_SGE_QUEUE=%q\n' "$QUEUE"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
check) cmd_check ;;
*)
    echo "usage: $0 install|start|stop|status|env|check" >&2
    exit 2
    ;;
esac
