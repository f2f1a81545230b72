#!/usr/bin/env bash
# Stop what infra/up.sh started (SGE daemons and their jobs, SLURM daemons, the
# munged it started, the lab's hosts, the private sshd). Never fails: a service that
# is not running is skipped.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "infra: down: $*" >&2; }

rc=0
"$HERE/sge.sh" stop || { rc=$?; log "WARNING: sge.sh stop failed (exit $rc); continuing"; }
"$HERE/slurm.sh" stop || { rc=$?; log "WARNING: slurm.sh stop failed (exit $rc); continuing"; }
"$HERE/lab.sh" stop || { rc=$?; log "WARNING: lab.sh stop failed (exit $rc); continuing"; }
"$HERE/sshd.sh" stop || { rc=$?; log "WARNING: sshd.sh stop failed (exit $rc); continuing"; }
log "done"
exit 0
