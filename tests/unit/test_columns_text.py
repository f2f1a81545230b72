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
