"""The shared provider suite on the mpi provider: engines as the ranks of
``mpiexec`` on this machine (Open MPI, with the settings ``infra/mpi.sh env`` prints),
and mpi4py's allreduce across them (mpi4py comes with the test extra).
"""

from __future__ import annotations

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


def _allreduce_rank_sum() -> tuple[int, int]:
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    return world.Get_size(), world.allreduce(world.Get_rank())


def _mpi4py_loaded() -> bool:
    import sys

    return "mpi4py" in sys.modules


class TestMPIProvider(ProviderSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        if os.environ.get("OMPI_ALLOW_RUN_AS_ROOT") != "1" and os.geteuid() == 0:
            pytest.skip("Open MPI settings missing: source /tmp/pxpool-infra/env.sh")
        return ("mpi", {})

    def test_engine_ids_are_the_ranks_of_one_mpiexec(self, pool: pxpool.Pool) -> None:
        by_engine = pool.view().apply_sync(_rank_and_size)
        assert by_engine == [(str(i), str(self.engines)) for i in range(self.engines)]

    def test_engines_do_not_load_mpi4py_on_their_own(self, pool: pxpool.Pool) -> None:
        """mpi4py is optional: nothing on the engine path imports it (a task may)."""
        assert pool.view().apply_sync(_mpi4py_loaded) == [False] * self.engines

    def test_allreduce_across_engines(self, pool: pxpool.Pool) -> None:
        """The engines are the ranks of one MPI_COMM_WORLD: 0 + 1 = 1 on every rank."""
        expected = (self.engines, sum(range(self.engines)))
        assert pool.view().apply_sync(_allreduce_rank_sum) == [expected] * self.engines


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
