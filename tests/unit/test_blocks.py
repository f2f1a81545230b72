"""Calls of f within a chunk: cache-sized blocks, joined as the client joins chunks."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from pxpool._data import blocks as _blocks
from pxpool._data.blocks import BLOCK_BYTES, MIN_BLOCK_ROWS, BlockResults, apply_blocks, block_rows
from pxpool._data.chunking import combine


@pytest.fixture(autouse=True)
def blocks_keep_their_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """These f are cheap: without this, blocks after the first would grow."""
    monkeypatch.setattr(_blocks, "FAST_BLOCK_SECONDS", 0.0)


def test_block_rows_come_from_the_bytes_of_a_row_of_every_input() -> None:
    frame = pd.DataFrame({"x": np.zeros(10), "y": np.zeros(10, dtype=np.float32)})  # 12 B/row
    assert block_rows([frame]) == BLOCK_BYTES // 12
    assert block_rows([frame, np.zeros((10, 2))]) == BLOCK_BYTES // 28
    wide = np.zeros((10, 10_000))  # 80 kB a row: never fewer than MIN_BLOCK_ROWS
    assert block_rows([wide]) == MIN_BLOCK_ROWS
    assert block_rows([np.zeros(0)]) == BLOCK_BYTES


def test_blocks_of_a_frame_concatenate_in_row_order_with_their_index() -> None:
    frame = pd.DataFrame({"x": np.arange(10.0)}, index=list("abcdefghij"))
    seen: list[int] = []

    def f(part: pd.DataFrame) -> pd.Series:
        seen.append(len(part))
        return part["x"] * 2

    seconds, out, done = apply_blocks(f, [frame], 4)
    assert seen == [4, 4, 2] and seconds >= 0 and done == 10
    assert out.equals(frame["x"] * 2)


def test_blocks_slice_every_input_alike_and_arrays_concatenate() -> None:
    a, b = np.arange(9), np.arange(9) * 10
    _, out, _ = apply_blocks(np.add, [a, b], 2)
    assert np.array_equal(out, a + b)


def test_scalar_results_stay_one_per_block_and_the_client_flattens_them() -> None:
    _, first, _ = apply_blocks(lambda p: int(p.sum()), [np.arange(10)], 4)
    _, second, _ = apply_blocks(lambda p: int(p.sum()), [np.arange(10, 12)], 4)  # one block
    assert isinstance(first, BlockResults) and first == [6, 22, 17]
    assert second == 21 and not isinstance(second, BlockResults)
    assert combine("numpy", [first, second]) == [6, 22, 17, 21]


def test_no_block_size_or_a_short_chunk_is_one_call_on_the_whole() -> None:
    calls: list[int] = []
    for block in (0, 100):
        apply_blocks(lambda p: calls.append(len(p)), [np.arange(10)], block)
    assert calls == [10, 10]


def test_mixed_block_results_stay_one_item_per_block() -> None:
    mixed = _blocks.join([np.zeros(2), 1])
    assert isinstance(mixed, BlockResults) and len(mixed) == 2


def test_a_budget_stops_after_the_block_that_spends_it_and_says_how_far() -> None:
    def slow(part: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        return part * 2

    # 10 blocks of 10 ms, budget 15 ms: spent after 2 blocks, with the whole chunk
    # (0.1 s) over 3x the budget. On a busy machine a 10 ms sleep can overrun: the first
    # block alone may spend the budget, or a block or two more may fit before the check
    _, out, done = apply_blocks(slow, [np.arange(100)], 10, budget=0.015)
    assert done in (10, 20, 30, 40)
    assert np.array_equal(out, np.arange(done) * 2)


def test_a_budget_lets_a_chunk_finish_that_ends_within_its_stretch() -> None:
    def steady(part: np.ndarray) -> np.ndarray:
        time.sleep(0.002)
        return part

    # 10 blocks of 2 ms: over a 10 ms budget halfway, done within 3x of it
    _, out, done = apply_blocks(steady, [np.arange(100)], 10, budget=0.01)
    assert done == 100 and len(out) == 100


def test_blocks_of_a_cheap_f_grow_and_a_slow_f_keeps_its_block_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_blocks, "FAST_BLOCK_SECONDS", 0.05)
    cheap: list[int] = []
    apply_blocks(lambda p: cheap.append(len(p)), [np.arange(100)], 2)
    assert cheap == [2, 16, 82]  # each fast block is followed by one 8 times its size
    slow: list[int] = []

    def sleepy(part: np.ndarray) -> None:
        slow.append(len(part))
        time.sleep(0.06)

    apply_blocks(sleepy, [np.arange(6)], 2)
    assert slow == [2, 2, 2]


def test_unjoined_blocks_come_back_as_pieces_the_client_joins() -> None:
    frame = pd.DataFrame({"x": np.arange(10.0)})
    _, pieces, done = _blocks.apply_row_blocks(
        lambda p: p["x"] * 2, 10, _blocks.rows_of([frame]), 4, join_blocks=False
    )
    assert isinstance(pieces, _blocks.Pieces) and [len(p) for p in pieces] == [4, 4, 2]
    _, scalars, _ = _blocks.apply_row_blocks(
        lambda p: len(p), 10, _blocks.rows_of([frame]), 4, join_blocks=False
    )
    assert isinstance(scalars, BlockResults)  # not joinable: as ever
    pd.testing.assert_series_equal(combine("pandas", [pieces]), frame["x"] * 2)
    tail = pd.Series([99.0], index=[10], name="x")
    joined = combine("pandas", [pieces, tail], in_place=True)
    assert list(joined) == [*(frame["x"] * 2), 99.0]
