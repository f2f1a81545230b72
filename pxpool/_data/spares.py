"""Client buffers that text and pickled columns are encoded into, reused map to map.

Where the engines read the client's memory (:mod:`pxpool._data.direct`), a map encodes
its text and pickled columns chunk by chunk into byte arrays that the client holds
until the map is over. A chunk's encoding is a few MB; as fresh memory, those pages
come from the kernel one fault at a time. Measured in a 1M-row string map, joining each
chunk's encoded groups into a fresh buffer took ~2.2 ms per 2.8 MB, and ~0.2 ms into a
buffer whose pages were already there: ~6 ms of the client's CPU per map, which the
engines' two cores share with it.

So a map takes its buffers from :data:`SPARES` and gives them back when it is over
(:meth:`pxpool._data.shared_parts.SharedInputs.close`). A failed map does not give them
back: engines may still read them (its arrays are kept a while, then freed). At most
:data:`SPARE_BYTES` are kept, and none once a pool stops.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

__all__ = ["SPARES", "SPARE_BYTES", "Spares"]

SPARE_BYTES = 32 << 20  # spare buffers kept between maps, at most (a 1M-row string map uses 16 MiB)
ROUND = 1 << 20  # buffers are made in whole MiB, so that a slightly larger chunk fits


class Spares:
    """Byte buffers free for the next map; safe to use from several threads."""

    def __init__(self, limit: int = SPARE_BYTES) -> None:
        self._free: list[np.ndarray] = []
        self._limit = limit
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A buffer of at least ``nbytes`` bytes (uint8): the smallest spare one that
        fits, else a new one."""
        with self._lock:
            fitting = [i for i, b in enumerate(self._free) if b.nbytes >= nbytes]
            if fitting:  # by position: arrays compared with == give arrays, not a bool
                return self._free.pop(min(fitting, key=lambda i: self._free[i].nbytes))
        return np.empty(max(-(-nbytes // ROUND), 1) * ROUND, np.uint8)

    def give_back(self, buffers: Iterable[np.ndarray]) -> None:
        """Buffers no engine reads any more; the oldest go beyond the limit."""
        with self._lock:
            self._free.extend(buffers)
            while sum(b.nbytes for b in self._free) > self._limit:
                self._free.pop(0)

    def clear(self) -> None:
        """Keep none (a pool stopped: its memory goes back to the system)."""
        with self._lock:
            self._free.clear()

    def spare_bytes(self) -> int:
        """Bytes kept for the next maps."""
        with self._lock:
            return sum(b.nbytes for b in self._free)


SPARES = Spares()
