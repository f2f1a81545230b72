#!/usr/bin/env bash
# Install everything the pxpool tests need on a fresh Debian 12 machine with Python
# 3.11 (apt packages, sshd, SLURM, MPI, Chromium; the package with its test extra),
# start the services, run the whole suite, and stop the services again.
# Arguments are passed to pytest. Exit status is pytest's, except that "no tests
# collected" (5) counts as a failure.
# Everything the tests need is installed and checked here, so no test has a reason to skip:
# PXPOOL_REQUIRE_SERVICES=1 makes tests/conftest.py report every skip as a failure with
# the skip's reason (and infra/mpi.sh check require mpi4py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export PXPOOL_REQUIRE_SERVICES="${PXPOOL_REQUIRE_SERVICES:-1}"
bash infra/install.sh
python3 -m pip install --quiet -e '.[test]'

trap 'bash infra/down.sh' EXIT
bash infra/up.sh
set -a
# shellcheck disable=SC1091
source "${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}/env.sh"
set +a

set +e
python3 -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "scripts/test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit $status
