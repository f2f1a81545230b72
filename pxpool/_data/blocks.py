"""Within one chunk of rows, ``f`` is called on cache-sized blocks.

A chunk is the unit of scheduling: big enough (~0.2 s of engine time) that
ipyparallel's cost per task (~10 ms on 2 busy cores) stays small. A partition that
big is slow to compute on, though: vectorised numpy and pandas code makes a
temporary array per step, and temporaries of a 250,000-row partition (2 MB each)
no longer fit the CPU's L2 cache. Measured here, ``score`` of the benchmark runs at
~1,100 ns per row on 1,000,000 rows at once and ~950 ns on 64k-row blocks, and a
2-engine ``pool.map`` over a 1M-row DataFrame went from 1.3x to 1.7x one-process
pandas with 64k-row blocks (and to 1.5x with 32k, 1.65x with 128k).

So with ``chunksize="auto"``, the engine calls ``f`` on consecutive blocks of about
:data:`BLOCK_BYTES` of input each (larger ones after a block that took under
:data:`FAST_BLOCK_SECONDS`: there the call costs more than the cache saves) and joins the results the way the client joins
chunks: arrays and pandas objects concatenate in row order, anything else stays one
item per block (:class:`BlockResults`, flattened by the client). With a fixed
``chunksize`` the user chose the partition size: ``f`` sees whole chunks. When a
chunk's result travels through a reply slot (:mod:`pxpool._data.replies`), its block
results are sent unjoined (:class:`Pieces`): the client reads them in place and its
join of every chunk is the one copy, instead of a join on the engine, a copy into the
slot and a copy out of it.

Shared by both sides: the engine runs the blocks (:mod:`pxpool._data.agent`), the
client sizes them, slices its input with :func:`part_of` and joins chunks with the
rule that joins blocks (:func:`join`, :func:`flatten`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .budget import spent

__all__ = [
    "BLOCK_BYTES",
    "BlockResults",
    "Pieces",
    "apply_blocks",
    "apply_row_blocks",
    "block_rows",
    "row_bytes",
    "values_nbytes",
    "flatten",
    "joins",
    "part_of",
    "rows_of",
]

BLOCK_BYTES = 1 << 20  # input bytes per call of f: about one L2 cache
MIN_BLOCK_ROWS = 8192  # below this, the cost per call of f (slicing, setup) adds up
# a block done this fast is mostly the cost per call (a pandas expression's ~0.15 ms):
# the next is this many times larger. Measured here, ``a * 2 + b`` on 500k rows: 8
# blocks 1.7 ms, one call 0.5 ms; ``score`` runs ~60 ms per block and keeps its size
FAST_BLOCK_SECONDS = 0.002
BLOCK_GROWTH = 8


class BlockResults(list):  # type: ignore[type-arg]
    """Results of the blocks of one chunk that do not concatenate (one per block)."""


class Pieces(list):  # type: ignore[type-arg]
    """Results of the blocks of one chunk that concatenate, not joined yet (in order)."""


def block_rows(values: Sequence[Any]) -> int:
    """Rows per call of ``f`` for these inputs (the first and any further ones)."""
    return max(MIN_BLOCK_ROWS, BLOCK_BYTES // row_bytes(values))


def row_bytes(values: Sequence[Any]) -> int:
    """Bytes of one row of these inputs together (at least 1)."""
    return max(sum(_row_bytes(value) for value in values), 1)


def _row_bytes(value: Any) -> int:
    rows = len(value)
    if rows == 0:
        return 0
    return max(values_nbytes(value) // rows, 1)


def values_nbytes(value: Any) -> int:
    """Bytes of an array's or a pandas object's values, index not counted, 8 per object
    cell: pandas' ``memory_usage(deep=False)``, from the dtypes (~20x faster for numpy
    dtypes; that builds a Series of usages, ~0.5 ms per call)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    rows = len(value)
    dtypes = [value.dtype] if value.ndim == 1 else list(value.dtypes)
    total = 0
    for i, dtype in enumerate(dtypes):
        if isinstance(dtype, np.dtype):
            total += dtype.itemsize * rows
        else:  # extension arrays: values and masks, codes and categories
            total += int((value.array if value.ndim == 1 else value.iloc[:, i].array).nbytes)
    return total


def apply_blocks(
    f: Callable[..., Any], args: Sequence[Any], block: int, budget: float = 0.0
) -> tuple[float, Any, int]:
    """``f`` over consecutive blocks of ``block`` rows of ``args``; returns the seconds
    spent, the joined result and the rows done. ``block <= 0`` or a short chunk: one
    call. A ``budget`` may stop it early (:mod:`pxpool._data.budget`)."""
    rows = len(args[0]) if args else 0
    return apply_row_blocks(f, rows, rows_of(args), block, budget)


def apply_row_blocks(
    f: Callable[..., Any],
    rows: int,
    rows_of: Callable[[int, int], Sequence[Any]],
    block: int,
    budget: float = 0.0,
    join_blocks: bool = True,
) -> tuple[float, Any, int]:
    """:func:`apply_blocks` over ``rows`` rows that ``rows_of(start, stop)`` builds,
    block by block (so shared-memory rows are copied out one block at a time).
    ``join_blocks=False``: blocks that would concatenate come back as :class:`Pieces`."""
    began = time.perf_counter()
    if block <= 0 or rows <= block:
        result = f(*rows_of(0, rows))
        return time.perf_counter() - began, result, rows
    results, done = [], 0
    while done < rows and not spent(began, budget, done, rows):
        stop = min(done + block, rows)
        called = time.perf_counter()
        results.append(f(*rows_of(done, stop)))
        if time.perf_counter() - called < FAST_BLOCK_SECONDS:
            block *= BLOCK_GROWTH  # a cheap f: calls cost more than the cache saves
        done = stop
    joined = join(results) if join_blocks or not _joinable(results) else Pieces(results)
    return time.perf_counter() - began, joined, done


def part_of(values: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of an array or pandas object, keeping the pandas index."""
    return values.iloc[start:stop] if hasattr(values, "iloc") else values[start:stop]


def rows_of(args: Sequence[Any]) -> Callable[[int, int], list[Any]]:
    """Builds rows ``start:stop`` of every input alike; all rows are the inputs as given
    (a fixed ``chunksize``: ``f`` sees the partition itself)."""

    def build(start: int, stop: int) -> list[Any]:
        if args and start == 0 and stop == len(args[0]):
            return list(args)
        return [part_of(value, start, stop) for value in args]

    return build


def joins(value: Any) -> bool:
    """An array or a pandas object: what :func:`join` concatenates (and so copies)."""
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    return type(value).__module__.startswith("pandas") and hasattr(value, "iloc")


def _joinable(results: list[Any]) -> str | None:
    """``numpy`` or ``pandas`` when all ``results`` concatenate as such, else None."""
    if all(isinstance(r, np.ndarray) and r.ndim >= 1 for r in results):
        return "numpy"
    if all(joins(r) and not isinstance(r, np.ndarray) for r in results):
        return "pandas"
    return None


def join(results: list[Any]) -> Any:
    """One chunk's block results: concatenated when all are arrays or all pandas."""
    kind = _joinable(results)
    if kind == "numpy":
        return np.concatenate(results, axis=0)
    if kind == "pandas":
        import pandas as pd

        return pd.concat(results)
    return BlockResults(results)


def flatten(results: list[Any]) -> list[Any]:
    """Per-chunk results as a list, the blocks of each chunk in their place."""
    out: list[Any] = []
    for result in results:
        if isinstance(result, BlockResults):
            out.extend(result)
        else:
            out.append(result)
    return out
