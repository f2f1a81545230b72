"""When a map's first chunk stops early: the time budget shared by items and rows.

A map over a range, a sequence, an array or a frame sends each engine an equal share
first, with a budget of engine seconds. The engine works through its share in
batches (items) or blocks (rows) and stops after the batch that spends the budget,
unless the whole share would be done within :data:`STRETCH` times the budget: so
tiny work finishes in one chunk per engine, and heavy work is measured on a few
items and the rest handed back to be balanced over all engines (see
:mod:`pxpool._data.mapper`). Used on the engines (:mod:`pxpool._data.agent`).
"""

from __future__ import annotations

import time

__all__ = ["STRETCH", "spent"]

STRETCH = 3.0  # a budgeted chunk runs on while it would end within 3x its budget


def spent(began: float, budget: float, done: int, total: int) -> bool:
    """True when a chunk started at ``began`` (perf_counter) should stop after ``done``
    of its ``total`` items or rows; never without a budget or before the first."""
    if budget <= 0 or done <= 0 or done >= total:
        return False
    elapsed = time.perf_counter() - began
    return elapsed >= budget and elapsed * total / done > STRETCH * budget
