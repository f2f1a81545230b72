"""Moving data to and from engines: push/pull, scatter/gather and map.

- ``push``/``pull``: numpy arrays of 1 MB or more travel through shared memory to
  and from engines on this host (one copy; pushed arrays are read-only on the
  engines, see :mod:`pxpool._data.shm` for their lifetime), and over the network to
  engines elsewhere. "This host" is decided by the hostname each engine reports,
  asked once per engine and cached.
- ``scatter``/``gather``: lists, numpy arrays (along axis 0) and pandas objects (row
  partitions that keep their index), one part per engine, big parts as above.
- ``pool_map``: load-balanced map with chunk sizes from measured cost
  (see :mod:`pxpool._data.chunking` and :mod:`pxpool._data.mapper`).
"""

from __future__ import annotations

import concurrent.futures
import math
import re
import socket
from typing import TYPE_CHECKING, Any

import numpy as np

from ._data import arena as _arena
from ._data import blocks, chunking, mapper
from ._data import shm as _shm
from ._data.ready import done_result
from ._data_errors import EngineNameError, MapError, UnpicklableFunctionError

if TYPE_CHECKING:
    import ipyparallel as ipp

    from .pool import Pool

__all__ = ["MapError", "UnpicklableFunctionError", "push", "pull", "scatter", "gather", "pool_map"]

HOST_TIMEOUT = 30.0  # seconds for engines to report their hostname
WAIT_SLICE = 1.0
_hosts: dict[str, str] = {}  # engine uuid -> hostname; a restarted engine gets a new uuid


# ---------------------------------------------------------------- helpers


def _ids(pool: Pool, targets: Any) -> list[int]:
    view = pool.view(targets)  # validates the targets, naming the valid ids
    if targets is None or targets == "all":
        return sorted(view.client.ids)
    return [targets] if isinstance(targets, int) else list(targets)


def local_engines(pool: Pool, ids: list[int]) -> set[int]:
    """The engines among ``ids`` that run on this host (their reported hostname is ours)."""
    client = pool.client
    uuids = {i: str(client._engines.get(i)) for i in ids}
    missing = [i for i in ids if uuids[i] not in _hosts]
    if missing:
        replies = client.direct_view(missing).apply_async(_shm.engine_host)
        for engine_id, host in zip(missing, replies.get(timeout=HOST_TIMEOUT), strict=True):
            _hosts[uuids[engine_id]] = host
    here = socket.gethostname()
    return {i for i in ids if _hosts[uuids[i]] == here}


def _wait(pool: Pool, results: list[ipp.AsyncResult]) -> list[Any]:
    """Wait for every result, bounded by replies arriving and the pool still running."""
    pending = set(results)
    while pending:
        _, pending = concurrent.futures.wait(pending, timeout=WAIT_SLICE)
        if pending:
            pool._running()
    return [done_result(r) for r in results]


# ---------------------------------------------------------------- push / pull


def push(pool: Pool, namespace: dict[str, Any], targets: Any = None) -> None:
    """Set names on the engines; large arrays reach local engines through shared memory."""
    ids = _ids(pool, targets)
    _push_each(pool, {i: namespace for i in ids})


def _push_each(pool: Pool, per_engine: dict[int, dict[str, Any]]) -> None:
    """Push a (possibly different) namespace to each engine, sharing one copy per array:
    in a reused slot of the pool's arena (:mod:`pxpool._data.arena`), else a fresh segment."""
    client = pool.client
    big = {id(v): v for ns in per_engine.values() for v in ns.values() if _shm.eligible(v)}
    local = local_engines(pool, list(per_engine)) if big and _shm.available() else set()
    prefix = _shm.pool_prefix(pool.name)
    arena = _arena.arena_for(prefix)
    shared: dict[int, _arena.Descriptor] = {}
    leased: list[_arena.Slot] = []
    try:
        for key, array in big.items():
            holders = [i for i in local if key in map(id, per_engine[i].values())]
            if not holders or not _shm.can_share(array.nbytes):
                continue
            shared[key], slot = arena.copy_in(array, holders)
            if slot is not None:
                leased.append(slot)
        results = []
        for engine_id, ns in per_engine.items():
            mine = {
                k: shared[id(v)] for k, v in ns.items() if engine_id in local and id(v) in shared
            }
            plain = {k: v for k, v in ns.items() if k not in mine}
            if plain:
                results.append(client[engine_id].push(plain, block=False))
            if mine:
                results.append(client[engine_id].apply_async(_arena.engine_attach, engine_id, mine))
        _wait(pool, results)
    finally:
        for kind, descriptor in shared.values():
            if kind == "shm":
                _shm.unlink(descriptor[0])
        for slot in leased:
            arena.done(slot)


