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

This module is the client's half; the engine maps the segments and rebuilds its rows
in :func:`pxpool._data.agent.run_shared_part`, which reads the layouts made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import arena as _arena
from . import shm

__all__ = ["SharedInputs", "eligible"]

Descriptor = shm.Descriptor
# how an engine finds one input's rows (see SharedInputs._export and agent._rebuild):
# ("numpy", array), ("series", values, index, name) or ("frame", columns, index, labels)
# with arrays as Descriptors and the index as ("range", start, step, name) or
# ("array", values, name)
Layout = tuple[Any, ...]


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
        self.layouts: list[Layout] = []
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

    def _export(self, value: Any) -> Layout:
        if isinstance(value, np.ndarray):
            return ("numpy", self._array(value))
        import pandas as pd

        index = value.index
        if isinstance(index, pd.RangeIndex):
            index_layout: tuple[Any, ...] = ("range", index.start, index.step, index.name)
        else:
            index_layout = ("array", self._array(index.to_numpy()), index.name)
        if isinstance(value, pd.Series):
            return ("series", self._array(value.to_numpy()), index_layout, value.name)
        columns = [(name, self._array(value[name].to_numpy())) for name in value.columns]
        return ("frame", columns, index_layout, value.columns)

    def spec(self, start: int, stop: int) -> tuple[int, int, list[Layout]]:
        """What a chunk of rows ``start:stop`` sends instead of the rows."""
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
