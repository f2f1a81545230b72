"""How several engines start inside one allocation: the lines of a job script.

Where engines run (the provider) is apart from how they start in the job (the
launcher): ``plain`` starts one background process per engine from the job script,
``srun`` asks SLURM for one task per engine, ``mpiexec`` starts them as MPI ranks.
Every engine registers with the id the pool asked for; task launchers pick it from
the task's rank (``SLURM_PROCID``, ``OMPI_COMM_WORLD_RANK``, ``PMI_RANK``).
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "Launcher",
    "PlainLauncher",
    "SrunLauncher",
    "MpiexecLauncher",
    "forward_signals",
    "launcher_named",
]


class Launcher(ABC):
    name: ClassVar[str]
    rank_variable: ClassVar[str] = ""

    def __init__(self, program: str = "") -> None:
        self.program = program or self.name

    @abstractmethod
    def lines(
        self, engine_command: Sequence[str], engine_ids: Sequence[int], cores: int
    ) -> list[str]:
        """Shell lines that start ``engine_command`` once per id and wait for them."""

    def ranked_command(self, engine_command: Sequence[str], engine_ids: Sequence[int]) -> str:
        """``bash -c`` text that runs the engine whose id sits at this task's rank."""
        ids = " ".join(str(i) for i in engine_ids)
        inner = (
            # SIGUSR1/SIGUSR2 ignored until pxpool's drain handler takes them over on the
            # engine, so the engine's nanny, which inherits that, survives them
            f'trap "" USR1 USR2; ids=({ids}); exec {shlex.join(engine_command)} '
            f'"--IPEngine.id=${{ids[{self.rank_variable}]}}"'
        )
        return f"/bin/bash -c {shlex.quote(inner)}"


class PlainLauncher(Launcher):
    """One background process per engine in the job's shell; the job ends when all do."""

    name = "plain"

    def lines(
        self, engine_command: Sequence[str], engine_ids: Sequence[int], cores: int
    ) -> list[str]:
        command = shlex.join(engine_command)
        started = [f"{command} --IPEngine.id={i} &" for i in engine_ids]
        return [*started, "wait"]


class SrunLauncher(Launcher):
    """One SLURM task per engine (``srun``), so each gets its own cores and accounting."""

    name = "srun"
    rank_variable = "$SLURM_PROCID"

    def lines(
        self, engine_command: Sequence[str], engine_ids: Sequence[int], cores: int
    ) -> list[str]:
        return [
            f"{self.program} --ntasks={len(engine_ids)} --cpus-per-task={cores} "
            f"--kill-on-bad-exit=0 {self.ranked_command(engine_command, engine_ids)}"
        ]


class MpiexecLauncher(Launcher):
    """Engines as MPI ranks of one ``mpiexec`` (Open MPI, MPICH or Intel MPI)."""

    name = "mpiexec"
    rank_variable = "${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-0}}}"

    def lines(
        self, engine_command: Sequence[str], engine_ids: Sequence[int], cores: int
    ) -> list[str]:
        return [
            f"{self.program} -n {len(engine_ids)} {self.ranked_command(engine_command, engine_ids)}"
        ]


LAUNCHERS: dict[str, type[Launcher]] = {
    cls.name: cls for cls in (PlainLauncher, SrunLauncher, MpiexecLauncher)
}


def launcher_named(name: str) -> Launcher:
    return LAUNCHERS[name]()


def forward_signals(engine_lines: Sequence[str], launcher: str) -> list[str]:
    """The engine lines of a job whose engines drain on signals: the job's shell sets
    traps that pass SIGUSR1, SIGUSR2 and SIGTERM on to its background jobs, then starts
    the engines in the background (bash runs a trap only between commands, so it waits
    in a loop, not on a foreground srun). Traps come first, so a signal that arrives
    while the engines start is passed on, not lost. Plain engines start with
    SIGUSR1/SIGUSR2 ignored (a subshell that ignores them, then ``exec``s the engine, so
    the job's pid is the engine's): their ipyparallel nannies inherit that and survive
    those signals; pxpool's handler takes them over on each engine (srun and mpiexec
    ranks do the same in their command, see above)."""
    commands = [line.removesuffix("&").rstrip() for line in engine_lines if line != "wait"]
    if launcher == "plain":
        started = [f"( trap '' USR1 USR2; exec {command} ) &" for command in commands]
    else:
        started = [f"{command} &" for command in commands]
    forward = [f"trap 'kill -{s} $(jobs -p) 2>/dev/null' {s}" for s in ("USR1", "USR2", "TERM")]
    return [*forward, *started, 'while [ -n "$(jobs -rp)" ]; do wait; done']
