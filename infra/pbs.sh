#!/usr/bin/env bash
# PBS/Torque commands for the pxpool tests, emulated over the SLURM of infra/slurm.sh.
#   infra/pbs.sh install|check|env
# No real PBS exists for Debian 12: slurm-wlm-torque provides PBS-style qsub/qstat/qdel
# that call sbatch/squeue/scancel. Its /usr/bin/qsub conflicts with gridengine-client,
# so the package is unpacked into /opt/pxpool-torque (apt-get download + dpkg -x)
# and put on PATH only by the PBS tests (PXPOOL_TEST_PBS_BIN). Its Perl dependencies
# are installed normally. The emulation ignores `#PBS -o` and sets no PBS_JOBID.
set -euo pipefail

INFRA_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
STATE="$INFRA_DIR/pbs"
LOG="$STATE/pbs.log"
PREFIX=/opt/pxpool-torque
BIN="$PREFIX/usr/bin"
PERL_DEPS=(libslurm-perl libslurmdb-perl libswitch-perl)
PROBE_TIMEOUT=30

log() { echo "infra: pbs: $*" >&2; }
die() {
    echo "infra: pbs: ERROR: $*" >&2
    if [[ -s "$LOG" ]]; then
        echo "infra: pbs: last lines of $LOG:" >&2
        tail -n 25 "$LOG" >&2 || true
    fi
    exit 1
}

installed() { [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]; }

cmd_install() {
    mkdir -p "$STATE"
    local missing=() p
    for p in "${PERL_DEPS[@]}"; do installed "$p" || missing+=("$p"); done
    if ((${#missing[@]})); then
        log "apt-get install ${missing[*]} (log $LOG)"
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends \
            "${missing[@]}" >>"$LOG" 2>&1 || die "apt-get install ${missing[*]} failed"
    fi
    if [[ ! -x "$BIN/qsub" ]]; then
        local tmp
        tmp="$(mktemp -d)"
        log "unpacking slurm-wlm-torque into $PREFIX (log $LOG)"
        (cd "$tmp" && timeout 120 apt-get download slurm-wlm-torque >>"$LOG" 2>&1) ||
            die "apt-get download slurm-wlm-torque failed (run apt-get update?)"
        dpkg -x "$tmp"/slurm-wlm-torque_*.deb "$PREFIX" || die "dpkg -x failed"
        rm -rf "$tmp"
    fi
    # the Perl scripts run sbatch & co. from their own directory
    local b
    for b in sbatch salloc srun scancel squeue scontrol sinfo; do
        [[ -x "/usr/bin/$b" ]] && ln -sf "/usr/bin/$b" "$BIN/$b"
    done
    log "PBS commands in $BIN"
}

cmd_check() {
    [[ -x "$BIN/qsub" ]] || die "$BIN/qsub missing; run infra/pbs.sh install"
    mkdir -p "$STATE"
    local out="$STATE/probe.out" jobid deadline=$((SECONDS + PROBE_TIMEOUT))
    rm -f "$out"
    printf '#!/bin/bash\n#PBS -N pxpool-pbs-probe\necho pbs-probe\n' >"$STATE/probe.sh"
    jobid="$(cd "$STATE" && PATH="$BIN:$PATH" timeout 15 qsub -o "$out" -e "$out" "$STATE/probe.sh" 2>>"$LOG")" ||
        die "qsub of the probe job failed"
    jobid="$(echo "$jobid" | tr -d '[:space:]')"
    until grep -q '^pbs-probe$' "$out" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            PATH="$BIN:$PATH" timeout 10 qdel "$jobid" 2>/dev/null || true
            die "PBS probe job $jobid did not run within ${PROBE_TIMEOUT}s"
        fi
        sleep 0.3
    done
    log "probe job $jobid ran (qsub over SLURM)"
}

cmd_env() {
    printf 'export PXPOOL_TEST_PBS_BIN=%q\n' "$BIN"
}

case "${1:-}" in
install) cmd_install ;;
check) cmd_check ;;
env) cmd_env ;;
*)
    echo "usage: $0 install|check|env" >&2
    exit 2
    ;;
esac
