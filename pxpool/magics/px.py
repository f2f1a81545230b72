"""ipyparallel's ``%px`` family, bound to the current pxpool pool.

:class:`PxMagics` is the one subclass of ipyparallel's ``ParallelMagics`` in pxpool.
It changes five things and keeps every flag users know (``--targets``,
``--block/--noblock``, ``--stream``, ``--local``, ``--group-outputs``, ``-o``):

- the view is the current pool's (``pxpool.current()``), looked up on each use, so a
  pool started, attached or replaced later is picked up without re-binding;
- ``--targets`` is parsed by :func:`pxpool.magics.targets.parse_targets`, never eval'ed;
- output streams by default under its engine's ``[stdout:N]`` header (in a terminal a
  header is repeated whenever another engine's output came in between);
- ``%%px --setup`` marks the cell as setup: engines that join later run it too;
- an interrupted cell sends SIGINT to its engines, waits for them to stop, and then
  raises ``KeyboardInterrupt``, so the cell ends as interrupted and the pool stays usable.
"""

from __future__ import annotations

import time
from typing import Any

from ipyparallel.client.magics import ParallelMagics
from IPython.core.error import UsageError

from ..errors import PxpoolError, TargetError
from ..pool import Pool, current
from .targets import parse_targets

__all__ = ["PxMagics", "INTERRUPT_WAIT"]

INTERRUPT_WAIT = 10.0  # seconds an interrupted cell waits for its engines to stop

NO_POOL = (
    "No running pool for %px; start one with `%pool start [PROFILE] [-n N]`, "
    "attach one with `%pool attach NAME`, or from Python with "
    "`pxpool.Pool.from_profile(...).start_sync()`."
)


class PxMagics(ParallelMagics):  # type: ignore[misc]  # ipyparallel ships no type information
    """``%px``, ``%%px``, ``%autopx``, ``%pxresult`` and ``%pxconfig`` on the current pool."""

    stream_output = True
    signal_on_interrupt = "SIGINT"
    progress_after_seconds = 2.0

    def __init__(self, shell: Any) -> None:
        self._pool: Pool | None = None
        self._view: Any = None
        super().__init__(shell, None)

    @property
    def view(self) -> Any:
        """The current pool's DirectView; a new one when the current pool changed."""
        try:
            pool = current()
        except PxpoolError:
            raise UsageError(NO_POOL) from None
        if self._view is None or self._pool is not pool or self._view.client is not pool.client:
            self._pool, self._view = pool, pool.view()
        return self._view

    @view.setter
    def view(self, value: Any) -> None:
        if value is not None:  # ParallelMagics.__init__ sets None: the pool is found later
            self._view = value

    def _eval_target_str(self, ts: str) -> Any:
        ts = ts.strip()
        if len(ts) >= 2 and ts[0] == ts[-1] and ts[0] in "'\"":
            ts = ts[1:-1]  # magic arguments keep quotes: --targets "0, 2"
        if ts.strip().lower() == "all":
            return "all"  # stays "all": engines added later are included
        try:
            return parse_targets(ts, list(self.view.client.ids))
        except TargetError as exc:
            raise UsageError(str(exc)) from None

    def cell_px(self, line: str = "", cell: str | None = None) -> Any:
        """``%%px``; ``%%px --setup`` also runs the cell on every engine that joins later
        (restarts, replacements, ``scale``), like ``pool.setup(code)``."""
        words = line.split()
        if "--setup" not in words:
            return ParallelMagics.cell_px(self, line, cell)
        rest = " ".join(w for w in words if w != "--setup")
        if any(w.startswith(("-t", "--targets", "--noblock", "--local")) for w in words):
            raise UsageError(
                "%%px --setup runs on every engine and waits; drop --targets, --noblock and --local"
            )
        result = ParallelMagics.cell_px(self, rest, cell)
        current().record_setup_code(cell or "")
        return result

    def parallel_execute(self, cell: str, block: bool | None = None, **kwargs: Any) -> Any:
        block = self.view.block if block is None else block
        targets = self.view.targets
        returned = super().parallel_execute(cell, block=block, **kwargs)
        result = self.last_result
        if block and result is not None and not (result.ready() and result.successful()):
            # ParallelMagics caught KeyboardInterrupt, signalled the engines and returned
            _finish_interrupted(result, targets)
        return returned

    def disable_autopx(self) -> None:
        """Leave ``%autopx`` mode if it is on (restores the shell's ``run_cell``)."""
        self._disable_autopx()


# ipyparallel parses %%px's flags with the parser attached to its cell_px
PxMagics.cell_px.parser = ParallelMagics.cell_px.parser  # type: ignore[attr-defined]


def _finish_interrupted(result: Any, targets: Any) -> None:
    """Wait for the signalled engines, then end the cell as interrupted."""
    deadline = time.monotonic() + INTERRUPT_WAIT
    while not result.ready() and time.monotonic() < deadline:
        result.wait(0.1)
    if not result.ready():
        raise KeyboardInterrupt(
            f"%px interrupted; engines {targets} still run {INTERRUPT_WAIT:g}s after SIGINT. "
            "See `%pool status`; restart an engine with `%pool restart ENGINE`."
        )
    raise KeyboardInterrupt(f"%px interrupted; engines {targets} received SIGINT and stopped.")
