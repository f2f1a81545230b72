"""A chunk's result through shared memory, when the map's engines share it with the client.

Over the network a result's buffers go from the engine to the scheduler, to the
client (and to the hub, which records every message): for 4 MB that is ~15 ms on
two busy cores, more than a cheap ``f`` takes on the rows. So when the map's input
is in shared memory, the client leases a slot of its arena for each chunk
(:mod:`pxpool._data.arena`, reused from map to map so neither side faults its pages
in again), the engine pickles its result with protocol 5 and writes the large
buffers into that slot (:func:`pack_into`), and the reply carries only the pickle's
small payload and where each buffer is. The client copies the buffers out
(:func:`read`; results must outlive the slot, which the next map reuses) and gives
the slot back.

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
from .shm import HEADER_BYTES
from .wire import MAX_BUFFERS, OUT_OF_BAND_MIN_BYTES, pack

__all__ = ["TAG", "drop_gone", "pack_into", "read"]

TAG = "slot5"  # a packed result whose buffers are in a slot: (TAG, payload, places, n, *frames)
ALIGN = 64  # buffers start on cache lines

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


def read(body: Sequence[Any], memory: mmap.mmap) -> Any:
    """The result :func:`pack_into` packed, with ``memory`` the client's mapping of the
    slot (header included). Buffers are copied out: writable, and the client's own."""
    _, payload, places, count, *frames = body
    assert len(frames) == count
    buffers: list[Any] = []
    with memoryview(memory) as whole:
        for offset, size in places:
            if offset < 0:
                buffers.append(frames[size])
            else:
                begin = HEADER_BYTES + offset
                buffers.append(bytearray(whole[begin : begin + size]))
    return pickle.loads(payload, buffers=buffers)


def drop_gone() -> None:
    """Engine: unmap the slots the client closed (they are no longer in ``/dev/shm``)."""
    for slot in [s for s in _WRITABLE if not shm.exists(s)]:
        _WRITABLE.pop(slot).close()
