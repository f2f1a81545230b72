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
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import weakref
from typing import Any

import numpy as np

from .._entry.pids import alive
from . import shm as _shm

HEADER_SLOTS = 4096  # engine ids below this have a holder cell
HEADER_BYTES = HEADER_SLOTS * 4  # a multiple of the page size: data starts page-aligned
ARENA_BYTES = 1 << 30  # slot capacity a pool keeps for reuse
ROUND = 1 << 20  # slot capacities are whole MiB

# what an engine maps: ("arena", (slot, capacity, shape, dtype, order)) or
# ("shm", (name, shape, dtype, order)), a fresh segment (:mod:`pxpool._data.shm`)
Descriptor = tuple[str, tuple[Any, ...]]


class Slot:
    """One reusable segment, mapped read-write on the client and populated."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.mapping = _shm._create(name, HEADER_BYTES + capacity)
        self.holders = np.frombuffer(self.mapping, np.int32, HEADER_SLOTS)
        self.busy = True
        self.used = time.monotonic()

    def free(self) -> bool:
        return not self.busy and all(not alive(int(pid)) for pid in self.holders[self.holders != 0])

    def write(self, array: np.ndarray) -> tuple[Any, ...]:
        """Copy ``array`` in; returns what an engine needs to map it."""
        order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        target = np.ndarray(array.shape, array.dtype, self.mapping, HEADER_BYTES, order=order)
        _shm._copy(target, array)
        del target
        return (self.name, self.capacity, array.shape, array.dtype, order)

    def close(self) -> None:
        del self.holders
        self.mapping.close()
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


# ---------------------------------------------------------------- engine side

_MAPS: dict[str, tuple[mmap.mmap, mmap.mmap, np.ndarray]] = {}  # slot -> header, data, holders
_HELD: dict[str, int] = {}  # slot -> live arrays over it on this engine


def engine_attach(engine_id: int, descriptors: dict[str, tuple[str, tuple[Any, ...]]]) -> None:
    """Bind each name to a read-only array: ``("arena", slot)`` over a slot this engine
    keeps mapped, ``("shm", descriptor)`` over a fresh segment (:mod:`pxpool._data.shm`)."""
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    for name, (kind, descriptor) in descriptors.items():
        if kind == "shm":
            namespace[name] = _shm.attach(descriptor, writable=False)
        else:
            namespace[name] = _hold(engine_id, *descriptor)


def engine_view(descriptor: tuple[Any, ...]) -> np.ndarray:
    """A read-only array over a slot, not held: for a map's input, which the client
    keeps leased until the map is over (:mod:`pxpool._data.shared_parts`)."""
    slot, capacity, shape, dtype, order = descriptor
    return np.ndarray(shape, dtype, _maps(slot, capacity)[1], 0, order=order)


def _hold(engine_id: int, slot: str, capacity: int, shape: Any, dtype: Any, order: str) -> Any:
    header, data, holders = _maps(slot, capacity)
    array = np.ndarray(shape, dtype, data, 0, order=order)
    _HELD[slot] = _HELD.get(slot, 0) + 1
    holders[engine_id] = os.getpid()
    weakref.finalize(array, _let_go, slot, engine_id)
    return array


def _maps(slot: str, capacity: int) -> tuple[mmap.mmap, mmap.mmap, np.ndarray]:
    if slot not in _MAPS:
        drop_gone()
        fd = _shm._posixshmem.shm_open("/" + slot, os.O_RDWR, mode=0o600)  # type: ignore[union-attr]
        try:
            header = mmap.mmap(fd, HEADER_BYTES)
            data = mmap.mmap(fd, capacity, prot=mmap.PROT_READ, offset=HEADER_BYTES)
        finally:
            os.close(fd)
        _MAPS[slot] = (header, data, np.frombuffer(header, np.int32, HEADER_SLOTS))
    return _MAPS[slot]


def drop_gone() -> None:
    """Unmap slots the client closed or retired that no array here holds: their memory
    goes only once every process has unmapped them."""
    for gone in [s for s in _MAPS if not _HELD.get(s) and not _exists(s)]:
        _drop(gone)


def _let_go(slot: str, engine_id: int) -> None:
    _HELD[slot] -= 1
    if _HELD[slot] == 0 and slot in _MAPS:
        _MAPS[slot][2][engine_id] = 0


def _exists(slot: str) -> bool:
    return os.path.exists(os.path.join(_shm.SHM_DIR, slot))


def _drop(slot: str) -> None:
    header, data, holders = _MAPS.pop(slot)
    del holders
    header.close()
    data.close()
    _HELD.pop(slot, None)
