"""Moving data to and from engines: push/pull, scatter/gather and map.

The first version delegates to ipyparallel's views; the fast, data-aware versions
(chunking from measured cost, numpy and pandas partitions, shared memory) replace
these bodies behind the same signatures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import Pool


def push(pool: Pool, namespace: dict[str, Any], targets: Any = None) -> None:
    pool.view(targets).push(namespace, block=True)


def pull(pool: Pool, names: str | list[str] | tuple[str, ...], targets: Any = None) -> Any:
    return pool.view(targets).pull(names, block=True)


def scatter(pool: Pool, name: str, values: Any, targets: Any = None) -> None:
    pool.view(targets).scatter(name, values, block=True)


def gather(pool: Pool, name: str, targets: Any = None) -> Any:
    return pool.view(targets).gather(name, block=True)


def pool_map(
    pool: Pool,
    f: Any,
    values: Any,
    *more: Any,
    chunksize: int | str = "auto",
    ordered: bool = True,
    progress: bool | None = None,
) -> Any:
    size = 1 if chunksize == "auto" else int(chunksize)
    return pool.lbview().map_sync(f, values, *more, chunksize=size, ordered=ordered)
