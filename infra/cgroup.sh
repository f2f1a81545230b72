#!/usr/bin/env bash
# The memory cgroup the pxpool OOM tests use ([engine] memory_limit on local engines).
#   infra/cgroup.sh check   a group under <memory controller>/pxpool/ takes a limit and a
#                           process, and the kernel's OOM killer ends a process that
#                           allocates past the limit; the group is removed again
# There is nothing to start: the kernel provides the controller (cgroup v1 or v2).
set -euo pipefail

INFRA_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
STATE="$INFRA_DIR/cgroup"
LOG="$STATE/check.log"
MOUNT="${PXPOOL_INFRA_CGROUP_MOUNT:-/sys/fs/cgroup}"
LIMIT_MIB=64
HOG_MIB=256

log() { echo "infra: cgroup: $*" >&2; }
die() {
    echo "infra: cgroup: ERROR: $*" >&2
    echo "infra: cgroup: the OOM tests (tests/integration/test_oom.py) need a writable memory" \
        "cgroup: run as root where $MOUNT is mounted read-write (a container needs" \
        "--privileged or a writable cgroup namespace)" >&2
    if [[ -s "$LOG" ]]; then
        echo "infra: cgroup: last lines of $LOG:" >&2
        tail -n 15 "$LOG" >&2 || true
    fi
    exit 1
}

# The same lookup as pxpool.engines.cgroups.hierarchy(): v1's memory controller, else
# the v2 unified hierarchy when it offers the memory controller.
ROOT="" VERSION="" LIMIT_FILE="" OOM_FILE=""
find_controller() {
    if [[ -f "$MOUNT/memory/memory.limit_in_bytes" ]]; then
        ROOT="$MOUNT/memory" VERSION=1 LIMIT_FILE=memory.limit_in_bytes OOM_FILE=memory.oom_control
    elif [[ -f "$MOUNT/cgroup.controllers" ]] && grep -qw memory "$MOUNT/cgroup.controllers"; then
        ROOT="$MOUNT" VERSION=2 LIMIT_FILE=memory.max OOM_FILE=memory.events
    else
        die "no memory cgroup controller under $MOUNT (neither v1's memory/ nor v2's cgroup.controllers lists memory)"
    fi
    [[ -w "$ROOT/cgroup.procs" ]] || die "$ROOT/cgroup.procs is not writable (not root, or a read-only $MOUNT)"
}

oom_kills() {
    awk '$1 == "oom_kill" { print $2; found = 1 } END { if (!found) print 0 }' "$1/$OOM_FILE"
}

GROUP=""
cleanup() {
    [[ -n "$GROUP" && -d "$GROUP" ]] || return 0
    local pid
    for pid in $(cat "$GROUP/cgroup.procs" 2>/dev/null); do
        kill -9 "$pid" 2>/dev/null || true
    done
    local _
    for _ in $(seq 50); do
        rmdir "$GROUP" 2>/dev/null && return 0
        sleep 0.1
    done
    log "WARNING: could not remove $GROUP"
}

cmd_check() {
    mkdir -p "$STATE"
    : >"$LOG"
    find_controller
    command -v python3 >/dev/null || die "python3 not found (the check's memory hog)"
    local top="$ROOT/pxpool"
    # Not named like a pool's group (<runtime hash>-<pool>), so the tests never take it for one.
    GROUP="$top/infra-check-$$"
    trap cleanup EXIT
    mkdir -p "$top" 2>>"$LOG" || die "cannot create $top"
    if [[ $VERSION -eq 2 ]]; then
        echo +memory >"$ROOT/cgroup.subtree_control" 2>>"$LOG" ||
            die "cannot enable the memory controller below $ROOT"
        echo +memory >"$top/cgroup.subtree_control" 2>>"$LOG" ||
            die "cannot enable the memory controller below $top"
    fi
    mkdir "$GROUP" 2>>"$LOG" || die "cannot create $GROUP"
    echo $((LIMIT_MIB * 1024 * 1024)) >"$GROUP/$LIMIT_FILE" 2>>"$LOG" ||
        die "cannot write $GROUP/$LIMIT_FILE"
    local before after rc=0
    before="$(oom_kills "$GROUP")"
    log "cgroup v$VERSION at $ROOT: a process that allocates ${HOG_MIB} MiB in a ${LIMIT_MIB} MiB group"
    # The subshell moves itself into the group, then becomes the hog (same pid); the
    # braces take the shell's "Killed" notice off stderr.
    {
        (
            echo "$BASHPID" >"$GROUP/cgroup.procs"
            exec python3 -c "b = bytearray($HOG_MIB * 1024 * 1024); print('survived', len(b))"
        ) >>"$LOG" 2>&1
    } 2>/dev/null || rc=$?
    after="$(oom_kills "$GROUP")"
    if grep -q '^survived' "$LOG"; then
        die "a process allocated ${HOG_MIB} MiB in a group limited to ${LIMIT_MIB} MiB and lived (swap, or a limit that does not apply)"
    fi
    [[ $rc -eq 137 ]] || die "the hog ended with exit status $rc, not SIGKILL (137) from the OOM killer"
    [[ $after -gt $before ]] ||
        die "the hog was killed but $GROUP/$OOM_FILE counts no OOM kill ($before -> $after)"
    log "ok (the OOM killer ended it; $OOM_FILE oom_kill $before -> $after)"
}

case "${1:-}" in
check) cmd_check ;;
*)
    echo "usage: $0 check" >&2
    exit 2
    ;;
esac
