"""What runs on the engines for fast data: the map's runners and the shared-memory halves.

The client sends these functions with ipyparallel ``apply``; an engine imports this
module by its path when the first of them arrives, so it stays light: the standard
library, numpy, IPython (inside the functions that need the shell) and pandas (only
where rows are rebuilt as a pandas object), plus the ``_data`` modules shared by both
sides (:mod:`~pxpool._data.wire`, :mod:`~pxpool._data.blocks`,
:mod:`~pxpool._data.budget`, :mod:`~pxpool._data.shm`, the slot layout of
:mod:`~pxpool._data.arena`). Nothing here imports ipyparallel or the client side.

- A chunk of ``pool.map``: :func:`run_items` (items), :func:`run_part` (rows sent
  over the network), :func:`run_shared_part` (rows in shared memory); each returns a
  :class:`~pxpool._data.wire.ChunkReply`, flat. A chunk that fails records the index
  of the failing item or row for :func:`failed_index`.
- Shared memory: :func:`engine_attach` binds pushed arrays, :func:`engine_export`
  serves a pull, :func:`drop_gone` unmaps slots the client let go; :func:`engine_shm`
  tells the client which shared memory an engine sees (:func:`engine_host`: its host).
"""

from __future__ import annotations

import mmap
import os
import socket
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import columns, direct, replies, shm
from .blocks import apply_row_blocks, rows_of
from .budget import spent
from .shm import HEADER_BYTES, HEADER_SLOTS, Descriptor
from .wire import ChunkReply, pack_pickled, unpack_from

__all__ = [
    "drop_gone",
    "engine_attach",
    "engine_export",
    "engine_host",
    "engine_reads",
    "engine_shm",
    "failed_index",
    "run_items",
    "run_part",
    "run_shared_part",
]

_HOST = socket.gethostname()
_BUDGET_BATCH = 4096  # most items between two looks at the clock

# ---------------------------------------------------------------- failures

_FAILED: dict[str, int] = {}


def _report_failure(token: str, index: int) -> None:
    """Make the failing item's index known to the client without touching the exception,
    so the engine's ``sys.last_traceback`` still shows the user's frames."""
    if len(_FAILED) > 256:
        _FAILED.clear()
    _FAILED[token] = index
    try:
        from IPython.core.getipython import get_ipython

        shell = get_ipython()
        if shell is None:  # not inside an engine (called directly, as in unit tests)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            publisher = getattr(shell, "data_pub", None)
        if publisher is not None:
            publisher.publish_data({"pxpool_failed_index": index})
    except Exception:  # the client asks the engine instead (failed_index)
        pass


def failed_index(token: str) -> int | None:
    """The index recorded by a chunk that failed on this engine, if any."""
    return _FAILED.pop(token, None)


# ---------------------------------------------------------------- items


def run_items(
    f: Callable[..., Any],
    token: str,
    start: int,
    items: Sequence[Any],
    star: bool,
    budget: float = 0.0,
) -> tuple[Any, ...]:
    """Apply ``f`` to the items (``f(*item)`` with ``star``); a flat
    :class:`~pxpool._data.wire.ChunkReply` of their results, pickled here so that the
    measured cost includes it: for tiny items, pickling the results costs more than
    computing them.

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
    body = pack_pickled(out)
    return ChunkReply(time.perf_counter() - began, len(out), body).flat()


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


# ---------------------------------------------------------------- rows


def run_part(
    f: Callable[..., Any],
    token: str,
    start: int,
    block: int,
    budget: float,
    n_args: int,
    *flat: Any,
) -> tuple[Any, ...]:
    """Apply ``f`` to one partition (and the matching partitions of further arrays), in
    blocks of ``block`` rows (:mod:`pxpool._data.blocks`; 0: the whole partition at once),
    stopping early if a ``budget`` is spent (:mod:`pxpool._data.budget`; 0: no budget).

    Returns a flat :class:`~pxpool._data.wire.ChunkReply` whose body is the packed
    result, so array and pandas results travel as frames.
    """
    args, at = [], 0
    for _ in range(n_args):
        value, at = unpack_from(flat, at)
        args.append(value)
    rows = len(args[0]) if args else 0
    return _run_blocks(f, token, start, block, budget, rows, rows_of(args))


def _run_blocks(
    f: Callable[..., Any],
    token: str,
    start: int,
    block: int,
    budget: float,
    rows: int,
    rows_of: Callable[[int, int], Sequence[Any]],
    out: tuple[str, int] | None = None,
) -> tuple[Any, ...]:
    """What :func:`run_part` returns, for ``rows`` rows that ``rows_of`` builds; the
    result's buffers go into the slot ``out`` when there is one."""
    try:
        # into a slot: blocks unjoined, the client's join is their one copy (blocks.Pieces)
        joined = out is None
        seconds, result, done = apply_row_blocks(f, rows, rows_of, block, budget, joined)
    except BaseException:
        _report_failure(token, start)
        raise
    return ChunkReply(seconds, done, replies.pack_into(result, out)).flat()


