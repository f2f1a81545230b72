"""Strings as UTF-8 text groups (pxpool._data.columns), encoded and decoded in this
process with the layout's arrays standing in for the shared segments."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from pxpool._data import columns
from pxpool._data.columns import GROUP_ROWS


def decoded(layout: columns.Layout, first: int, stop: int) -> list[Any]:
    def mapped(array: np.ndarray) -> np.ndarray:
        return array

    ready = columns.prepare(layout, mapped, first, stop)
    return list(columns.rows(ready, mapped, first, stop))


WORDS = ["", "a", "naïve", "日本語", "emoji 🎉", "lone \udcff surrogate", "tab\tand\nnewline"]


@pytest.mark.parametrize(
    ("first", "stop"),
    [(0, 5), (GROUP_ROWS - 3, GROUP_ROWS + 4), (5, 2 * GROUP_ROWS + 9), (0, 2 * GROUP_ROWS + 11)],
    ids=["head", "across-a-group", "several-groups", "all"],
)
def test_text_groups_decode_every_row_range_exactly(first: int, stop: int) -> None:
    values = np.array([f"{WORDS[i % len(WORDS)]}-{i}" for i in range(2 * GROUP_ROWS + 11)], object)
    layout = columns.encode(values)
    assert layout[0] == "text" and layout[2][0] == "\x00"
    assert decoded(layout, first, stop) == list(values[first:stop])


def test_a_string_that_holds_a_separator_moves_the_text_to_the_next_one() -> None:
    values = np.array(["plain"] * 100 + ["holds \x00 inside"] + ["x"] * 10, object)
    layout = columns.encode(values)
    assert layout[0] == "text" and layout[2][0] == "\x1f"
    assert decoded(layout, 0, len(values)) == list(values)
    every = np.array(["\x00", "\x1f", "\x1e", "ok"] * 3, object)  # no separator is free
    assert columns.encode(every)[0] == "pickled"


def test_values_that_are_not_strings_are_pickled_and_missing_strings_masked() -> None:
    assert columns.encode(np.array(["a", 1, "b"], object))[0] == "pickled"
    strings = pd.Series(["a", None, "c"] * 5, dtype=pd.StringDtype("python"))
    layout = columns.encode(strings)
    assert layout[0] == "text"
    out = decoded(layout, 1, 7)
    assert out[0] is pd.NA and out[1:] == ["c", "a", pd.NA, "c", "a"][:5]


def test_an_empty_column_is_text_with_no_rows() -> None:
    layout = columns.encode(np.array([], object))
    assert layout[0] == "text" and decoded(layout, 0, 0) == []


@pytest.mark.parametrize("read_from_client", [False, True], ids=["segment", "direct"])
@pytest.mark.parametrize("kind", ["text", "pickled"])
def test_a_chunks_own_part_decodes_its_rows_by_their_row_numbers(
    kind: str, read_from_client: bool
) -> None:
    """A map encodes text and pickled columns chunk by chunk ("part" layouts, rows
    base:...); the engine asks for rows by their numbers in the whole column, and may
    read the part's arrays from the client's memory (pxpool._data.direct)."""
    from pxpool._data import direct

    whole = [f"{WORDS[i % len(WORDS)]}-{i}" for i in range(3 * GROUP_ROWS)]
    values = np.array(whole if kind == "text" else [(w,) for w in whole], object)
    base, end = GROUP_ROWS + 5, 3 * GROUP_ROWS - 7
    inner_kind, arrays, meta = columns.encode(values[base:end])
    assert inner_kind == kind
    part = ("part", arrays, (base, inner_kind, meta))

    def mapped(array: np.ndarray) -> Any:
        return direct.Remote(direct.describe(array)) if read_from_client else array

    first, stop = base + 3, base + GROUP_ROWS + 9  # rows of one block, across a group
    ready = columns.prepare(part, mapped, base, end)
    assert list(columns.rows(ready, mapped, first, stop)) == list(values[first:stop])
    assert list(columns.rows(ready, mapped, base, end)) == list(values[base:end])


def test_text_is_decoded_block_by_block_as_the_engine_asks_for_rows() -> None:
    """An engine runs a chunk in blocks; text is decoded for each block only when that
    block is built, so ``f`` starts after one block's strings. Blocks start and end
    anywhere within a group, missing strings included."""
    count = 3 * GROUP_ROWS + 17
    strings = pd.Series(
        [None if i % 11 == 0 else f"{WORDS[i % len(WORDS)]}-{i}" for i in range(count)],
        dtype=pd.StringDtype("python"),
    )

    def mapped(array: np.ndarray) -> np.ndarray:
        return array

    layout = columns.encode(strings)
    first, stop = 7, count - 5
    ready = columns.prepare(layout, mapped, first, stop)
    assert ready[0] == "text_at"  # nothing decoded yet
    edges = [first, first + 1, GROUP_ROWS - 1, GROUP_ROWS, 2 * GROUP_ROWS + 3, stop]
    blocks = [columns.rows(ready, mapped, a, b) for a, b in zip(edges, edges[1:], strict=False)]
    got = pd.array(np.concatenate([np.asarray(b, object) for b in blocks]), dtype=strings.dtype)
    assert got.equals(strings.array[first:stop])


def test_cheap_layouts_are_made_at_once_and_costly_ones_left_to_each_chunk() -> None:
    frame = pd.DataFrame(
        {
            "x": np.arange(10.0),
            "cat": pd.Categorical(list("abcabcabca")),
            "n": pd.array(range(10), dtype="Int64"),
            "s": pd.Series([str(i) for i in range(10)], dtype=object),
            "p": pd.period_range("2020-01", periods=10, freq="M"),
        }
    )
    cheap = {name: columns.encode_cheap(frame[name]) for name in frame.columns}
    assert {name: lay[0] for name, lay in cheap.items() if lay} == {
        "x": "plain",
        "cat": "cat",
        "n": "masked",
    }
    assert cheap["s"] is None and cheap["p"] is None
    assert columns.encode(frame["s"])[0] == "text" and columns.encode(frame["p"])[0] == "pickled"
