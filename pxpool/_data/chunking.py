"""How ``pool.map`` cuts its input into chunks: kinds of input, sizes, joined results.

Chunk sizes come from measured cost: the first chunks are small probes, then each
chunk is sized so that it takes about ``target`` seconds of engine time, never so
big that fewer than ``per_engine`` chunks per engine are left (so slow engines or
heavy items still balance), and never so small that per-chunk overhead dominates.

The client's side; what runs the chunks on the engines is :mod:`pxpool._data.agent`,
and how they travel is :mod:`pxpool._data.wire`.
"""

from __future__ import annotations

import math
import pickle
import statistics
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from .blocks import BlockResults, Pieces, flatten, join, joins

__all__ = ["ChunkSizer", "combine", "kind_of"]


class ChunkSizer:
    """Chooses the next chunk size from the per-item cost measured so far.

    ``total`` is the number of items (``None`` for an iterator of unknown length).
    A fixed ``chunksize`` turns measuring off.
    """

    def __init__(
        self,
        engines: int,
        total: int | None,
        *,
        chunksize: int | None = None,
        target: float = 0.02,
        floor: float = 0.005,
        probe: int = 1,
        per_engine: int = 4,
        max_size: int = 1 << 16,
        even: bool = False,
    ) -> None:
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be >= 1 or 'auto'; got {chunksize}")
        self.engines = max(engines, 1)
        self.total = total
        self.fixed = chunksize
        self.target = target
        self.floor = floor
        self.probe = max(probe, 1)
        self.per_engine = per_engine
        self.max_size = max_size
        self.even = even
        self._plan: int | None = None  # even: the one size every later chunk has
        self._costs: deque[float] = deque(maxlen=5)

    @property
    def measured(self) -> bool:
        return self.fixed is not None or bool(self._costs)

    @property
    def cost(self) -> float | None:
        """Seconds per item: the median of the last few chunks, robust to a slow first call."""
        return statistics.median(self._costs) if self._costs else None

    def record(self, items: int, seconds: float) -> None:
        """Remember that a chunk of ``items`` items took ``seconds`` on its engine."""
        if items > 0:
            self._costs.append(max(seconds, 1e-9) / items)

    def next_size(self, remaining: int | None) -> int:
        """Size of the next chunk; ``remaining`` is ``None`` when the length is unknown."""
        if self._plan is not None and remaining is not None:
            return max(min(self._plan, remaining), 0)
        if self.fixed is not None:
            size = self.fixed
        elif self.cost is None:
            size = self.probe
        else:
            cost = self.cost
            size = min(int(self.target / cost), self.max_size)
            if remaining is not None:
                balanced = math.ceil(remaining / (self.engines * self.per_engine))
                size = min(size, max(balanced, int(self.floor / cost)))
        size = max(size, 1)
        if remaining is None:
            return size
        if self.fixed is None and self.cost is not None and remaining > 0:
            # cut what is left into equal chunks: a short last chunk would cost a whole
            # round trip for a few items while the other engines wait for it
            chunks = math.ceil(remaining / size)
            if self.even:
                chunks = self.even_count(chunks, remaining / size)
            size = math.ceil(remaining / chunks)
            if self.even:
                self._plan = size
        return max(min(size, remaining), 0)

    def even_count(self, chunks: int, exact: float) -> int:
        """``even`` (rows that cost alike): a multiple of the engine count, so every
        engine gets as many chunks as the others and none runs a last one alone.
        The lower multiple unless its chunks would be over 1.5 times the size."""
        lower = min(math.floor(exact), chunks) // self.engines * self.engines
        if lower >= self.engines and exact / lower <= 1.5:
            return lower
        return lower + self.engines


# ---------------------------------------------------------------- kinds of input


def kind_of(values: Any) -> str:
    """``pandas``, ``numpy``, ``range``, ``sequence`` or ``iterator``: how to split it."""
    module = type(values).__module__
    if module.startswith("pandas") and hasattr(values, "iloc"):
        return "pandas"
    if isinstance(values, np.ndarray) and values.ndim >= 1:
        return "numpy"
    if isinstance(values, range):
        return "range"
    if isinstance(values, Sequence) and not isinstance(values, str | bytes):
        return "sequence"
    return "iterator"


# ---------------------------------------------------------------- results


def combine(kind: str, results: list[Any], in_place: bool = False) -> Any:
    """Join per-partition results: arrays concatenate, pandas objects concatenate in
    row order (their index kept), anything else comes back as a list. A chunk's
    unjoined blocks (:class:`Pieces`) join with the rest. ``in_place``: some results
    are views of reply slots the next map reuses; what is returned never is."""
    if kind not in ("numpy", "pandas") or not results:
        return results
    pieces = [piece for r in results for piece in (r if isinstance(r, Pieces) else (r,))]
    joined = join(pieces)  # the rule that joins one chunk's blocks joins the chunks too
    if isinstance(joined, BlockResults):  # not all alike: each chunk's blocks as one
        joined = join([join(r) if isinstance(r, Pieces) else r for r in results])
    if isinstance(joined, BlockResults):
        return [_owned(r) for r in flatten(joined)] if in_place else flatten(joined)
    if in_place and sum(1 for piece in pieces if len(piece)) <= 1:
        return _owned(joined)  # one piece: its concatenation need not have copied it
    return joined


def _owned(value: Any) -> Any:
    """An array or pandas object as a copy of its own, index and all (pandas' deep copy
    keeps the index); anything else as it is."""
    return pickle.loads(pickle.dumps(value, protocol=4)) if joins(value) else value
