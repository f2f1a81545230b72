"""Errors raised by ``pool.map`` and the data methods (exported from ``pxpool``).

PxpoolError
├── MapError                   f failed on an engine: names the engine and item index
├── UnpicklableFunctionError   f cannot be sent to the engines
├── UnpicklableArgumentError   an argument (or a map item) cannot be sent to the engines
└── EngineNameError            pool.pull: a name that is not defined on some engines
"""

from __future__ import annotations

from typing import Any

from .errors import PxpoolError

__all__ = [
    "MapError",
    "UnpicklableFunctionError",
    "UnpicklableArgumentError",
    "EngineNameError",
]


def function_name(f: Any) -> str:
    name = getattr(f, "__qualname__", None) or getattr(f, "__name__", None)
    return name if name else repr(f)


class MapError(PxpoolError, RuntimeError):
    """``f`` failed on an engine; ``__cause__`` is the engine's error with its traceback.

    ``engine_id`` is the engine that ran the failing chunk, ``index`` the position of
    the failing item (for numpy and pandas input, the first row of the failing
    partition) or ``None`` when the engine died before reporting it, and
    ``chunk`` the ``(start, stop)`` positions of the chunk that engine was running.
    """

    def __init__(
        self,
        function: str,
        engine_id: int | None,
        index: int | None,
        chunk: tuple[int, int],
        what: str,
        partition: bool = False,
        hint: str | None = None,
    ) -> None:
        self.function = function
        self.engine_id = engine_id
        self.index = index
        self.chunk = chunk
        start, stop = chunk
        if partition:
            where = f"the partition of rows {start}..{stop - 1} (positions)"
            retry = f"run `{function}(data.iloc[{start}:{stop}])` (or `data[{start}:{stop}]`) here"
        elif index is not None:
            where = f"item {index}"
            retry = f"run `{function}(values[{index}])` here"
        else:
            where = f"one of items {start}..{stop - 1}"
            retry = f"run `{function}` here on items {start}..{stop - 1}"
        engine = f"engine {engine_id}" if engine_id is not None else "an engine"
        advice = hint or (
            f"The engine's traceback is in this error's __cause__; {retry} to reproduce it."
        )
        super().__init__(
            f"pool.map: {function} failed on {engine} for {where}: {what.rstrip('.')}. {advice}"
        )


class UnpicklableFunctionError(PxpoolError, TypeError):
    """The mapped function cannot be serialized for the engines."""

    def __init__(self, function: str, reason: str, caller: str = "pool.map") -> None:
        self.function = function
        super().__init__(
            f"{caller} cannot send function {function!r} to the engines: {reason}. "
            "Define it at module level in an importable module (engines import it by name), "
            "avoid capturing locks, sockets or open files in it, or switch to cloudpickle "
            "with `pool.view().use_cloudpickle()`."
        )


class UnpicklableArgumentError(PxpoolError, TypeError):
    """An argument of a task (or an item of ``pool.map``) cannot be serialized.

    ``what`` names the argument (``"argument 1"``, ``"keyword 'x'"``, ``"item 7"``),
    ``function`` the function it was for.
    """

    def __init__(self, function: str, what: str, value: Any, reason: str) -> None:
        self.function = function
        self.what = what
        super().__init__(
            f"cannot send {what} of {function} (a {type(value).__name__}) to the engines: "
            f"{reason}. Send what it holds instead (data, a path, parameters) and create "
            "locks, sockets, open files or connections on the engine."
        )


class EngineNameError(PxpoolError, NameError):
    """``pool.pull`` asked for names that some engines do not define."""

    def __init__(self, names: list[str], engines: list[int]) -> None:
        self.names = names
        self.engines = engines
        shown = ", ".join(repr(n) for n in names)
        super().__init__(
            f"pool.pull: {shown} not defined on engine(s) {engines}. Set it first with "
            "`pool.push({...})` or `pool.execute(...)`, or check the spelling "
            "(`pool.view().apply_sync(dir)` lists the names on each engine)."
        )
