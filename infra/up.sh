#!/usr/bin/env bash
# Install (if needed) and start every service the pxpool test suite uses, check
# them, and write the combined exports to $PXPOOL_INFRA_DIR/env.sh
# (default /tmp/pxpool-infra/env.sh) for a test runner to `source`.
# Idempotent: services already running and healthy are left as they are.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INFRA_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
ENV_FILE="$INFRA_DIR/env.sh"

log() { echo "infra: up: $*" >&2; }
die() {
    echo "infra: up: ERROR: $*" >&2
    echo "infra: up: logs are under $INFRA_DIR; infra/down.sh stops what did start" >&2
    exit 1
}

t0=$SECONDS
mkdir -p "$INFRA_DIR"
"$HERE/install.sh" || die "install.sh failed"
"$HERE/sshd.sh" start || die "sshd.sh start failed"
# The lab before SLURM: slurm.sh start adds its nodes on the lab hosts when the lab runs.
"$HERE/lab.sh" start || die "lab.sh start failed"
"$HERE/lab.sh" check || die "lab.sh check failed: the multi-host tests need the lab's hosts"
PXPOOL_INFRA_SLURM_LAB="${PXPOOL_INFRA_SLURM_LAB:-1}" "$HERE/slurm.sh" start || die "slurm.sh start failed"
"$HERE/mpi.sh" check || die "mpi.sh check failed"
"$HERE/pbs.sh" install || die "pbs.sh install failed"
"$HERE/pbs.sh" check || die "pbs.sh check failed"
"$HERE/sge.sh" install || die "sge.sh install failed"
"$HERE/sge.sh" start || die "sge.sh start failed"
"$HERE/sge.sh" check || die "sge.sh check failed"
"$HERE/cgroup.sh" check || die "cgroup.sh check failed: the OOM tests need a writable memory cgroup"
"$HERE/chromium.sh" check || die "chromium.sh check failed: the browser test needs headless Chromium"

tmp="$(mktemp "$INFRA_DIR/env.sh.XXXXXX")"
{
    echo "# Written by infra/up.sh: source this before running the pxpool tests."
    "$HERE/sshd.sh" env
    "$HERE/lab.sh" env
    "$HERE/slurm.sh" env
    "$HERE/mpi.sh" env
    "$HERE/pbs.sh" env
    "$HERE/sge.sh" env
} >"$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$ENV_FILE"
log "all services up in $((SECONDS - t0))s; exports in $ENV_FILE"
