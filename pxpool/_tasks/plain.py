"""A lane task's plain values (its result, its arguments), pickled without canning.

ipyparallel's ``serialize_object`` walks a list or tuple of fewer than 64 items and
*cans* each one (functions by value, arrays and large bytes as frames of their own),
checking every item against each canned type: a list of 32 ints took ~47 us here,
where pickle writes it in under 1 us, and an engine's whole cost of a no-op task is
~30 us. Such lists are what a joblib batch returns, and ``return a, b`` is a tuple.

Values that canning leaves as they are (``None``, ``bool``, ``int``, ``float``,
``complex``, ``str``, and lists or tuples of them) are pickled here as
``serialize_object`` pickles them after canning, into one frame that the reply sends
with the status ``plain`` (:mod:`pxpool._tasks.wire`): the client unpickles it without
``deserialize_object``'s uncanning, which walks such a list again. Anything else, and
containers of 64 items or more (which ipyparallel pickles without walking them), go
through ``serialize_object`` and the status ``ok``. The client pickles a task's plain
arguments the same way (:func:`pxpool._tasks.payload.encode_arguments`): ~1 us instead
of 5-16 us for one to ten of them, which the engine's ``deserialize_object`` reads as
it reads canned ones.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["ITEMS", "plain_frames"]

PLAIN = frozenset({type(None), bool, int, float, complex, str})
ITEMS = 64  # serialize_object's item_threshold unless a session sets another (MAX_ITEMS)


def plain_frames(value: Any, item_threshold: int) -> list[bytes] | None:
    """``[pickled value]`` when ``value`` is plain (see the module docstring), else None."""
    kind = type(value)
    if kind not in PLAIN:
        if kind is not list and kind is not tuple or len(value) >= item_threshold:
            return None
        if not all(type(item) in PLAIN for item in value):
            return None
    return [pickle.dumps(value, pickle.DEFAULT_PROTOCOL)]
