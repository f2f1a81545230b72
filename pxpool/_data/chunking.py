"""How ``pool.map`` cuts its input into chunks, and what runs on the engines.

Chunk sizes come from measured cost: the first chunks are small probes, then each
chunk is sized so that it takes about ``target`` seconds of engine time, never so
big that fewer than ``per_engine`` chunks per engine are left (so slow engines or
heavy items still balance), and never so small that per-chunk overhead dominates.

The engine-side functions here run inside ipyparallel ``apply`` calls; pxpool is
importable on the engines, so they travel by reference.
"""

from __future__ import annotations

import math
import pickle
import statistics
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .blocks import BlockResults, apply_row_blocks, flatten, join, rows_of
from .budget import spent

__all__ = [
    "ChunkSizer",
    "combine",
    "kind_of",
    "flat_args",
    "pack",
    "run_items",
    "run_part",
    "unpack",
]

# at most this many out-of-band buffers are sent as separate frames (ipyparallel cans
# the top-level items of a tuple of fewer than 64 items); beyond it, pickle in-band
MAX_BUFFERS = 48
OUT_OF_BAND_MIN_BYTES = 64 * 1024


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
                chunks = self._even_count(chunks, remaining / size)
            size = math.ceil(remaining / chunks)
            if self.even:
                self._plan = size
        return max(min(size, remaining), 0)

    def _even_count(self, chunks: int, exact: float) -> int:
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


# ---------------------------------------------------------------- packing


def pack(obj: Any) -> tuple[Any, ...]:
    """A flat tuple whose large buffers are uint8 arrays, sent by ipyparallel as frames.

    ipyparallel sends numpy arrays as separate frames but pickles pandas objects
    whole; pickle protocol 5 lets their column blocks travel as frames too. Layouts:
    ``("array", arr)``, ``("pickle5", payload, n, *n_buffers)``, ``("object", obj)``.
    """
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return ("array", obj)
    if type(obj).__module__.startswith("pandas"):
        buffers: list[pickle.PickleBuffer] = []

        def keep_in_band(buffer: pickle.PickleBuffer) -> bool:
            try:
                view = buffer.raw()
            except BufferError:  # not contiguous: pickle it in-band
                return True
            if view.nbytes < OUT_OF_BAND_MIN_BYTES or len(buffers) >= MAX_BUFFERS:
                return True
            buffers.append(buffer)
            return False

        payload = pickle.dumps(obj, protocol=5, buffer_callback=keep_in_band)
        arrays = [np.frombuffer(b.raw(), dtype=np.uint8) for b in buffers]
        return ("pickle5", payload, len(arrays), *arrays)
    return ("object", obj)


def unpack_from(flat: Sequence[Any], at: int = 0) -> tuple[Any, int]:
    """Decode one packed object starting at ``flat[at]``; returns it and the next position."""
    tag = flat[at]
    if tag == "pickle5":
        count = int(flat[at + 2])
        buffers = list(flat[at + 3 : at + 3 + count])
        return pickle.loads(flat[at + 1], buffers=buffers), at + 3 + count
    return flat[at + 1], at + 2


def unpack(packed: Sequence[Any]) -> Any:
    """Inverse of :func:`pack`."""
    return unpack_from(packed)[0]


# ---------------------------------------------------------------- engine side

_FAILED: dict[str, int] = {}


def _report_failure(token: str, index: int) -> None:
    """Make the failing item's index known to the client without touching the exception,
    so the engine's ``sys.last_traceback`` still shows the user's frames."""
    if len(_FAILED) > 256:
        _FAILED.clear()
    _FAILED[token] = index
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:  # not inside an engine (called directly, as in unit tests)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            publisher = getattr(shell, "data_pub", None)
        if publisher is not None:
            publisher.publish_data({"pxpool_failed_index": index})
    except Exception:  # the client asks the engine instead (see _mapper)
        pass


def failed_index(token: str) -> int | None:
    """The index recorded by a chunk that failed on this engine, if any."""
    return _FAILED.pop(token, None)


def run_items(
    f: Callable[..., Any],
    token: str,
    start: int,
    items: Sequence[Any],
    star: bool,
    budget: float = 0.0,
) -> tuple[float, bytes, int]:
    """Apply ``f`` to the items; returns (seconds spent, pickled results, items done).

    The results are pickled here so that the measured cost includes it: for tiny
    items, serializing the results costs more than computing them.

    With a ``budget`` (seconds), the engine may stop early (:mod:`pxpool._data.budget`):
    the client sends the items not done to the engines again.
    """
    began = time.perf_counter()
    out: list[Any] = []
    try:
        if budget > 0:
            _apply_budgeted(f, items, star, out, began, budget)
        else:
            _apply(f, items, star, out)
    except BaseException:
        _report_failure(token, start + len(out))
        raise
    payload = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
    return time.perf_counter() - began, payload, len(out)


_BUDGET_BATCH = 4096  # most items between two looks at the clock


def _apply(f: Callable[..., Any], items: Iterable[Any], star: bool, out: list[Any]) -> None:
    append = out.append
    if star:
        for args in items:
            append(f(*args))
    else:
        for item in items:
            append(f(item))


def _apply_budgeted(
    f: Callable[..., Any],
    items: Sequence[Any],
    star: bool,
    out: list[Any],
    began: float,
    budget: float,
) -> None:
    """:func:`_apply` in batches of doubling size, looking at the clock between them."""
    total, batch = len(items), 1
    while len(out) < total and not spent(began, budget, len(out), total):
        done = len(out)
        _apply(f, items[done : done + batch], star, out)
        batch = min(batch * 2, _BUDGET_BATCH)


def run_part(
    f: Callable[..., Any],
    token: str,
    start: int,
    block: int,
    budget: float,
    n_args: int,
    *flat: Any,
) -> tuple:
    """Apply ``f`` to one partition (and the matching partitions of further arrays), in
    blocks of ``block`` rows (:mod:`pxpool._data.blocks`; 0: the whole partition at once),
    stopping early if a ``budget`` is spent (:mod:`pxpool._data.budget`; 0: no budget).

    Returns ``(seconds, rows done, *pack(result))`` so array and pandas results travel
    as frames.
    """
    args, at = [], 0
    for _ in range(n_args):
        value, at = unpack_from(flat, at)
        args.append(value)
    rows = len(args[0]) if args else 0
    return run_blocks(f, token, start, block, budget, rows, rows_of(args))


def run_blocks(
    f: Callable[..., Any],
    token: str,
    start: int,
    block: int,
    budget: float,
    rows: int,
    rows_of: Callable[[int, int], Sequence[Any]],
) -> tuple:
    """What :func:`run_part` returns, for ``rows`` rows that ``rows_of`` builds."""
    try:
        seconds, result, done = apply_row_blocks(f, rows, rows_of, block, budget)
    except BaseException:
        _report_failure(token, start)
        raise
    return (seconds, done, *pack(result))


def flat_args(parts: Sequence[Any]) -> list[Any]:
    """Pack several partitions into one flat argument list for :func:`run_part`."""
    return [x for part in parts for x in pack(part)]


# ---------------------------------------------------------------- results


def combine(kind: str, results: list[Any]) -> Any:
    """Join per-partition results: arrays concatenate, pandas objects concatenate in
    row order (their index kept), anything else comes back as a list."""
    if kind not in ("numpy", "pandas") or not results:
        return results
    joined = join(results)  # the rule that joins one chunk's blocks joins the chunks too
    return flatten(joined) if isinstance(joined, BlockResults) else joined
