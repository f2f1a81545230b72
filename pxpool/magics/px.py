"""ipyparallel's ``%px`` family, bound to the current pxpool pool.

:class:`PxMagics` is the one subclass of ipyparallel's ``ParallelMagics`` in pxpool.
It changes five things and keeps every flag users know (``--targets``,
``--block/--noblock``, ``--stream``, ``--local``, ``--group-outputs``, ``-o``):

- the view is the current pool's (``pxpool.current()``), looked up on each use, so a
  pool started, attached or replaced later is picked up without re-binding; while no
  pxpool pool is current, ipyparallel's own magics run on the most recent plain
  ipyparallel client, as without pxpool (:mod:`pxpool.magics.plain`);
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
from IPython.core.magic import no_var_expand

from .._core import runtime
from ..errors import PxpoolError, TargetError
from ..pool import Pool, current
from .plain import PlainClients
from .targets import parse_targets

__all__ = ["PxMagics", "INTERRUPT_WAIT"]

INTERRUPT_WAIT = 10.0  # seconds an interrupted cell waits for its engines to stop

NO_POOL = (
    "No running pool for %px; start one with `%pool start [PROFILE] [-n N]`, "
    "attach one with `%pool attach NAME`, or from Python with "
    "`pxpool.Pool.from_profile(...).start_sync()` (or connect an ipyparallel Client)."
)


class PxMagics(ParallelMagics):  # type: ignore[misc]  # ipyparallel ships no type information
    """``%px``, ``%%px``, ``%autopx``, ``%pxresult`` and ``%pxconfig`` on the current pool."""

    stream_output = True
    signal_on_interrupt = "SIGINT"
    progress_after_seconds = 2.0

    def __init__(self, shell: Any) -> None:
        self._pool: Pool | None = None
        self._view: Any = None
        self._plain = PlainClients(shell)
        super().__init__(shell, None)

    def plain_magics(self) -> ParallelMagics | None:
        """None while a pxpool pool is current (this instance runs the magic); else
        ipyparallel's magics on the newest plain client (UsageError if none). A pool
        stopped by another process (JupyterLab's sidebar, ``pxpool stop``) still looks
        current here, but its record is gone with its runtime directory."""
        try:
            if runtime.read_record(current().name) is not None:
                return None
        except PxpoolError:
            pass
        plain = self._plain.magics()
        if plain is None:
            raise UsageError(NO_POOL)
        return plain

    @no_var_expand  # type: ignore[untyped-decorator]  # IPython leaves it unannotated
    def px(self, line: str = "") -> Any:
        """``%px``: one line on the engines (see ipyparallel's ``%px``)."""
        plain = self.plain_magics()
        return super().px(line) if plain is None else plain.px(line)

    def autopx(self, line: str = "") -> Any:
        """``%autopx``: every cell runs on the engines until ``%autopx`` again."""
        plain = self.plain_magics()
        return super().autopx(line) if plain is None else plain.autopx(line)

    def result(self, line: str = "") -> Any:
        """``%pxresult``: the outputs of the last ``%px`` (see ipyparallel's)."""
        plain = self.plain_magics()
        return super().result(line) if plain is None else plain.result(line)

    def pxconfig(self, line: str = "") -> Any:
        """``%pxconfig``: default targets and blocking of ``%px`` (see ipyparallel's)."""
        plain = self.plain_magics()
        return super().pxconfig(line) if plain is None else plain.pxconfig(line)

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
        plain = self.plain_magics()
        if plain is not None:
            return plain.cell_px(line, cell)
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
        self._plain.disable_autopx()


# ipyparallel parses the flags of %%px, %pxresult and %pxconfig with the parser attached
# to its method of that name
for _name in ("cell_px", "result", "pxconfig"):
    getattr(PxMagics, _name).parser = getattr(ParallelMagics, _name).parser


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
