"""``pool.map`` partitions through shared memory, when every engine is on this host.

Over the network a partition is pickled by the client, copied by the controller and
the scheduler, and unpickled by the engine: for a large numeric frame those copies
cost about as much as the work. Here the client copies each input column (or
array) into one shared-memory segment before the first chunk, and a chunk is only
``(start, stop)`` plus the segments' names; the engine maps the segments and slices
its rows out, copying them once so that ``f`` gets ordinary writable data.

Only plain numeric data qualifies (numpy dtypes other than object; pandas columns
and an index of those dtypes, or a RangeIndex); anything else takes the network
path. Lifetime: the segments are unlinked when the map returns or fails (see
:mod:`pxpool._shm`); a crashed client's are removed when the pool stops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _chunking as ch
from . import _shm

__all__ = ["SharedInputs", "run_shared_part"]

Descriptor = tuple[str, tuple[int, ...], np.dtype, str]


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
    return ok and nbytes >= _shm.THRESHOLD and _shm.can_share(nbytes)


class SharedInputs:
    """The inputs of one map, copied into segments; ``spec(start, stop)`` names a chunk."""

    def __init__(self, values: Sequence[Any], prefix: str) -> None:
        self.names: list[str] = []
        self.layouts: list[tuple] = []
        try:
            for value in values:
                self.layouts.append(self._export(value, prefix))
        except BaseException:
            self.close()
            raise

    def _array(self, array: np.ndarray, prefix: str) -> Descriptor:
        descriptor = _shm.export(np.ascontiguousarray(array), prefix)
        self.names.append(descriptor[0])
        return descriptor

    def _export(self, value: Any, prefix: str) -> tuple:
        if isinstance(value, np.ndarray):
            return ("numpy", self._array(value, prefix))
        import pandas as pd

        index = value.index
        if isinstance(index, pd.RangeIndex):
            index_layout: tuple = ("range", index.start, index.step, index.name)
        else:
            index_layout = ("array", self._array(index.to_numpy(), prefix), index.name)
        if isinstance(value, pd.Series):
            return ("series", self._array(value.to_numpy(), prefix), index_layout, value.name)
        columns = [(name, self._array(value[name].to_numpy(), prefix)) for name in value.columns]
        return ("frame", columns, index_layout, value.columns)

    def spec(self, start: int, stop: int) -> tuple[Any, ...]:
        return (start, stop, self.layouts)

    def close(self) -> None:
        for name in self.names:
            _shm.unlink(name)
        self.names.clear()


# ---------------------------------------------------------------- engine side


def _rows(descriptor: Descriptor, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a segment, as a private writable copy; the map is released."""
    shared = _shm.attach(descriptor, writable=False)
    try:
        return np.array(shared[start:stop], copy=True)
    finally:
        del shared


def _rebuild(layout: tuple, start: int, stop: int) -> Any:
    kind = layout[0]
    if kind == "numpy":
        return _rows(layout[1], start, stop)
    import pandas as pd

    index_layout = layout[2]
    if index_layout[0] == "range":
        _, first, step, name = index_layout
        index: Any = pd.RangeIndex(first + start * step, first + stop * step, step, name=name)
    else:
        index = pd.Index(_rows(index_layout[1], start, stop), name=index_layout[2])
    if kind == "series":
        return pd.Series(_rows(layout[1], start, stop), index=index, name=layout[3], copy=False)
    columns = {i: _rows(d, start, stop) for i, (_, d) in enumerate(layout[1])}
    frame = pd.DataFrame(columns, index=index, copy=False)
    frame.columns = layout[3]
    return frame


def run_shared_part(
    f: Callable[..., Any], token: str, start: int, block: int, spec: tuple
) -> tuple:
    """Engine side: rebuild the chunk's partitions from the segments and apply ``f``
    (in blocks of ``block`` rows, as :func:`pxpool._chunking.run_part` does).

    Returns what :func:`pxpool._chunking.run_part` returns."""
    first, stop, layouts = spec
    return ch.run_blocks(f, token, start, block, [_rebuild(part, first, stop) for part in layouts])
