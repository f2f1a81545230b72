"""Shared memory that pushes reuse: one copy into pages that are already there.

A push through a fresh segment (:mod:`pxpool._data.shm`) pays for its pages: ``/dev/shm``
gives 4 KiB pages, and faulting in 100 MB of them costs ~0.12 s here, six times the
copy itself (``np.copy`` is faster still: numpy asks for huge pages, which shared
memory does not get). So a pool keeps the segments of its pushes, *slots*, and
copies the next push into a free one: both sides keep their mappings, so neither
the client's copy nor the engines' reads fault again. Ray's object store reuses
its memory the same way.

A slot is free when no engine holds an array over it. Each slot starts with a
header of one int32 per engine id: an engine writes its pid there when it binds a
name to the slot and 0 when the last array over it is garbage collected (a
``weakref.finalize``); a pid that is no longer alive counts as 0, so a dead or
replaced engine frees its slots. The client reuses a slot only between pushes
(``lease`` ... ``done``), under a lock.

Lifetime: slots stay in ``/dev/shm`` (named ``pxpool-<pool>-<token>``) while the pool
runs, at most :data:`ARENA_BYTES` of them; a push that does not fit uses a fresh
segment as before. The pool's stop closes and unlinks them (:func:`close`).

This module is the client's half. The engines' half (mapping slots, holding them,
unmapping them) is in :mod:`pxpool._data.agent`; both take the slot layout
(``HEADER_SLOTS``, ``HEADER_BYTES``) and the ``Descriptor`` from :mod:`pxpool._data.shm`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from .._entry.pids import alive
from . import shm as _shm
from .shm import HEADER_BYTES, HEADER_SLOTS, Descriptor

ARENA_BYTES = 1 << 30  # slot capacity a pool keeps for reuse
ROUND = 1 << 20  # slot capacities are whole MiB


class Slot:
    """One reusable segment, mapped read-write on the client and populated."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.mapping = _shm.create(name, HEADER_BYTES + capacity)
        self.holders = np.frombuffer(self.mapping, np.int32, HEADER_SLOTS)
        self.busy = True
        self.used = time.monotonic()

    def free(self) -> bool:
        return not self.busy and all(not alive(int(pid)) for pid in self.holders[self.holders != 0])

    def write(self, array: np.ndarray) -> tuple[Any, ...]:
        """Copy ``array`` in; returns what an engine needs to map it."""
        order = _shm.order_of(array)
        target = np.ndarray(array.shape, array.dtype, self.mapping, HEADER_BYTES, order=order)
        _shm.copy_into(target, array)
        del target
        return (self.name, self.capacity, array.shape, array.dtype, order)

    def close(self) -> None:
        del self.holders
        try:
            self.mapping.close()
        except BufferError:  # views of it still live (a failed map's results): it goes
            pass  # with the last of them; its name goes now
        _shm.unlink(self.name)


class Arena:
    """The reusable slots of one pool (on the client)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.slots: list[Slot] = []
        self.lock = threading.Lock()

    def lease(self, nbytes: int, engine_ids: list[int]) -> Slot | None:
        """A free slot of at least ``nbytes`` (not more than twice that), or a new one;
        None when the engines' ids have no header cell or the arena is full."""
        if not engine_ids or max(engine_ids) >= HEADER_SLOTS or nbytes > ARENA_BYTES // 2:
            return None
        with self.lock:
            fitting = [s for s in self.slots if nbytes <= s.capacity <= 2 * nbytes + ROUND]
            for slot in sorted(fitting, key=lambda s: s.capacity):
                if slot.free():
                    slot.busy = True
                    return slot
            capacity = -(-nbytes // ROUND) * ROUND
            for slot in sorted(self.slots, key=lambda s: s.used):  # make room: oldest first
                if sum(s.capacity for s in self.slots) + capacity <= ARENA_BYTES:
                    break
                if slot.free():
                    self.slots.remove(slot)
                    slot.close()
            if sum(s.capacity for s in self.slots) + capacity > ARENA_BYTES:
                return None
            if not _shm.can_share(HEADER_BYTES + capacity):
                return None
            slot = Slot(_shm.segment_name(self.prefix), capacity)
            self.slots.append(slot)
            return slot

    def copy_in(self, array: np.ndarray, engine_ids: list[int]) -> tuple[Descriptor, Slot | None]:
        """One shared copy of ``array`` for ``engine_ids``: into a leased slot when one
        fits (the caller gives it back with ``done`` or ``retire``), else into a fresh
        segment, with None for the slot (the caller unlinks it: ``("shm", (name, ...))``
        names it first)."""
        slot = self.lease(array.nbytes, engine_ids)
        if slot is not None:
            return ("arena", slot.write(array)), slot
        return ("shm", _shm.export(array, self.prefix)), None

    def done(self, slot: Slot) -> None:
        with self.lock:
            slot.busy = False
            slot.used = time.monotonic()

    def retire(self, slot: Slot) -> None:
        """Unlink a slot that engines may still read (a failed map's input): no later
        push or map writes into it while an abandoned chunk reads it."""
        with self.lock:
            if slot in self.slots:
                self.slots.remove(slot)
            slot.close()

    def close(self) -> None:
        with self.lock:
            for slot in self.slots:
                slot.close()
            self.slots.clear()


_ARENAS: dict[str, Arena] = {}
_ARENAS_LOCK = threading.Lock()


def arena_for(prefix: str) -> Arena:
    with _ARENAS_LOCK:
        return _ARENAS.setdefault(prefix, Arena(prefix))


def close(prefix: str) -> None:
    """The pool stopped: close and unlink its slots."""
    with _ARENAS_LOCK:
        arena = _ARENAS.pop(prefix, None)
    if arena is not None:
        arena.close()
