"""The shared provider suite on the mpi provider: engines as the ranks of
``mpiexec`` on this machine (Open MPI, with the settings ``infra/mpi.sh env`` prints).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Any

import pytest

import pxpool

from .provider_suite import ProviderSuite

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not installed"),
]


def _rank_and_size() -> tuple[str | None, str | None]:
    import os

    return os.environ.get("OMPI_COMM_WORLD_RANK"), os.environ.get("OMPI_COMM_WORLD_SIZE")


def _allreduce_rank_sum() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.allreduce(MPI.COMM_WORLD.Get_rank())


class TestMPIProvider(ProviderSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        if os.environ.get("OMPI_ALLOW_RUN_AS_ROOT") != "1" and os.geteuid() == 0:
            pytest.skip("Open MPI settings missing: source /tmp/pxpool-infra/env.sh")
        return ("mpi", {})

    def test_engine_ids_are_the_ranks_of_one_mpiexec(self, pool: pxpool.Pool) -> None:
        by_engine = pool.view().apply_sync(_rank_and_size)
        assert by_engine == [(str(i), str(self.engines)) for i in range(self.engines)]

    @pytest.mark.skipif(
        importlib.util.find_spec("mpi4py") is not None,
        reason="mpi4py is installed; the allreduce test covers it",
    )
    def test_engines_run_without_mpi4py(self, pool: pxpool.Pool) -> None:
        assert pool.view().apply_sync(lambda: 1) == [1] * self.engines

    @pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="needs mpi4py")
    def test_allreduce_across_engines(self, pool: pxpool.Pool) -> None:
        assert pool.view().apply_sync(_allreduce_rank_sum) == [1] * self.engines


def test_missing_mpiexec_names_the_command() -> None:
    pool = pxpool.Pool.from_profile("mpi", engines=2, mpiexec="/nonexistent/mpiexec")
    with pytest.raises(pxpool.EngineStartError, match="Could not run '/nonexistent/mpiexec'"):
        pool.start_sync()
    assert pool.state == "failed"


def test_ranks_that_exit_are_reported_with_mpiexec_output() -> None:
    if os.environ.get("OMPI_ALLOW_RUN_AS_ROOT") != "1" and os.geteuid() == 0:
        pytest.skip("Open MPI settings missing: source /tmp/pxpool-infra/env.sh")
    pool = pxpool.Pool.from_profile("mpi", engines=2, python="/nonexistent/python3")
    with pytest.raises(pxpool.EngineStartError, match=r"exited before registering") as caught:
        pool.start_sync(timeout=30)
    assert "/nonexistent/python3" in caught.value.output
