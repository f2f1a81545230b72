"""Moving data to and from engines: push/pull, scatter/gather and map.

- ``push``/``pull``: numpy arrays of 1 MB or more travel through shared memory to
  and from engines on this host (one copy; pushed arrays are read-only on the
  engines, see :mod:`pxpool._data.shm` for their lifetime), and over the network to
  engines elsewhere. "This host" is decided by the hostname each engine reports,
  asked once per engine and cached.
- ``scatter``/``gather``: lists, numpy arrays (along axis 0) and pandas objects (row
  partitions that keep their index), one part per engine, big parts as above.
- ``pool_map``: load-balanced map with chunk sizes from measured cost
  (see :mod:`pxpool._data.mapper`; what runs on the engines is :mod:`pxpool._data.agent`).
"""

from __future__ import annotations

import concurrent.futures
import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ._data import agent, blocks, chunking, mapper
from ._data import arena as _arena
from ._data import shm as _shm
from ._data.options import MapOptions
from ._data.placement import local_engines
from ._data.ready import done_result
from ._data.spares import SPARES
from .errors import EngineNameError, MapError, UnpicklableFunctionError

if TYPE_CHECKING:
    import ipyparallel as ipp

    from ._core.core import PoolCore
    from ._reliability.timeouts import TaskGuard

__all__ = ["MapError", "UnpicklableFunctionError", "push", "pull", "scatter", "gather", "pool_map"]

WAIT_SLICE = 1.0


# ---------------------------------------------------------------- helpers


def _ids(pool: PoolCore, targets: Any) -> list[int]:
    view = pool.view(targets)  # validates the targets, naming the valid ids
    if targets is None or targets == "all":
        return sorted(view.client.ids)
    return [targets] if isinstance(targets, int) else list(targets)


def _wait(pool: PoolCore, results: list[ipp.AsyncResult]) -> list[Any]:
    """Wait for every result, bounded by replies arriving and the pool still running."""
    pending = set(results)
    while pending:
        _, pending = concurrent.futures.wait(pending, timeout=WAIT_SLICE)
        if pending:
            pool.running()
    return [done_result(r) for r in results]


# ---------------------------------------------------------------- push / pull


def push(pool: PoolCore, namespace: dict[str, Any], targets: Any = None) -> None:
    """Set names on the engines; large arrays reach local engines through shared memory."""
    ids = _ids(pool, targets)
    _push_each(pool, {i: namespace for i in ids})


def _push_each(pool: PoolCore, per_engine: dict[int, dict[str, Any]]) -> None:
    """Push a (possibly different) namespace to each engine, sharing one copy per array:
    in a reused slot of the pool's arena (:mod:`pxpool._data.arena`), else a fresh segment."""
    client = pool.live_client()
    big = {id(v): v for ns in per_engine.values() for v in ns.values() if _shm.eligible(v)}
    local = local_engines(pool, list(per_engine)) if big and _shm.available() else set()
    prefix = _shm.pool_prefix(pool.name)
    arena = _arena.arena_for(prefix)
    shared: dict[int, _shm.Descriptor] = {}
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
                results.append(client[engine_id].apply_async(agent.engine_attach, engine_id, mine))
        _wait(pool, results)
    finally:
        for kind, descriptor in shared.values():
            if kind == "shm":
                _shm.unlink(descriptor[0])
        for slot in leased:
            arena.done(slot)


def pull(pool: PoolCore, names: str | list[str] | tuple[str, ...], targets: Any = None) -> Any:
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


def _pull_each(pool: PoolCore, ids: list[int], names: list[str]) -> list[list[Any]]:
    client = pool.live_client()
    prefix = _shm.pool_prefix(pool.name)
    here = _shm.identity() if _shm.available() else ""
    results = [client[i].apply_async(agent.engine_export, names, here, prefix) for i in ids]
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