# ---------------------------------------------------------------- rows in shared memory


def run_shared_part(
    f: Callable[..., Any],
    token: str,
    start: int,
    block: int,
    spec: tuple[Any, ...],
    budget: float = 0.0,
    out: tuple[str, int] | None = None,
) -> tuple[Any, ...]:
    """Apply ``f`` to the chunk's rows of the segments ``spec`` names
    (:class:`pxpool._data.shared_parts.SharedInputs`), rebuilt block by block so each
    block's copy stays in cache. Returns what :func:`run_part` returns; with ``out``
    (an arena slot the client leased for it), the result's buffers travel through
    that slot (:mod:`pxpool._data.replies`)."""
    first, stop, layouts = spec
    mapped = _segments(layouts)
    try:

        def view(descriptor: Descriptor) -> Any:
            return mapped[_key(descriptor)]

        ready = [
            columns.each_column(lay, lambda c: columns.prepare(c, view, first, stop))
            for lay in layouts
        ]

        def rows_of(a: int, b: int) -> list[Any]:
            return [columns.rebuild(layout, first + a, first + b, view) for layout in ready]

        return _run_blocks(f, token, start, block, budget, stop - first, rows_of, out)
    finally:
        mapped.clear()  # the maps go with their arrays; f's copies stay valid
        drop_gone()  # a failed map's retired slots, once its last chunk is over


def _segments(layouts: Sequence[tuple[Any, ...]]) -> dict[Any, Any]:
    """Every segment the layouts name, mapped once (read-only) for the whole chunk, and
    every array the engine reads from the client (:class:`pxpool._data.direct.Remote`)."""
    descriptors: list[Descriptor] = []
    for layout in layouts:
        columns.each_column(layout, lambda c: descriptors.extend(columns.descriptors(c)))
    return {_key(d): _attach(d) for d in descriptors}


def _key(descriptor: Descriptor) -> Any:
    """A segment by its name; an array of the client by all of it (address, shape, dtype)."""
    kind, details = descriptor
    return details if kind == "direct" else details[0]


def _attach(descriptor: Descriptor) -> Any:
    kind, details = descriptor
    if kind == "arena":
        return engine_view(details)  # stays mapped on the engine for the next map
    if kind == "direct":
        return direct.Remote(details)
    return shm.attach(details, writable=False)


# ---------------------------------------------------------------- push and pull


def engine_host() -> str:
    """The host this engine runs on (its name, for people)."""
    return _HOST


def engine_reads(pid: int, address: int, token: bytes) -> bool:
    """Whether this engine reads the client's memory (:func:`pxpool._data.direct.reads`)."""
    return direct.reads(pid, address, token)


def engine_shm() -> str:
    """Which shared memory this engine sees (:func:`pxpool._data.shm.identity`): the
    client uses shared memory with it only when its own is the same."""
    return shm.identity()


