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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["BLOCK_BYTES", "BlockResults", "apply_blocks", "block_rows", "flatten"]

BLOCK_BYTES = 1 << 20  # input bytes per call of f: about one L2 cache
MIN_BLOCK_ROWS = 8192  # below this, the cost per call of f (slicing, setup) adds up


class BlockResults(list):  # type: ignore[type-arg]
    """Results of the blocks of one chunk that do not concatenate (one per block)."""


def block_rows(values: Sequence[Any]) -> int:
    """Rows per call of ``f`` for these inputs (the first and any further ones)."""
    row_bytes = sum(_row_bytes(value) for value in values)
    return max(MIN_BLOCK_ROWS, BLOCK_BYTES // max(row_bytes, 1))


def _row_bytes(value: Any) -> int:
    rows = len(value)
    if rows == 0:
        return 0
    if isinstance(value, np.ndarray):
        return max(value.nbytes // rows, 1)
    usage = value.memory_usage(index=False, deep=False)  # pandas: 8 bytes per object cell
    total = usage.sum() if hasattr(usage, "sum") else usage
    return max(int(total) // rows, 1)


def apply_blocks(f: Callable[..., Any], args: Sequence[Any], block: int) -> tuple[float, Any]:
    """``f`` over consecutive blocks of ``block`` rows of ``args``; returns the seconds
    spent and the joined result. ``block <= 0`` or a short chunk: one call."""
    rows = len(args[0]) if args else 0
    began = time.perf_counter()
    if block <= 0 or rows <= block:
        return _elapsed(began, f(*args))
    results = [
        f(*(_rows(value, start, min(start + block, rows)) for value in args))
        for start in range(0, rows, block)
    ]
    return _elapsed(began, join(results))


def _elapsed(began: float, result: Any) -> tuple[float, Any]:
    return time.perf_counter() - began, result


def _rows(value: Any, start: int, stop: int) -> Any:
    return value.iloc[start:stop] if hasattr(value, "iloc") else value[start:stop]


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
