"""A chunk's result through shared memory, when the map's engines share it with the client.

Over the network a result's buffers go from the engine to the scheduler, to the
client (and to the hub, which records every message): for 4 MB that is ~15 ms on
two busy cores, more than a cheap ``f`` takes on the rows. So when the map's input
is in shared memory, the client leases a slot of its arena for each chunk
(:mod:`pxpool._data.arena`, reused from map to map so neither side faults its pages
in again), the engine pickles its result with protocol 5 and writes the large
buffers into that slot (:func:`pack_into`), and the reply carries only the pickle's
small payload and where each buffer is. Results must outlive the slot, which the
next map reuses: the client reads arrays and pandas objects in place
(:func:`read_in_place`) and holds their slots until the map's join has copied them
(up to a bound), and copies anything else out (:func:`read`) and gives the slot back.

Buffers that do not fit the slot travel as frames, as :func:`pxpool._data.wire.pack`
sends them. Both sides: the engine's half keeps a writable mapping of each slot it
wrote to (:func:`pack_into`, :func:`drop_gone`); the client's half reads with its
own mapping. Standard library and numpy only.
"""

from __future__ import annotations

import mmap
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import shm
from .blocks import Pieces, joins
from .shm import HEADER_BYTES
from .wire import MAX_BUFFERS, OUT_OF_BAND_MIN_BYTES, pack

__all__ = ["TAG", "drop_gone", "pack_into", "read", "read_in_place"]

TAG = "slot5"  # a packed result whose buffers are in a slot: (TAG, payload, places, n, *frames)
ALIGN = 64  # buffers start on cache lines
PLAIN_KINDS = "biufcmM"  # numpy dtype kinds whose values a join copies
MAX_LABELS = 4096  # column labels of a frame read in place: too few to leave the pickle

_WRITABLE: dict[str, mmap.mmap] = {}  # engine: slot name -> its data, mapped read-write


def _data_of(slot: str, capacity: int) -> mmap.mmap:
    if slot not in _WRITABLE:
        drop_gone()
        with shm.opened(slot, writable=True) as fd:
            _WRITABLE[slot] = mmap.mmap(fd, capacity, offset=HEADER_BYTES)
    return _WRITABLE[slot]


def pack_into(obj: Any, out: tuple[str, int] | None) -> tuple[Any, ...]:
    """``obj`` packed for the client, its large buffers written into the slot ``out``
    (name, capacity) while they fit; without a slot, :func:`pxpool._data.wire.pack`."""
    if out is None:
        return pack(obj)
    data = _data_of(*out)
    places: list[tuple[int, int]] = []  # (offset in the slot, bytes) or (-1, frame index)
    frames: list[np.ndarray] = []
    at = 0

    def place(buffer: pickle.PickleBuffer) -> bool:
        nonlocal at
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: pickle it in-band
            return True
        size = view.nbytes
        if size < OUT_OF_BAND_MIN_BYTES:
            return True
        if at + size <= len(data):
            data[at : at + size] = view
            places.append((at, size))
            at += -(-size // ALIGN) * ALIGN
        elif len(frames) < MAX_BUFFERS:
            frames.append(np.frombuffer(view, np.uint8))
            places.append((-1, len(frames) - 1))
        else:
            return True
        return False

    payload = pickle.dumps(obj, protocol=5, buffer_callback=place)
    return (TAG, payload, tuple(places), len(frames), *frames)


def read(body: Sequence[Any], memory: mmap.mmap, copy: bool = True) -> Any:
    """The result :func:`pack_into` packed, with ``memory`` the client's mapping of the
    slot (header included). Buffers are copied out: writable, and the client's own;
    ``copy=False``: views of the slot, valid until the slot is written again."""
    _, payload, places, count, *frames = body
    assert len(frames) == count
    buffers: list[Any] = []
    with memoryview(memory) as whole:
        for offset, size in places:
            if offset < 0:
                buffers.append(frames[size])
            else:
                begin = HEADER_BYTES + offset
                part = whole[begin : begin + size]  # outlives ``whole``: slices hold the map
                buffers.append(bytearray(part) if copy else part)
    return pickle.loads(payload, buffers=buffers)


def read_in_place(body: Sequence[Any], memory: mmap.mmap) -> Any | None:
    """The result with its buffers left in the slot, when the map's join will copy
    every one of them (:func:`copied_by_join`), alone or as
    :class:`~pxpool._data.blocks.Pieces`; None for anything else."""
    result = read(body, memory, copy=False)
    parts = result if isinstance(result, Pieces) else (result,)
    return result if all(copied_by_join(part) for part in parts) else None


def copied_by_join(value: Any) -> bool:
    """Arrays, Series and DataFrames of plain numbers, booleans and datetimes, with a
    range or plain index: concatenating two of them makes new arrays of everything a
    slot could hold (dtypes of objects, categories or labels may be shared instead)."""
    if isinstance(value, np.ndarray):
        return value.ndim >= 1 and value.dtype.kind in PLAIN_KINDS
    if not joins(value):
        return False
    import pandas as pd

    index = value.index
    if not isinstance(index, pd.RangeIndex) and not _plain(index.dtype):
        return False
    if isinstance(value, pd.Series):
        return _plain(value.dtype)
    return (
        isinstance(value, pd.DataFrame)
        and len(value.columns) <= MAX_LABELS
        and all(_plain(dtype) for dtype in value.dtypes)
    )


def _plain(dtype: Any) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind in PLAIN_KINDS


def drop_gone() -> None:
    """Engine: unmap the slots the client closed (they are no longer in ``/dev/shm``)."""
    for slot in [s for s in _WRITABLE if not shm.exists(s)]:
        _WRITABLE.pop(slot).close()
