"""``pool.map`` partitions through shared memory, when every engine is on this host.

Over the network a partition is pickled by the client, copied by the controller and
the scheduler, and unpickled by the engine: for a large numeric frame those copies
cost about as much as the work. Here the client copies each input column (or
array) into one shared-memory segment before the first chunk, and a chunk is only
``(start, stop)`` plus the segments' names; the engine maps the segments and copies
its rows out block by block, so that ``f`` gets ordinary writable data.

Only plain numeric data qualifies (numpy dtypes other than object; pandas columns
and an index of those dtypes, or a RangeIndex); anything else takes the network
path. Lifetime: the segments are slots of the pool's arena (:mod:`pxpool._data.arena`),
free for the next map or push when the map returns, unlinked when it fails or the
pool stops; fresh segments (when the arena is full) are unlinked when the map ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import arena as _arena
from . import chunking as ch
from . import shm

__all__ = ["SharedInputs", "run_shared_part"]

Descriptor = _arena.Descriptor


def _plain(dtype: Any) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind in "biufcmM"


def _frame_ok(value: Any) -> bool:
    import pandas as pd

    index_ok = isinstance(value.index, pd.RangeIndex) or (
        value.index.nlevels == 1 and _plain(value.index.dtype)
    )
    if isinstance(value, pd.DataFrame):
        return index_ok and value.columns.is_unique and all(_plain(d) for d in value.dtypes)
    return index_ok and isinstance(value, pd.Series) and _plain(value.dtype)


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return (
        int(value.memory_usage(index=True, deep=False).sum())
        if value.ndim == 2
        else int(value.memory_usage(index=True, deep=False))
    )


def eligible(kind: str, values: Sequence[Any]) -> bool:
    """True when every input is plain numeric data, worth a segment, and shareable."""
    if kind == "numpy":
        ok = all(isinstance(v, np.ndarray) and _plain(v.dtype) for v in values)
    elif kind == "pandas":
        ok = all(_frame_ok(v) for v in values)
    else:
        return False
    nbytes = sum(_nbytes(v) for v in values) if ok else 0
    return ok and nbytes >= shm.THRESHOLD and shm.can_share(nbytes)


class SharedInputs:
    """The inputs of one map, copied into segments; ``spec(start, stop)`` names a chunk.

    Columns go into free slots of the pool's arena (:mod:`pxpool._data.arena`) when there
    are: their pages are already there on both sides, so a repeated map skips ~1.3 ms
    per MB of page faults. Else into fresh segments.
    """

    def __init__(self, values: Sequence[Any], prefix: str, engine_ids: list[int]) -> None:
        self.names: list[str] = []
        self.slots: list[_arena.Slot] = []
        self.layouts: list[tuple] = []
        self._arena = _arena.arena_for(prefix)
        self._engine_ids = engine_ids
        try:
            for value in values:
                self.layouts.append(self._export(value))
        except BaseException:
            self.close(reuse=False)
            raise

    def _array(self, array: np.ndarray) -> Descriptor:
        shared, slot = self._arena.copy_in(np.ascontiguousarray(array), self._engine_ids)
        if slot is not None:
            self.slots.append(slot)
        else:
            self.names.append(shared[1][0])
        return shared

    def _export(self, value: Any) -> tuple:
        if isinstance(value, np.ndarray):
            return ("numpy", self._array(value))
        import pandas as pd

        index = value.index
        if isinstance(index, pd.RangeIndex):
            index_layout: tuple = ("range", index.start, index.step, index.name)
        else:
            index_layout = ("array", self._array(index.to_numpy()), index.name)
        if isinstance(value, pd.Series):
            return ("series", self._array(value.to_numpy()), index_layout, value.name)
        columns = [(name, self._array(value[name].to_numpy())) for name in value.columns]
        return ("frame", columns, index_layout, value.columns)

    def spec(self, start: int, stop: int) -> tuple[Any, ...]:
        return (start, stop, self.layouts)

    def close(self, reuse: bool = True) -> None:
        """The map is over: unlink fresh segments, and give slots back for reuse, or
        retire them after a failure (chunks of it may still run on other engines)."""
        for name in self.names:
            shm.unlink(name)
        self.names.clear()
        for slot in self.slots:
            if reuse:
                self._arena.done(slot)
            else:
                self._arena.retire(slot)
        self.slots.clear()


# ---------------------------------------------------------------- engine side


def _segments(layouts: Sequence[tuple]) -> dict[str, np.ndarray]:
    """Every segment the layouts name, mapped once (read-only) for the whole chunk."""
    descriptors: list[Descriptor] = []
    for layout in layouts:
        if layout[0] == "frame":
            descriptors.extend(d for _, d in layout[1])
        elif layout[0] in ("numpy", "series"):
            descriptors.append(layout[1])
        if layout[0] != "numpy" and layout[2][0] == "array":
            descriptors.append(layout[2][1])
    return {d[1][0]: _attach(d) for d in descriptors}


def _attach(descriptor: Descriptor) -> np.ndarray:
    kind, details = descriptor
    if kind == "arena":
        return _arena.engine_view(details)  # stays mapped on the engine for the next map
    return shm.attach(details, writable=False)


def _rebuild(layout: tuple, start: int, stop: int, mapped: dict[str, np.ndarray]) -> Any:
    """Rows ``start:stop`` of one input, as private writable copies of the segments."""

    def rows(descriptor: Descriptor) -> np.ndarray:
        return np.array(mapped[descriptor[1][0]][start:stop], copy=True)

    kind = layout[0]
    if kind == "numpy":
        return rows(layout[1])
    import pandas as pd

    index_layout = layout[2]
    if index_layout[0] == "range":
        _, first, step, name = index_layout
        index: Any = pd.RangeIndex(first + start * step, first + stop * step, step, name=name)
    else:
        index = pd.Index(rows(index_layout[1]), name=index_layout[2])
    if kind == "series":
        return pd.Series(rows(layout[1]), index=index, name=layout[3], copy=False)
    columns = {i: rows(d) for i, (_, d) in enumerate(layout[1])}
    frame = pd.DataFrame(columns, index=index, copy=False)
    frame.columns = layout[3]
    return frame


def run_shared_part(
    f: Callable[..., Any], token: str, start: int, block: int, spec: tuple, budget: float = 0.0
) -> tuple:
    """Engine side: apply ``f`` to the chunk's rows of the segments, rebuilt block by
    block so each block's copy stays in cache (as :func:`pxpool._data.chunking.run_part`).

    Returns what :func:`pxpool._data.chunking.run_part` returns."""
    first, stop, layouts = spec
    mapped = _segments(layouts)
    try:

        def rows_of(a: int, b: int) -> list[Any]:
            return [_rebuild(layout, first + a, first + b, mapped) for layout in layouts]

        return ch.run_blocks(f, token, start, block, budget, stop - first, rows_of)
    finally:
        mapped.clear()  # the maps go with their arrays; f's copies stay valid
        _arena.drop_gone()  # a failed map's retired slots, once its last chunk is over