def scatter(pool: PoolCore, name: str, values: Any, targets: Any = None) -> None:
    """Give engine k the k-th of ``len(targets)`` contiguous parts of ``values``."""
    ids = _ids(pool, targets)
    parts = split(values, len(ids))
    _push_each(pool, {i: {name: part} for i, part in zip(ids, parts, strict=True)})


def gather(pool: PoolCore, name: str, targets: Any = None) -> Any:
    """Join the parts of ``name`` held by the engines, in engine order."""
    ids = _ids(pool, targets)
    return join([row[0] for row in _pull_each(pool, ids, [name])])


# ---------------------------------------------------------------- map


DEFAULT_MAP_OPTIONS = MapOptions()


def pool_map(
    pool: PoolCore,
    tasks: TaskGuard,
    f: Any,
    values: Any,
    *more: Any,
    options: MapOptions = DEFAULT_MAP_OPTIONS,
) -> Any:
    """Apply ``f`` over ``values`` on the engines, load-balanced, in chunks.

    This docstring is the one place that documents ``pool.map`` and its options
    (``Pool.map`` takes them as keywords and builds the :class:`MapOptions`).

    - list, range, any iterable (also a generator of unknown length, read lazily):
      ``f(item)`` per item (``f(a, b)`` with ``*more`` iterables, zipped); returns a
      list, in input order unless ``ordered=False``.
    - numpy array / pandas DataFrame or Series: ``f(partition)`` per block of rows,
      vectorised as with Dask's ``map_partitions`` (calling ``f`` per row would spend
      more time in Python calls than in the work). Array results are concatenated
      along axis 0; pandas results are concatenated with their index, in row order;
      anything else comes back as a list with one value per partition. Further
      inputs in ``*more`` must have as many rows and are sliced alike. An empty input
      runs ``f`` once on the empty input, so the result has its type. When every
      engine shares memory with the client and the input is at least 1 MiB (any
      column dtype; not a MultiIndex), partitions and results travel through shared
      memory instead of the network (:mod:`pxpool._data.shared_parts`,
      :mod:`pxpool._data.replies`); ``f`` gets the same writable partitions either way.

    A failure raises :class:`MapError` naming the engine and the item (or partition),
    with the engine's error as ``__cause__``; an item that cannot be pickled raises
    :class:`~pxpool.UnpicklableArgumentError` naming it, a function that cannot,
    :class:`UnpicklableFunctionError`.

    Options:

    - ``chunksize``: ``"auto"`` (the default) first sends each engine an equal share
      that stops early and hands the rest back once its cost is measured (over an
      iterator: one item per engine), then sizes chunks to take tens of milliseconds
      of engine time (rows: about 0.2 s, with ``f`` called on cache-sized blocks of
      rows within a chunk); an ``int`` fixes the items per chunk, or the rows of the
      partition ``f`` sees.
    - ``ordered``: ``True`` (the default) returns results in input order; ``False``
      in the order chunks completed.
    - ``progress``: ``None`` (the default) shows a ``tqdm.auto`` bar (a widget in a
      notebook, text in a terminal that is a TTY) once the map has run for 2 s;
      ``True`` at once, ``False`` never.
    - ``timeout``: seconds one chunk may run on its engine (default: no limit); then
      the engine is interrupted (killed and replaced if it does not yield) and
      :class:`~pxpool.TaskTimeout` names the chunk's items.
    - ``retries``: how often a chunk whose engine died under it runs again on another
      engine (default 1), before :class:`~pxpool.TaskLost` says which engine died and
      how. Every result arrives exactly once: a chunk is only sent again when its
      engine is known to be gone.
    """
    return mapper.pool_map(pool, tasks, f, values, *more, options=options)


def release_pool_memory(pool_name: str) -> None:
    """At a pool's teardown: its arena's slots, segments a crashed transfer left, and
    the client's spare buffers for encoding maps (another pool makes new ones)."""
    prefix = _shm.pool_prefix(pool_name)
    _arena.close(prefix)  # the slots pushes reuse
    _shm.cleanup(prefix)  # segments a crashed transfer left
    SPARES.clear()
