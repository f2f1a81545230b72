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
:data:`BLOCK_BYTES` of input each and joins the results the way the client joins
chunks: arrays and pandas objects concatenate in row order, anything else stays one
item per block (:class:`BlockResults`, flattened by the client). With a fixed
``chunksize`` the user chose the partition size: ``f`` sees whole chunks.

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
    "apply_blocks",
    "apply_row_blocks",
    "block_rows",
    "row_bytes",
    "flatten",
    "part_of",
    "rows_of",
]

BLOCK_BYTES = 1 << 20  # input bytes per call of f: about one L2 cache
MIN_BLOCK_ROWS = 8192  # below this, the cost per call of f (slicing, setup) adds up


class BlockResults(list):  # type: ignore[type-arg]
    """Results of the blocks of one chunk that do not concatenate (one per block)."""


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
    if isinstance(value, np.ndarray):
        return max(value.nbytes // rows, 1)
    usage = value.memory_usage(index=False, deep=False)  # pandas: 8 bytes per object cell
    total = usage.sum() if hasattr(usage, "sum") else usage
    return max(int(total) // rows, 1)


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
) -> tuple[float, Any, int]:
    """:func:`apply_blocks` over ``rows`` rows that ``rows_of(start, stop)`` builds,
    block by block (so shared-memory rows are copied out one block at a time)."""
    began = time.perf_counter()
    if block <= 0 or rows <= block:
        result = f(*rows_of(0, rows))
        return time.perf_counter() - began, result, rows
    results, done = [], 0
    while done < rows and not spent(began, budget, done, rows):
        stop = min(done + block, rows)
        results.append(f(*rows_of(done, stop)))
        done = stop
    joined = join(results)
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


def join(results: list[Any]) -> Any:
    """One chunk's block results: concatenated when all are arrays or all pandas."""
    if all(isinstance(r, np.ndarray) and r.ndim >= 1 for r in results):
        return np.concatenate(results, axis=0)
    if all(type(r).__module__.startswith("pandas") and hasattr(r, "iloc") for r in results):
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
