"""The input of one ``pool.map``, handed out in chunks, and a chunk as it was sent.

:class:`Source` reads items from a range, a sequence or an iterator (lazily), or
slices rows of arrays and pandas objects, and takes back what a chunk sent but did
not do (a budgeted first chunk that stopped early) to hand it out again first.
Each slice comes with the engine function that runs it (:mod:`pxpool._data.agent`)
and its arguments.
"""

from __future__ import annotations

import itertools
import math
import pickle
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from . import agent
from .blocks import part_of, row_bytes
from .chunking import kind_of
from .shared_parts import SharedInputs
from .wire import flat_args

__all__ = ["FIRST_BYTES", "Chunk", "Source", "Taken"]

# a map over a range or sequence starts with an equal share per engine (up to this
# many bytes of items), each run for about the item target before it returns the rest:
# this measures the cost without a round trip of small probes, and tiny items are
# done in one chunk per engine
FIRST_BYTES = 4 << 20

# (start, count, (engine function, its arguments after f, token and start))
Taken = tuple[int, int, tuple[Any, ...]]


class Chunk:
    """One chunk as sent: kept until it is done, to send it again if its engine dies."""

    __slots__ = ("number", "start", "count", "args", "tries", "running_since", "submitted", "asked")

    def __init__(self, number: int, start: int, count: int, args: tuple[Any, ...] = ()) -> None:
        self.number, self.start, self.count = number, start, count
        self.args = args  # (engine function, *its arguments): what apply_async sends
        self.tries = 0
        self.running_since: float | None = None  # when it was seen running on an engine
        self.submitted = self.asked = time.monotonic()  # reset when sent again

    def sent_again(self) -> None:
        """Its engine died: it runs again elsewhere, with a fresh clock for its timeout."""
        self.tries += 1
        self.running_since = None
        self.submitted = self.asked = time.monotonic()

    def label(self, partitions: bool) -> str:
        """``items 0..99`` or ``rows 0..99``: what messages call it."""
        return f"{'rows' if partitions else 'items'} {self.start}..{self.start + self.count - 1}"

    def items(self) -> list[Any] | tuple[Any, ...] | None:
        """The items a chunk of items sends (None for rows, or a range's numbers)."""
        if self.args and self.args[0] is agent.run_items:
            items = self.args[4]
            return items if isinstance(items, list | tuple) else None
        return None


class Source:
    """Hands out chunks of the input: ``take(n)`` returns (start, count, apply args)."""

    def __init__(self, kind: str, values: Any, more: tuple[Any, ...]) -> None:
        self.kind = kind
        self.values = values
        self.more = more
        self.shared: SharedInputs | None = None  # partitions from shared memory, if set
        self.block = 0  # rows per call of f within a partition chunk (0: the whole chunk)
        self.position = 0
        self.total: int | None = None
        self._returned: deque[tuple[int, int]] = deque()  # (start, count) not done yet
        self._iterator: Iterator[Any] | None = None
        if kind in ("numpy", "pandas"):
            self.total = len(values)
            for other in more:
                if len(other) != self.total:
                    raise ValueError(
                        f"pool.map: every input must have {self.total} rows like the first; "
                        f"got one with {len(other)}"
                    )
        elif kind in ("range", "sequence") and all(
            kind_of(m) in ("range", "sequence") for m in more
        ):
            self.total = min([len(values), *(len(m) for m in more)])
        else:
            self.kind = "iterator"
            self._iterator = iter(zip(values, *more, strict=False) if more else values)

    @property
    def partitions(self) -> bool:
        """True for rows of arrays or pandas objects: ``f`` gets partitions, not items."""
        return self.kind in ("numpy", "pandas")

    @property
    def remaining(self) -> int | None:
        if self.total is None:
            return None
        return self.total - self.position + sum(count for _, count in self._returned)

    def first_share(self, engines: int) -> int:
        """Items per engine in a map's first, budgeted chunks: an equal share of the
        input, at most about :data:`FIRST_BYTES` of it unless sending it costs nothing
        (a range, or rows in shared memory)."""
        assert self.total is not None
        share = max(math.ceil(self.total / max(engines, 1)), 1)
        if self.shared is not None and self.shared.later:
            # columns encoded chunk by chunk: half a share, so that the client encodes
            # the second half while the engines run the first
            return max(math.ceil(share / 2), 1)
        if self.shared is not None or (self.kind == "range" and not self.more):
            return share
        if self.partitions:
            return max(min(share, FIRST_BYTES // row_bytes((self.values, *self.more))), 1)
        sample = self._slice(0, min(self.total, 16))[2][1]
        try:
            per_item = len(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL)) / max(
                len(sample), 1
            )
        except Exception:  # unpicklable: the first chunk names the item (see the mapper)
            return 1
        return max(min(share, int(FIRST_BYTES // per_item)), 1)

    def give_back(self, start: int, count: int) -> None:
        """Items ``start .. start+count-1`` were sent but not done: hand them out again."""
        if count > 0:
            self._returned.append((start, count))

    def take(self, size: int, budget: float = 0.0) -> Taken | None:
        """The next chunk of at most ``size`` items or rows: (start, count, apply args).
        ``budget``: engine seconds after which the chunk may stop (ranges, sequences
        and partitions; see :mod:`pxpool._data.budget`)."""
        if self._returned:
            start, count = self._returned.popleft()
            if count > size:
                self._returned.appendleft((start + size, count - size))
            return self._slice(start, start + min(size, count), budget)
        start = self.position
        if self._iterator is not None:
            items = list(itertools.islice(self._iterator, size))
            if not items:
                return None
            self.position += len(items)
            return start, len(items), (agent.run_items, items, bool(self.more))
        assert self.total is not None
        stop = min(start + size, self.total)
        if stop <= start:
            return None
        self.position = stop
        return self._slice(start, stop, budget)

    def _slice(self, start: int, stop: int, budget: float = 0.0) -> Taken:
        count = stop - start
        if self.shared is not None:
            spec = self.shared.spec(start, stop)
            return start, count, (agent.run_shared_part, self.block, spec, budget)
        if self.partitions:
            parts = [part_of(v, start, stop) for v in (self.values, *self.more)]
            flat = flat_args(parts)
            return start, count, (agent.run_part, self.block, budget, len(parts), *flat)
        if self.more:
            items: Any = list(zip(*(v[start:stop] for v in (self.values, *self.more)), strict=True))
        else:
            items = self.values[start:stop]  # a range stays a range: a few bytes to send
            if self.kind == "sequence" and not isinstance(items, list | tuple):
                items = list(items)
        return start, count, (agent.run_items, items, bool(self.more), budget)
