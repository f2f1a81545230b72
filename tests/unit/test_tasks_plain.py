"""Plain lane results: pickled without canning, read by ipyparallel's deserialize_object."""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np
import pytest
from ipyparallel.serialize import deserialize_object, serialize_object

from pxpool._tasks.plain import ITEMS, plain_frames

Pair = collections.namedtuple("Pair", "a b")

PLAIN: list[Any] = [
    None,
    True,
    7,
    2**100,
    1.5,
    complex(1, 2),
    "text",
    "é" * 3,
    [],
    (),
    [1, 2.5, "three", None, False],
    (1, "a"),
    [i * i + 1 for i in range(ITEMS - 1)],
]

NOT_PLAIN: list[Any] = [
    b"bytes",  # canned: a large one travels as a frame of its own
    np.arange(3),
    math.sqrt,
    [1, [2]],  # nested containers are canned item by item
    [1, b"x"],
    (1, np.float64(2.0)),
    Pair(1, 2),  # a tuple subclass: ipyparallel cans it as one object
    {"a": 1},
    {1, 2},
    list(range(ITEMS)),  # ipyparallel pickles it without walking it: nothing to gain
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_a_plain_value_pickles_as_serialize_object_does_and_reads_back_equal(value: Any) -> None:
    frames = plain_frames(value, ITEMS)  # ITEMS: serialize_object's default, as engines use
    assert frames is not None
    assert frames == serialize_object(value, item_threshold=ITEMS)
    back = deserialize_object(frames)[0]
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize("value", NOT_PLAIN, ids=repr)
def test_anything_else_is_left_to_serialize_object(value: Any) -> None:
    assert plain_frames(value, ITEMS) is None
