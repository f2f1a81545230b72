#!/usr/bin/env bash
# Open MPI settings for the pxpool MPI tests (root, 2 cores, loopback only).
#   infra/mpi.sh env    print the export lines
#   infra/mpi.sh check  run 'mpiexec -n 3 hostname', a 3-rank MPI_Init/Allreduce program
#                       and, when python3 has mpi4py (the test extra), a 3-rank mpi4py allreduce
set -euo pipefail

INFRA_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
STATE="$INFRA_DIR/mpi"
LOG="$STATE/check.log"

# name=value pairs, in the order printed by `env`.
MPI_ENV=(
    # mpiexec refuses to run as root without both of these.
    OMPI_ALLOW_RUN_AS_ROOT=1
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    # More ranks than the 2 real cores.
    OMPI_MCA_rmaps_base_oversubscribe=1
    # CMA single-copy needs ptrace rights that containers often lack.
    OMPI_MCA_btl_vader_single_copy_mechanism=none
    # Keep MPI's TCP traffic (out-of-band and data) on the loopback interface.
    OMPI_MCA_btl_tcp_if_include=lo
    OMPI_MCA_oob_tcp_if_include=lo
)

log() { echo "infra: mpi: $*" >&2; }
die() {
    echo "infra: mpi: ERROR: $*" >&2
    if [[ -s "$LOG" ]]; then
        echo "infra: mpi: last lines of $LOG:" >&2
        tail -n 25 "$LOG" >&2 || true
    fi
    exit 1
}

cmd_env() {
    local kv
    for kv in "${MPI_ENV[@]}"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
}

cmd_check() {
    command -v mpiexec >/dev/null || die "mpiexec not found; run infra/install.sh first"
    local kv
    for kv in "${MPI_ENV[@]}"; do
        export "${kv?}"
    done
    mkdir -p "$STATE"
    : >"$LOG"

    log "mpiexec -n 3 hostname (log $LOG)"
    timeout 30 mpiexec -n 3 hostname >>"$LOG" 2>&1 ||
        die "'mpiexec -n 3 hostname' failed or timed out after 30s (exit $?)"
    local n
    n="$(grep -cx "$(hostname)" "$LOG" || true)"
    [[ "$n" == 3 ]] || die "'mpiexec -n 3 hostname' printed $n hostnames, expected 3"

    # hostname never calls MPI_Init: also run a real MPI program when a compiler is here.
    if command -v mpicc >/dev/null && mpicc --showme:command >/dev/null 2>&1 &&
        command -v "$(mpicc --showme:command)" >/dev/null; then
        cat >"$STATE/hello.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    int rank, size, sum;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("pxpool-mpi rank %d of %d sum %d\n", rank, size, sum);
    MPI_Finalize();
    return 0;
}
EOF
        timeout 60 mpicc -o "$STATE/hello" "$STATE/hello.c" >>"$LOG" 2>&1 || die "mpicc failed"
        log "mpiexec -n 3 (MPI_Init + MPI_Allreduce)"
        timeout 30 mpiexec -n 3 "$STATE/hello" >>"$LOG" 2>&1 ||
            die "3-rank MPI program failed or timed out after 30s (exit $?)"
        n="$(grep -c '^pxpool-mpi rank [0-2] of 3 sum 3$' "$LOG" || true)"
        [[ "$n" == 3 ]] || die "3-rank MPI program: $n of 3 ranks reported the right sum"
    else
        log "no working mpicc: skipped the MPI_Init check"
    fi
    check_mpi4py
    log "ok"
}

check_mpi4py() {
    # mpi4py comes with the project's test extra; the MPI engine test runs its allreduce.
    # Under the README's test command (PXPOOL_REQUIRE_SERVICES=1) it must be there.
    if ! python3 -c "import mpi4py" >>"$LOG" 2>&1; then
        if [[ "${PXPOOL_REQUIRE_SERVICES:-}" == 1 ]]; then
            die "python3 cannot import mpi4py; the test extra installs it: python3 -m pip install -e '.[test]'"
        fi
        log "python3 has no mpi4py (the test extra installs it): skipped the mpi4py check"
        return 0
    fi
    log "mpiexec -n 3 python3 (mpi4py allreduce)"
    # rank 0 prints what every rank got: the ranks' own lines could interleave
    timeout 60 mpiexec -n 3 python3 -c "from mpi4py import MPI; w = MPI.COMM_WORLD; \
sums = w.gather(w.allreduce(w.Get_rank())); \
w.Get_rank() or print('pxpool-mpi4py size', w.Get_size(), 'sums', *sums)" \
        >>"$LOG" 2>&1 || die "3-rank mpi4py allreduce failed or timed out after 60s (exit $?)"
    grep -qx 'pxpool-mpi4py size 3 sums 3 3 3' "$LOG" ||
        die "3-rank mpi4py allreduce: not every rank got the sum 3 (see the log)"
}

case "${1:-}" in
env) cmd_env ;;
check) cmd_check ;;
*)
    echo "usage: $0 env|check" >&2
    exit 2
    ;;
esac
