"""``%pxdebug``: debug the current pool's engines from the notebook.

::

    %pxdebug              # post-mortem on the engine where the last error was raised
    %pxdebug -e 3         # post-mortem on engine 3's last failure (or its breakpoint)

    %%pxdebug -e 0        # run this cell on engine 0 under pdb, stopped at its first line
    x = 1
    y = x + 1

Commands are pdb's (``n``, ``s``, ``b``, ``p``, ``pp``, ``l``, ``w``, ``u``, ``d``, ``c``,
``q``), typed at a ``(Pdb-e3)`` prompt that Jupyter shows through its stdin channel.

While any cell runs, ``breakpoint()`` reached in engine code (``%%px``, ``pool.apply``,
``pool.map``, a load-balanced view) opens a session here too: the cell waits while
you debug, one engine at a time, each labelled. ``c`` lets that task go on; ``q`` ends
it with :class:`~pxpool.DebuggerQuit` and the engine stays usable.
"""

from __future__ import annotations

import shlex
import sys
import threading
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from .._debug.session import interact
from ..errors import DebugError, MapError, PxpoolError
from ..pool import Pool, current

__all__ = ["DebugMagics", "BreakpointWatcher", "failed_engines"]

USAGE = """\
%pxdebug [-e ENGINE]     post-mortem on ENGINE's last failure (default: the engine of the last error)
%%pxdebug -e ENGINE      run the cell on ENGINE under pdb, stopped at its first line"""
HELP = (
    "pdb commands: n(ext), s(tep), c(ontinue), b(reak) LINE, p EXPR, pp EXPR, l(ist), "
    "w(here), u(p), d(own), q(uit)"
)
POLL_SECONDS = 0.25
CELL_RESULT_TIMEOUT = 60.0  # seconds a %%pxdebug cell may run on after its session ends


def failed_engines(error: BaseException | None) -> list[int]:
    """Engine ids named by an error from a view, ``%%px`` or ``pool.map`` (or its causes)."""
    found: list[int] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, MapError) and error.engine_id is not None:
            found.append(error.engine_id)
        for entry in getattr(error, "elist", None) or []:  # CompositeError
            engine = entry[3].get("engine_id") if len(entry) > 3 and entry[3] else None
            if engine is not None:
                found.append(int(engine))
        info = getattr(error, "engine_info", None)
        if isinstance(info, dict) and info.get("engine_id") is not None:
            found.append(int(info["engine_id"]))
        error = error.__cause__ or error.__context__
    return list(dict.fromkeys(found))


def _parse(line: str) -> int | None:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{exc}\n{USAGE}") from None
    if not words:
        return None
    if len(words) == 2 and words[0] in ("-e", "--engine") and words[1].isdigit():
        return int(words[1])
    raise UsageError(f"%pxdebug: cannot read {line.strip()!r}; use one of:\n{USAGE}")


def _pool() -> Pool:
    try:
        return current()
    except PxpoolError:
        raise UsageError(
            "No running pool to debug; start one with `%pool start [PROFILE] [-n N]`."
        ) from None


@magics_class
class DebugMagics(Magics):
    """``%pxdebug`` / ``%%pxdebug``, and the breakpoint watcher that runs during cells."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)  # type: ignore[no-untyped-call]  # IPython's Magics.__init__ is unannotated
        self.watcher = BreakpointWatcher()
        self.shell_events: Any = shell.events
        self.shell_events.register("pre_run_cell", self.watcher.cell_started)
        self.shell_events.register("post_run_cell", self.watcher.cell_finished)

    def unwatch(self) -> None:
        """Stop watching for breakpoints (``%unload_ext``)."""
        self.watcher.cell_finished(None)
        for event, callback in (
            ("pre_run_cell", self.watcher.cell_started),
            ("post_run_cell", self.watcher.cell_finished),
        ):
            try:
                self.shell_events.unregister(event, callback)
            except ValueError:
                pass

    @line_cell_magic  # type: ignore[untyped-decorator]  # IPython's decorator is unannotated
    def pxdebug(self, line: str, cell: str | None = None) -> None:
        """Debug an engine; see ``pxpool.magics.debug`` (``%pxdebug?``)."""
        engine = _parse(line)
        pool = _pool()
        if cell is not None:
            if engine is None:
                raise UsageError(f"%%pxdebug needs the engine to run the cell on:\n{USAGE}")
            self._debug_cell(pool, engine, cell)
            return
        if engine is None:
            failed = failed_engines(getattr(sys, "last_value", None))
            failed = [i for i in failed if i in pool.ids]
            if failed:
                engine = failed[0]
                others = failed[1:]
                also = (
                    f"; engines {others} failed too (`%pxdebug -e {others[0]}`)" if others else ""
                )
                print(f"pxpool: debugging engine {engine}, where the last error was raised{also}.")
        try:
            session = pool.debug(engine)
        except DebugError as exc:
            raise UsageError(str(exc)) from None
        print(f"pxpool: engine {session.engine_id}, {session.kind} at {session.where}. {HELP}")
        interact(session)

    def _debug_cell(self, pool: Pool, engine: int, cell: str) -> None:
        try:
            result, session = pool.run_cell_under_debugger(engine, cell)
        except DebugError as exc:
            raise UsageError(str(exc)) from None
        print(
            f"pxpool: the cell runs on engine {engine} under pdb, stopped at its first line. {HELP}"
        )
        interact(session)
        result.wait(CELL_RESULT_TIMEOUT)
        if not result.ready():
            print(f"pxpool: the cell still runs on engine {engine}; see `%pool status`.")
            return
        result.display_outputs()
        result.get()  # raises the cell's error, if it had one


class BreakpointWatcher:
    """While a cell runs, opens a session for each engine stopped at ``breakpoint()``.

    One thread polls the current pool's engines and serves their stops one at a time,
    prompting with ``input()`` (Jupyter's stdin), so a cell waiting on a task that
    reached ``breakpoint()`` shows the prompt instead of hanging.
    """

    def __init__(self) -> None:
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def cell_started(self, info: Any = None) -> None:
        pool = _current_or_none()
        if pool is None or not pool.debugger_installed or self._thread is not None:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(pool, self._stop), name="pxpool-breakpoints", daemon=True
        )
        self._thread.start()

    def cell_finished(self, result: Any = None) -> None:
        if self._thread is None or self._stop is None:
            return
        self._stop.set()
        self._thread.join(10.0)
        self._thread = self._stop = None

    def _watch(self, pool: Pool, stop: threading.Event) -> None:
        while not stop.wait(POLL_SECONDS):
            if pool.state != "running":
                return
            try:
                statuses = pool.debug_status()
            except Exception:
                continue
            waiting = sorted(
                i
                for i, s in statuses.items()
                if (s.get("paused") or {}).get("kind") == "breakpoint"
            )
            for position, engine in enumerate(waiting):
                if stop.is_set():
                    return
                try:
                    session = pool.attach_at_breakpoint(engine, 600.0)
                except (DebugError, OSError):
                    continue  # it went on (timeout) or someone else took it
                later = waiting[position + 1 :]
                queue = f" Engines {later} are stopped too and come next." if later else ""
                print(f"pxpool: engine {engine} stopped at breakpoint() in {session.where}.{queue}")
                print(f"pxpool: {HELP}; c lets the task go on, q ends it with DebuggerQuit.")
                try:
                    interact(session)
                except (DebugError, OSError) as exc:
                    print(f"pxpool: debugger session on engine {engine} failed: {exc}")


def _current_or_none() -> Pool | None:
    try:
        return current()
    except PxpoolError:
        return None
