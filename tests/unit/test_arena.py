"""The client side of the push arena: which slot a push may reuse, and when none."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from pxpool._data import arena as _arena
from pxpool._data import shm as _shm

pytestmark = pytest.mark.skipif(not _shm.available(), reason="needs POSIX shared memory")


@pytest.fixture
def arena() -> Iterator[_arena.Arena]:
    made = _arena.Arena(f"pxpool-unit-{os.getpid()}")
    yield made
    made.close()
    assert not [n for n in os.listdir(_shm.SHM_DIR) if n.startswith(made.prefix)]


def test_a_slot_comes_back_once_done_and_keeps_what_was_written(arena: _arena.Arena) -> None:
    slot = arena.lease(3 << 20, [0, 1])
    assert slot is not None and slot.capacity == 3 << 20
    assert arena.lease(3 << 20, [0]) is not slot  # busy until done
    name, capacity, shape, dtype, order = slot.write(np.arange(10.0))
    assert (name, shape, order) == (slot.name, (10,), "C")
    arena.done(slot)
    assert arena.lease(2 << 20, [0]) is slot  # big enough, not over twice the size


def test_a_slot_held_by_a_live_engine_is_not_reused_and_a_dead_ones_is(arena: _arena.Arena) -> None:
    slot = arena.lease(1 << 20, [0])
    assert slot is not None
    slot.holders[3] = os.getpid()  # engine 3 holds it: this process stands in for it
    arena.done(slot)
    other = arena.lease(1 << 20, [3])
    assert other is not None and other is not slot
    arena.done(other)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    slot.holders[3] = int(gone.stdout)  # its holder exited: the slot is free again
    assert arena.lease(1 << 20, [3]) is slot  # the first of the two, free again


def test_no_slot_for_ids_without_a_header_cell_or_past_the_arena_size(
    arena: _arena.Arena, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert arena.lease(1 << 20, [_shm.HEADER_SLOTS]) is None
    monkeypatch.setattr(_arena, "ARENA_BYTES", 4 << 20)
    first, second = arena.lease(1 << 20, [0]), arena.lease(1 << 20, [0])
    third = arena.lease(2 << 20, [0])
    assert None not in (first, second, third)  # 4 MiB in all: still fits
    assert arena.lease(1 << 20, [0]) is None  # all busy, no room for another
    arena.done(first)
    assert arena.lease(1 << 20, [0]) is first  # free, and not over twice the size
    arena.done(first)
    arena.done(second)
    bigger = arena.lease(2 << 20, [0])  # free slots are closed, oldest first, for room
    assert bigger is not None and arena.slots == [third, bigger]


def test_copy_in_uses_a_slot_when_one_fits_else_a_fresh_segment(arena: _arena.Arena) -> None:
    data = np.arange(1 << 17, dtype=np.float64)  # 1 MiB
    (kind, descriptor), slot = arena.copy_in(data, [0])
    assert kind == "arena" and slot is not None and descriptor[0] == slot.name
    arena.done(slot)
    (kind, descriptor), slot = arena.copy_in(data, [_shm.HEADER_SLOTS])  # no header cell
    assert kind == "shm" and slot is None
    try:
        copy = _shm.attach(descriptor, writable=False)
        assert np.array_equal(copy, data)
        del copy
    finally:
        _shm.unlink(descriptor[0])
