"""Engines as the ranks of one ``mpiexec``: one engine set per mpiexec call.

Rank r of a call that starts engine ids ``[i0, i1, ...]`` becomes engine ``i_r``,
so the pool's ids are the ones it asked for and ``restart(k)`` brings back the
whole call (its ranks share one MPI_COMM_WORLD and end together). mpi4py is not
needed to run engines; with it installed, code on the engines can use
``mpi4py.MPI.COMM_WORLD`` across them.
"""

from __future__ import annotations

import shlex

from ipyparallel.cluster.launcher import MPIEngineSetLauncher

from .._core.cluster import PxCluster
from ..errors import EngineStartError
from .base import ENGINE_MODULE
from .local import LocalProvider, NonBlockingJoin

__all__ = ["MPIProvider", "RankEngineSetLauncher"]

# The rank variable differs between MPI implementations (Open MPI, MPICH/PMI, PMIx).
_RANK = "${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-0}}}"


class RankEngineSetLauncher(NonBlockingJoin, MPIEngineSetLauncher):  # type: ignore[misc]  # untyped base
    """ipyparallel's mpiexec launcher without ``--mpi`` (which needs mpi4py): the
    engine command itself picks the engine id from the rank. Its stop waits for
    mpiexec without blocking the pool's event loop (:class:`NonBlockingJoin`)."""

    @property
    def program(self) -> list[str]:
        return list(self.engine_cmd)


class MPIProvider(LocalProvider):
    name = "mpi"
    engine_launcher_class = RankEngineSetLauncher

    def rank_command(self, engine_ids: list[int]) -> list[str]:
        """``sh -c`` that maps this rank to its engine id and execs the engine."""
        engine = [self.python(), "-m", ENGINE_MODULE, *self.engine_args(None)]
        script = "\n".join(
            [
                f"set -- {' '.join(str(i) for i in engine_ids)}",
                f'shift "{_RANK}"',
                f'exec {shlex.join(engine)} --IPEngine.id="$1"',
            ]
        )
        return ["sh", "-c", script]

    async def start_engines(
        self, cluster: PxCluster, engine_ids: list[int]
    ) -> dict[str, list[int]]:
        if not engine_ids:
            return {}
        settings = self.profile.mpi
        set_id = f"mpi-{engine_ids[0]}"
        mpiexec = shlex.split(settings.mpiexec or "mpiexec")
        try:
            await cluster.start_engines(
                len(engine_ids),
                engine_set_id=set_id,
                mpi_cmd=mpiexec,
                mpi_args=list(settings.args),
                engine_cmd=self.rank_command(engine_ids),
                engine_args=[],
                environment=self.environment(),
            )
        except OSError as exc:
            cluster.engines.pop(set_id, None)
            raise EngineStartError(
                f"Could not run {mpiexec[0]!r}: {exc.strerror}. Install Open MPI or MPICH, or "
                f"set mpiexec in profile {self.profile.name!r} ({self.profile.source}) "
                "to its full path."
            ) from exc
        return {set_id: list(engine_ids)}