def engine_export(
    names: list[str], client_shm: str, prefix: str, threshold: int = shm.THRESHOLD
) -> list[tuple[str, Any]]:
    """Values of ``names`` for a pull: large arrays as segments when the client sees
    this engine's shared memory (``client_shm``, its :func:`pxpool._data.shm.identity`)
    (``("shm", descriptor)``), everything else by value (``("value", v)``)."""
    from IPython.core.getipython import get_ipython

    namespace = get_ipython().user_ns
    out: list[tuple[str, Any]] = []
    try:
        for name in names:
            if name not in namespace:
                raise NameError(f"name {name!r} is not defined on this engine")
            value = namespace[name]
            if (
                client_shm
                and client_shm == shm.identity()
                and shm.eligible(value, threshold)
                and shm.can_share(value.nbytes)
            ):
                out.append(("shm", shm.export(value, prefix)))
            else:
                out.append(("value", value))
    except BaseException:
        for kind, item in out:
            if kind == "shm":
                shm.unlink(item[0])
        raise
    return out


_MAPS: dict[str, tuple[mmap.mmap, mmap.mmap, np.ndarray]] = {}  # slot -> header, data, holders
_HELD: dict[str, int] = {}  # slot -> live arrays over it on this engine


def engine_attach(engine_id: int, descriptors: dict[str, Descriptor]) -> None:
    """Bind each name to a read-only array: ``("arena", slot)`` over a slot this engine
    keeps mapped (:mod:`pxpool._data.arena`), ``("shm", descriptor)`` over a fresh
    segment (:mod:`pxpool._data.shm`)."""
    from IPython.core.getipython import get_ipython

    namespace = get_ipython().user_ns
    for name, (kind, descriptor) in descriptors.items():
        if kind == "shm":
            namespace[name] = shm.attach(descriptor, writable=False)
        else:
            namespace[name] = _hold(engine_id, *descriptor)


def engine_view(descriptor: tuple[Any, ...]) -> np.ndarray:
    """A read-only array over a slot, not held: for a map's input, which the client
    keeps leased until the map is over (:mod:`pxpool._data.shared_parts`)."""
    slot, capacity, shape, dtype, order = descriptor
    return np.ndarray(shape, dtype, _maps(slot, capacity)[1], 0, order=order)


def _hold(engine_id: int, slot: str, capacity: int, shape: Any, dtype: Any, order: Any) -> Any:
    """An array over a slot, held: this engine's pid in the slot's header until the
    last array over it is garbage collected."""
    header, data, holders = _maps(slot, capacity)
    array = np.ndarray(shape, dtype, data, 0, order=order)
    _HELD[slot] = _HELD.get(slot, 0) + 1
    holders[engine_id] = os.getpid()
    weakref.finalize(array, _let_go, slot, engine_id)
    return array


def _maps(slot: str, capacity: int) -> tuple[mmap.mmap, mmap.mmap, np.ndarray]:
    if slot not in _MAPS:
        drop_gone()
        with shm.opened(slot, writable=True) as fd:
            header = mmap.mmap(fd, HEADER_BYTES)
            data = mmap.mmap(fd, capacity, prot=mmap.PROT_READ, offset=HEADER_BYTES)
        _MAPS[slot] = (header, data, np.frombuffer(header, np.int32, HEADER_SLOTS))
    return _MAPS[slot]


def drop_gone() -> None:
    """Unmap slots the client closed or retired that no array here holds: their memory
    goes only once every process has unmapped them."""
    for gone in [s for s in _MAPS if not _HELD.get(s) and not shm.exists(s)]:
        _drop(gone)
    replies.drop_gone()


def _let_go(slot: str, engine_id: int) -> None:
    _HELD[slot] -= 1
    if _HELD[slot] == 0 and slot in _MAPS:
        _MAPS[slot][2][engine_id] = 0


def _drop(slot: str) -> None:
    header, data, holders = _MAPS.pop(slot)
    del holders
    header.close()
    data.close()
    _HELD.pop(slot, None)
