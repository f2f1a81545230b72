#!/usr/bin/env bash
# Install the Debian packages the pxpool test services need.
# Idempotent: does nothing (and touches no network) when everything is installed.
set -euo pipefail

PACKAGES=(
    openssh-server openssh-client
    slurmctld slurmd slurm-client munge
    openmpi-bin libopenmpi-dev
    chromium chromium-driver
    procps
    nftables
)
# Deliberately NOT here: gridengine-* and slurm-wlm-torque (both ship /usr/bin/qsub).

LOG_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
LOG="$LOG_DIR/install.log"

log() { echo "infra: install: $*" >&2; }
die() {
    echo "infra: install: ERROR: $*" >&2
    if [[ -f "$LOG" ]]; then
        echo "infra: install: last lines of $LOG:" >&2
        tail -n 30 "$LOG" >&2 || true
    fi
    exit 1
}

missing_packages() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
        [[ "$status" == "installed" ]] || echo "$p"
    done
}

# apt gives list files the server's modification time, so their mtime says little
# about when they were fetched: the standard APT stamp records a successful update.
UPDATE_STAMP=/var/lib/apt/periodic/update-success-stamp

lists_fresh() {
    # True when the apt package lists exist and were fetched less than a day ago.
    local lists=/var/lib/apt/lists
    compgen -G "$lists/*_Packages*" >/dev/null || return 1
    [[ -n "$(find "$UPDATE_STAMP" "$lists" -maxdepth 1 \( -name '*_Packages*' -o -path "$UPDATE_STAMP" \) \
        -mmin -1440 -print -quit 2>/dev/null)" ]]
}

apt_update() {
    log "apt-get update (log: $LOG)"
    timeout 300 apt-get update >>"$LOG" 2>&1 || die "apt-get update failed"
    mkdir -p "${UPDATE_STAMP%/*}"
    touch "$UPDATE_STAMP"
}

POLICY=/usr/sbin/policy-rc.d
OUR_POLICY=0
cleanup() {
    if [[ $OUR_POLICY -eq 1 ]]; then rm -f "$POLICY"; fi
}

block_service_starts() {
    # Package postinst scripts would start system sshd (port 22, all interfaces),
    # munged, slurmctld and slurmd. The infra scripts start their own, so forbid
    # that for the duration of the install unless a policy is already in place.
    if [[ ! -e "$POLICY" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY"
        chmod 0755 "$POLICY"
        OUR_POLICY=1
        trap cleanup EXIT
    fi
}

main() {
    mkdir -p "$LOG_DIR"
    local missing
    mapfile -t missing < <(missing_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "all ${#PACKAGES[@]} packages already installed"
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "must run as root to install: ${missing[*]}"
    : >"$LOG"
    log "missing: ${missing[*]}"
    block_service_starts
    local updated=0
    if ! lists_fresh; then
        apt_update
        updated=1
    fi
    log "apt-get install (log: $LOG)"
    if ! DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >>"$LOG" 2>&1; then
        [[ $updated -eq 1 ]] && die "apt-get install failed for: ${missing[*]}"
        # Lists looked fresh but may still lack a package or a version: refresh once and retry.
        log "install failed with cached lists; refreshing and retrying once"
        apt_update
        DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" >>"$LOG" 2>&1 || die "apt-get install failed for: ${missing[*]}"
    fi
    mapfile -t missing < <(missing_packages)
    [[ ${#missing[@]} -eq 0 ]] || die "still not installed after apt-get: ${missing[*]}"
    log "installed all packages"
}

main "$@"
