"""Buffers a map encodes its text and pickled columns into, reused from map to map
(pxpool._data.spares), with this process standing in for the engine that reads them."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from pxpool._data import agent, columns, direct, shared_parts, shm
from pxpool._data import arena as _arena
from pxpool._data.spares import ROUND, Spares
from pxpool._data.wire import ChunkReply


def test_a_buffer_given_back_is_taken_again_by_the_smallest_request_it_fits() -> None:
    spares = Spares(limit=8 * ROUND)
    small, large = spares.take(ROUND // 2), spares.take(3 * ROUND - 5)
    assert (small.nbytes, large.nbytes) == (ROUND, 3 * ROUND)  # whole MiB
    spares.give_back([large, small])
    assert spares.take(100) is small  # the smallest that fits, not the first
    assert spares.take(2 * ROUND) is large
    assert spares.take(10).nbytes == ROUND and spares.spare_bytes() == 0  # none left: new


def test_beyond_the_limit_the_oldest_spare_buffers_go() -> None:
    spares = Spares(limit=2 * ROUND)
    old, middle, new = (spares.take(ROUND) for _ in range(3))
    spares.give_back([old])
    spares.give_back([middle, new])
    assert spares.spare_bytes() == 2 * ROUND
    taken = [spares.take(ROUND), spares.take(ROUND)]
    assert {id(b) for b in taken} == {id(middle), id(new)}


def test_text_and_pickled_columns_are_joined_into_the_buffer_given() -> None:
    text = np.array([f"word {i} ü" for i in range(2 * columns.GROUP_ROWS + 7)], object)
    pickled = pd.Series(pd.period_range("2020-01", periods=3 * columns.GROUP_ROWS, freq="D"))
    for values in (text, pickled):
        buffer = np.full(4 * ROUND, 0xEE, np.uint8)  # stale bytes beyond what is written

        def into(nbytes: int, buffer: np.ndarray = buffer) -> np.ndarray:
            return buffer

        given = columns.encode(values, into)
        fresh = columns.encode(values)
        assert given[0] == fresh[0] and np.shares_memory(given[1][0], buffer)
        assert bytes(given[1][0]) == bytes(fresh[1][0])
        assert np.array_equal(given[1][1], fresh[1][1])  # the groups' offsets


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"pxpool-unit-spares-{os.getpid()}"
    yield name
    _arena.close(name)
    agent.drop_gone()
    shm.cleanup(name)


@pytest.fixture
def spares(monkeypatch: pytest.MonkeyPatch) -> Spares:
    mine = Spares()
    monkeypatch.setattr(shared_parts, "SPARES", mine)
    return mine


def _mapped(frame: pd.DataFrame, prefix: str) -> tuple[pd.Series, shared_parts.SharedInputs]:
    """``len(s) + x`` over the frame, its text read from this process as an engine would."""
    shared = shared_parts.SharedInputs([frame], prefix, [0], direct=True)

    def f(part: pd.DataFrame) -> pd.Series:
        return pd.Series([len(s) + x for s, x in zip(part["s"], part["x"], strict=True)])

    reply = ChunkReply.read(agent.run_shared_part(f, "t", 0, 0, shared.spec(0, len(frame))))
    return reply.results(), shared


def _frame(word: str, rows: int) -> pd.DataFrame:
    return pd.DataFrame({"s": pd.Series([f"{word}{i}" for i in range(rows)], dtype=object), "x": 1})


@pytest.mark.skipif(not direct.available(), reason="needs process_vm_readv (Linux)")
def test_the_next_map_encodes_into_the_last_ones_buffer_and_reads_only_its_own_text(
    prefix: str, spares: Spares
) -> None:
    long_words = _frame("a rather long word number ", 30_000)
    result, shared = _mapped(long_words, prefix)
    assert result.tolist() == [len(f"a rather long word number {i}") + 1 for i in range(30_000)]
    buffers = list(shared.buffers)
    shared.close()  # the map is over: its buffer is spare
    assert spares.spare_bytes() == sum(b.nbytes for b in buffers) > 0

    short_words = _frame("w", 20_000)  # fewer bytes: the buffer keeps the old ones after
    result, shared = _mapped(short_words, prefix)
    assert [id(b) for b in shared.buffers] == [id(b) for b in buffers]
    assert result.tolist() == [len(f"w{i}") + 1 for i in range(20_000)]
    shared.close()


@pytest.mark.skipif(not direct.available(), reason="needs process_vm_readv (Linux)")
def test_a_failed_maps_buffers_are_not_given_back(prefix: str, spares: Spares) -> None:
    _, shared = _mapped(_frame("x", 10_000), prefix)
    kept = [weakref.ref(b) for b in shared.buffers]
    shared.close(reuse=False)  # engines may still read them
    assert spares.spare_bytes() == 0 and kept
    gc.collect()
    assert all(ref() is not None for ref in kept)  # held a while (for a chunk that still runs)


def test_a_pool_that_stops_lets_the_spare_buffers_go(
    spares: Spares, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pxpool import data

    monkeypatch.setattr(data, "SPARES", spares)
    spares.give_back([spares.take(ROUND)])
    assert spares.spare_bytes() == ROUND
    data.release_pool_memory(f"pxpool-unit-spares-stop-{os.getpid()}")
    assert spares.spare_bytes() == 0