def pull(pool: Pool, names: str | list[str] | tuple[str, ...], targets: Any = None) -> Any:
    """Read names back: one value per engine, or one value for a single ``int`` target."""
    ids = _ids(pool, targets)
    wanted = [names] if isinstance(names, str) else list(names)
    try:
        replies = _pull_each(pool, ids, wanted)
    except Exception as exc:  # ipyparallel's RemoteError: "name 'x' is not defined ..."
        if getattr(exc, "ename", None) != "NameError":
            raise
        named = re.findall(r"name '([^']+)'", str(getattr(exc, "evalue", "")))
        engine = (getattr(exc, "engine_info", None) or {}).get("engine_id")
        raise EngineNameError(named or wanted, [engine] if engine is not None else ids) from exc
    values = [r[0] if isinstance(names, str) else r for r in replies]
    return values[0] if isinstance(targets, int) else values


def _pull_each(pool: Pool, ids: list[int], names: list[str]) -> list[list[Any]]:
    client = pool.client
    prefix = _shm.pool_prefix(pool.name)
    here = socket.gethostname() if _shm.available() else ""
    results = [client[i].apply_async(_shm.engine_export, names, here, prefix) for i in ids]
    replies = _wait(pool, results)
    out: list[list[Any]] = []
    try:
        for reply in replies:
            row = []
            for kind, item in reply:
                row.append(_shm.attach(item, writable=True) if kind == "shm" else item)
            out.append(row)
    finally:
        for reply in replies:
            for kind, item in reply:
                if kind == "shm":
                    _shm.unlink(item[0])
    return out


# ---------------------------------------------------------------- scatter / gather


def split(values: Any, parts: int) -> list[Any]:
    """``values`` cut into ``parts`` contiguous pieces of near-equal length (axis 0)."""
    kind = chunking.kind_of(values)
    n = len(values) if kind != "iterator" else None
    if n is None:
        values = list(values)
        n = len(values)
    bounds = [math.floor(i * n / parts) for i in range(parts + 1)]
    if kind in ("numpy", "pandas"):
        return [blocks.part_of(values, a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
    return [list(values[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def join(parts: list[Any]) -> Any:
    """Inverse of :func:`split`: concatenate arrays, pandas objects (index kept) or lists."""
    if parts and all(isinstance(p, np.ndarray) and p.ndim >= 1 for p in parts):
        return np.concatenate(parts, axis=0)
    if parts and all(chunking.kind_of(p) == "pandas" for p in parts):
        import pandas as pd

        return pd.concat(parts)
    return [item for part in parts for item in part]


def scatter(pool: Pool, name: str, values: Any, targets: Any = None) -> None:
    """Give engine k the k-th of ``len(targets)`` contiguous parts of ``values``."""
    ids = _ids(pool, targets)
    parts = split(values, len(ids))
    _push_each(pool, {i: {name: part} for i, part in zip(ids, parts, strict=True)})


def gather(pool: Pool, name: str, targets: Any = None) -> Any:
    """Join the parts of ``name`` held by the engines, in engine order."""
    ids = _ids(pool, targets)
    return join([row[0] for row in _pull_each(pool, ids, [name])])


# ---------------------------------------------------------------- map


def pool_map(
    pool: Pool,
    f: Any,
    values: Any,
    *more: Any,
    chunksize: int | str = "auto",
    ordered: bool = True,
    progress: bool | None = None,
    timeout: float | None = None,
    retries: int = 1,
) -> Any:
    """Apply ``f`` over ``values`` on the engines, load-balanced, in chunks.

    - list, range, any iterable (also a generator of unknown length, read lazily):
      ``f(item)`` per item (``f(a, b)`` with ``*more`` iterables, zipped); returns a
      list, in input order unless ``ordered=False`` (then in completion order).
    - numpy array / pandas DataFrame or Series: ``f(partition)`` per block of rows,
      vectorised as with Dask's ``map_partitions`` (calling ``f`` per row would spend
      more time in Python calls than in the work). Array results are concatenated
      along axis 0; pandas results are concatenated with their index, in row order;
      anything else comes back as a list with one value per partition. Partition
      sizes are chosen from measured cost unless ``chunksize`` (rows) is given. An
      empty input runs ``f`` once on the empty input, so the result has its type.
      When every engine is on this host and the input is plain numeric data of at
      least 1 MiB, partitions travel through shared memory instead of the network
      (:mod:`pxpool._data.shared_parts`); ``f`` gets the same writable partitions either way.

    ``chunksize="auto"`` starts with small chunks and grows them until one takes
    tens of milliseconds on an engine. ``progress`` shows a bar (ipywidgets in a
    notebook, tqdm in a terminal) when the map runs longer than 2 s; ``True`` shows
    it at once, ``False`` never. A failure raises :class:`MapError` naming the engine
    and the item (or partition), with the engine's error as ``__cause__``.

    ``timeout``: seconds one chunk may run on its engine; then the engine is
    interrupted (killed and replaced if it does not yield) and
    :class:`~pxpool.TaskTimeout` names the chunk's items. ``retries``: how often a chunk
    whose engine died under it runs again on another engine, before
    :class:`~pxpool.TaskLost` says which engine died and how. Every result arrives
    exactly once: a chunk is only re-sent when its engine is known to be gone.
    """
    return mapper.pool_map(
        pool,
        f,
        values,
        *more,
        chunksize=chunksize,
        ordered=ordered,
        progress=progress,
        timeout=timeout,
        retries=retries,
    )
