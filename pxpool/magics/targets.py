"""Engine targets written as text (``--targets 0,2-4,::2,-1``), parsed and never eval'ed.

A target text is items separated by commas; each item is one of

- ``all``: every engine;
- ``3``: engine id 3;
- ``-1``: an index counting from the end of the sorted engine ids (the last engine);
- ``2-4``: the engine ids 2 to 4, both included;
- ``::2``, ``1:``, ``-2:``: a Python slice of the sorted engine ids.

The result is the sorted, de-duplicated list of engine ids. Anything else raises
:class:`~pxpool.errors.TargetError`, which names the item, says what is wrong and lists the engines.
A list written as ``[0, 1]`` is read as ``0,1``, for users of ipyparallel's syntax.
"""

from __future__ import annotations

import re

from ..errors import TargetError

__all__ = ["parse_targets"]

_INT = re.compile(r"[+-]?\d+")
_RANGE = re.compile(r"(\d+)\s*-\s*(\d+)")
_SLICE = re.compile(r"([+-]?\d+)?\s*:\s*([+-]?\d+)?\s*(?::\s*([+-]?\d+)?)?")


def parse_targets(text: str, ids: list[int]) -> list[int]:
    """Return the engine ids that ``text`` selects out of ``ids``."""
    ids = sorted(ids)
    body = text.strip()
    if len(body) >= 2 and (body[0], body[-1]) in (("[", "]"), ("(", ")")):
        body = body[1:-1]
    if not body.strip():
        raise TargetError(text, text, "no engines named", ids)
    chosen: set[int] = set()
    for raw in body.split(","):
        item = raw.strip()
        if not item:
            raise TargetError(text, text, "empty item between commas", ids)
        picked = _parse_item(text, item, ids)
        if not picked:
            raise TargetError(text, item, "selects no engines", ids)
        chosen.update(picked)
    return sorted(chosen)


def _parse_item(text: str, item: str, ids: list[int]) -> list[int]:
    if item.lower() == "all":
        return list(ids)
    if _INT.fullmatch(item):
        return [_one(text, item, int(item), ids)]
    if match := _RANGE.fullmatch(item):
        first, last = int(match[1]), int(match[2])
        if first > last:
            raise TargetError(text, item, f"range start {first} is after its end {last}", ids)
        missing = [i for i in range(first, last + 1) if i not in ids]
        if missing:
            raise TargetError(text, item, f"engines {missing} are not in this pool", ids)
        return list(range(first, last + 1))
    if match := _SLICE.fullmatch(item):
        start, stop, step = (None if part is None else int(part) for part in match.groups())
        if step == 0:
            raise TargetError(text, item, "slice step cannot be zero", ids)
        return ids[slice(start, stop, step)]
    raise TargetError(text, item, "not an id, range, slice or 'all'", ids)


def _one(text: str, item: str, number: int, ids: list[int]) -> int:
    if number < 0:
        if -number > len(ids):
            raise TargetError(
                text, item, f"index {number} is out of range for {len(ids)} engines", ids
            )
        return ids[number]
    if number not in ids:
        raise TargetError(text, item, f"no engine {number} in this pool", ids)
    return number
