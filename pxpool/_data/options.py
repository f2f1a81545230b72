"""The options of one ``pool.map``, checked once where the user gave them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .._reliability.timeouts import DEFAULT_RETRIES

# the pool's task lane, as pool.map sends a chunk on it:
# lane(f, args, kwargs, timeout, retries, runner=..., label=..., chunk=True) -> a future of
# the reply
ChunkLane = Callable[..., "Future[Any]"]


@dataclass(frozen=True)
class MapOptions:
    """``pool.map``'s keyword arguments; :func:`pxpool.data.pool_map` documents them."""

    chunksize: int | str = "auto"
    ordered: bool = True
    progress: bool | None = None
    timeout: float | None = None
    retries: int = DEFAULT_RETRIES  # a chunk whose engine died runs again elsewhere
    lane: ChunkLane | None = None  # chunks travel on it; None: ipyparallel's scheduler

    def __post_init__(self) -> None:
        chunksize = self.chunksize
        if chunksize != "auto" and (
            not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1
        ):
            raise ValueError(f"chunksize must be a positive int or 'auto'; got {chunksize!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds; got {self.timeout!r}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0; got {self.retries!r}")
