"""One column (or index) of a map's input as flat arrays, and back: both sides.

Shared memory holds plain arrays only, so the client lays each column out as a few of
them (:func:`encode`) and an engine rebuilds the rows it runs (:func:`prepare`,
:func:`rows`). A layout travels with every chunk, so it holds descriptors of segments
and small metadata, never the data:

- ``plain``: numeric, bool, datetime64 and timedelta64 values, as they are.
- ``tz``: datetimes with a time zone, as UTC datetime64 values plus the dtype.
- ``cat``: categoricals, as their integer codes plus the categories (pickled once).
- ``masked``: nullable ``Int64``/``Float64``/``boolean``, as values plus the NA mask.
- ``text``: strings (``object`` columns of ``str`` only, and pandas' string dtypes),
  as UTF-8 bytes in groups of :data:`GROUP_ROWS` rows joined by a separator that no
  string holds, with each group's byte offset: decoding is one ``str.split`` per
  chunk, about ten times cheaper than unpickling strings one by one.
- ``pickled``: anything else (``object`` columns of other values, periods,
  intervals, ...), pickled in groups of :data:`GROUP_ROWS` rows.

- ``part``: a text or pickled layout of one chunk's rows only, with the row it starts at:
  a map encodes those columns chunk by chunk, so the first chunk leaves before the
  whole column is encoded (:class:`pxpool._data.shared_parts.SharedInputs`).

Pickled columns are decoded once per chunk on the engine (:func:`prepare`), and the
blocks ``f`` sees are slices of that; text is decoded block by block (:func:`rows`), so
``f`` starts after one block's strings rather than the chunk's (250k strings: ~10 ms
before the first call, then ~2 ms per 65k-row block). Everything ``f`` gets is the
engine's own writable memory, never a view of a segment.

Standard library and numpy at import; pandas inside the functions that need it, so
the engine loads it only for pandas input (:mod:`pxpool._data.agent`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._entry.heap import keep_arenas_of

__all__ = [
    "GROUP_ROWS",
    "Layout",
    "descriptors",
    "each_column",
    "encode",
    "encode_cheap",
    "prepare",
    "rebuild",
    "rows",
    "supported",
]

GROUP_ROWS = 8192  # rows per group of a text or pickled column
SEPARATORS = ("\x00", "\x1f", "\x1e")  # tried in turn: one no string of the column holds

# (kind, arrays, metadata): ``arrays`` are what the client put into shared memory (on the
# client: numpy arrays; in a chunk's spec: their descriptors); see the module docstring
Layout = tuple[str, tuple[Any, ...], Any]
# bytes -> a writable uint8 buffer at least that long, for encoded bytes to be joined into
Buffer = Callable[[int], np.ndarray]


def _plain(dtype: Any) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind in "biufcmM"


def supported(values: Any) -> bool:
    """Whether a column, index or 1-d array can be laid out (a MultiIndex cannot, nor
    arrays of more dimensions holding objects)."""
    if isinstance(values, np.ndarray):
        return _plain(values.dtype) or (values.dtype == object and values.ndim == 1)
    return getattr(values, "nlevels", 1) == 1


# ---------------------------------------------------------------- client: encode


def encode(values: Any, into: Buffer | None = None) -> Layout:
    """The layout of a numpy array or a pandas column or index, holding numpy arrays.
    A text or pickled column's bytes are joined into a buffer from ``into`` when given
    (:mod:`pxpool._data.spares`), else into fresh memory."""
    return encode_cheap(values) or _encode_costly(values, into)


def encode_cheap(values: Any) -> Layout | None:
    """The layout of a column whose values are laid out as they are (plain, tz, cat,
    masked): a copy at most. None for text and pickled columns, whose encoding costs
    time per row (:func:`encode` makes those; a map encodes them chunk by chunk)."""
    if isinstance(values, np.ndarray):
        return ("plain", (values,), None) if _plain(values.dtype) else None
    import pandas as pd

    dtype = values.dtype
    if _plain(dtype):
        return ("plain", (np.asarray(values),), None)
    if isinstance(dtype, pd.DatetimeTZDtype):
        naive = np.asarray(values.array.tz_convert("UTC").tz_localize(None))
        return ("tz", (naive,), dtype)
    if isinstance(dtype, pd.CategoricalDtype):
        codes = np.asarray(values.array.codes)
        categories = np.frombuffer(pickle.dumps(dtype, protocol=5), np.uint8)
        return ("cat", (codes, categories), None)
    if isinstance(
        values.array, pd.arrays.IntegerArray | pd.arrays.FloatingArray | pd.arrays.BooleanArray
    ):
        mask = np.asarray(values.isna())
        fill = False if dtype.numpy_dtype.kind == "b" else 0
        data = values.to_numpy(dtype=dtype.numpy_dtype, na_value=fill)
        return ("masked", (data, mask), dtype)
    return None


def _encode_costly(values: Any, into: Buffer | None) -> Layout:
    """Text or pickled groups: a column :func:`encode_cheap` does not lay out."""
    if isinstance(values, np.ndarray):
        return _objects(values, into)
    import pandas as pd

    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "python":
        return _strings(values, dtype, into)
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        return _objects(np.asarray(values), into)
    return _pickled(values.array, into)


def _strings(values: Any, dtype: Any, into: Buffer | None) -> Layout:
    """Pandas' python-backed strings: as text, their missing values as a mask (looked
    for only when a plain join fails: finding them costs more than the join)."""
    strings = values.to_numpy(dtype=object)
    for separator in SEPARATORS:
        if (encoded := _text(strings, separator, into)) is not None:
            return ("text", encoded, (separator, dtype))
    mask = np.asarray(values.isna())
    if mask.any():
        filled = strings.copy()
        filled[mask] = ""
        for separator in SEPARATORS:
            if (encoded := _text(filled, separator, into)) is not None:
                return ("text", (*encoded, mask), (separator, dtype))
    return _pickled(values.array, into)


def _objects(strings: np.ndarray, into: Buffer | None) -> Layout:
    """An ``object`` array: text when every value is a ``str`` and a separator is free,
    else pickled groups."""
    for separator in SEPARATORS:
        if (encoded := _text(strings, separator, into)) is not None:
            return ("text", encoded, (separator, None))
    return _pickled(strings, into)


def _text(
    strings: np.ndarray, separator: str, into: Buffer | None
) -> tuple[np.ndarray, np.ndarray] | None:
    parts, offsets = [], [0]
    for first in range(0, len(strings), GROUP_ROWS):
        group = strings[first : first + GROUP_ROWS].tolist()
        # each group ends with the separator, so that groups decoded together split alike
        group.append("")
        try:
            joined = separator.join(group)
        except TypeError:  # a value that is not a str
            return None
        parts.append(joined.encode("utf-8", "surrogatepass"))
        offsets.append(offsets[-1] + len(parts[-1]))
    data = _joined(parts, offsets[-1], into)
    if _count_byte(data, ord(separator)) != len(strings):  # a string holds the separator
        return None
    return data, np.asarray(offsets, np.int64)


def _count_byte(data: np.ndarray, byte: int) -> int:
    """How often ``byte`` occurs in ``data``. A separator is one byte below 0x80, which
    UTF-8 never uses within another character, so this counts separators exactly (in
    numpy: ~8x faster than ``str.count`` on the joined text)."""
    if byte == 0:
        return int(data.size - np.count_nonzero(data))
    return int(np.count_nonzero(data == byte))


def _joined(parts: list[bytes], nbytes: int, into: Buffer | None) -> np.ndarray:
    """``parts`` one after another, in a buffer from ``into`` or in fresh memory."""
    if into is None:
        return np.frombuffer(b"".join(parts), np.uint8)
    data = into(nbytes)[:nbytes]
    view, position = data.data, 0
    for part in parts:
        view[position : position + len(part)] = part
        position += len(part)
    return data


def _pickled(values: Any, into: Buffer | None) -> Layout:
    parts, offsets = [], [0]
    for first in range(0, len(values), GROUP_ROWS):
        parts.append(pickle.dumps(values[first : first + GROUP_ROWS], protocol=5))
        offsets.append(offsets[-1] + len(parts[-1]))
    data = _joined(parts, offsets[-1], into)
    return ("pickled", (data, np.asarray(offsets, np.int64)), None)


# ---------------------------------------------------------------- engine: decode


def descriptors(layout: Layout) -> Iterator[Any]:
    """The descriptors of the segments one column's layout names."""
    yield from layout[1]


Mapped = Callable[[Any], Any]  # a descriptor -> its read-only array, or a direct.Remote


def prepare(layout: Layout, mapped: Mapped, first: int, stop: int) -> Layout:
    """A layout ready for :func:`rows` of the chunk ``first:stop``: pickled columns
    decoded once for the chunk (``decoded``), categories unpickled once; text stays
    text (``text_at``: its rows are numbered from a base), for :func:`rows` to decode
    block by block. A decoded column's objects are the many small ones whose allocator
    arenas the engine keeps for the next chunk (:func:`pxpool._entry.heap.keep_arenas_of`)."""
    kind, arrays, meta = layout
    if kind == "cat":
        dtype = pickle.loads(mapped(arrays[1]).tobytes())
        return ("cat", arrays[:1], dtype)
    base = 0
    if kind == "part":  # rows base:... encoded for this chunk (pxpool._data.shared_parts)
        base, kind, meta = meta
    if kind == "text":
        return ("text_at", arrays, (meta, base))
    if kind != "pickled":
        return layout
    decoded = _unpickle(arrays, mapped, first - base, stop - base)
    keep_arenas_of(decoded)
    return ("decoded", (decoded,), first)


def _whole(source: Any) -> np.ndarray:
    """A segment's array as it is; an array of the client (:mod:`pxpool._data.direct`)
    read whole."""
    return source if isinstance(source, np.ndarray) else source[0 : len(source)]


def _span(source: Any, begin: int, end: int) -> memoryview:
    """Bytes ``begin:end`` of a byte array: a view of a segment, or read from the client."""
    if isinstance(source, np.ndarray):
        return source.data[begin:end]
    return memoryview(source[begin:end])


def _groups(offsets: np.ndarray, first: int, stop: int) -> tuple[int, int, int, int]:
    """The groups ``low:high`` covering rows ``first:stop``, and their bytes."""
    count = len(offsets) - 1
    low = min(first // GROUP_ROWS, count)
    high = min(max(-(-stop // GROUP_ROWS), low), count)
    return low, high, int(offsets[low]), int(offsets[high])


def _decode_text(arrays: tuple[Any, ...], meta: Any, mapped: Mapped, first: int, stop: int) -> Any:
    """Rows ``first:stop`` of a text column: the bytes of exactly those rows, split."""
    separator, dtype = meta
    offsets, data = _whole(mapped(arrays[1])), mapped(arrays[0])
    begin = _row_byte(data, offsets, first, separator)
    end = _row_byte(data, offsets, stop, separator)
    strings = str(_span(data, begin, end), "utf-8", "surrogatepass").split(separator)
    strings.pop()  # each row ends with the separator: the empty string after the last
    values = np.fromiter(strings, dtype=object, count=len(strings))  # numpy's quickest
    if dtype is None:
        return values
    import pandas as pd

    if len(arrays) > 2:
        values[np.asarray(mapped(arrays[2])[first:stop])] = dtype.na_value
    return pd.array(values, dtype=dtype, copy=False)  # ours alone: a copy cost ~2/3 of it


def _row_byte(data: Any, offsets: np.ndarray, row: int, separator: str) -> int:
    """Where row ``row`` of a text column starts: its group's offset, then past as many
    separators as rows before it in the group."""
    group = min(row // GROUP_ROWS, len(offsets) - 1)
    begin, within = int(offsets[group]), row - group * GROUP_ROWS
    if within == 0:
        return begin
    text = np.frombuffer(_span(data, begin, int(offsets[group + 1])), np.uint8)
    return begin + int(np.flatnonzero(text == ord(separator))[within - 1]) + 1


def _unpickle(arrays: tuple[Any, ...], mapped: Mapped, first: int, stop: int) -> Any:
    offsets = _whole(mapped(arrays[1]))
    low, high, begin, end = _groups(offsets, first, stop)
    view = _span(mapped(arrays[0]), begin, end)
    parts = [
        pickle.loads(view[int(offsets[g]) - begin : int(offsets[g + 1]) - begin])
        for g in range(low, high)
    ]
    skip = first - low * GROUP_ROWS
    if not parts:
        return np.empty(0, dtype=object)
    if isinstance(parts[0], np.ndarray):
        joined: Any = np.concatenate(parts)
    else:  # pandas arrays: joined as Series, their own type kept
        import pandas as pd

        joined = pd.concat([pd.Series(p, copy=False) for p in parts], ignore_index=True).array
    return joined[skip : skip + stop - first]


def rows(layout: Layout, mapped: Mapped, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a prepared column: a numpy array or a pandas array,
    the engine's own copy."""
    kind, arrays, meta = layout
    if kind == "decoded":
        return arrays[0][start - meta : stop - meta]
    if kind == "text_at":
        text_meta, base = meta
        decoded = _decode_text(arrays, text_meta, mapped, start - base, stop - base)
        keep_arenas_of(decoded)
        return decoded

    def copy(descriptor: Any) -> np.ndarray:
        source = mapped(descriptor)
        if isinstance(source, np.ndarray):  # a segment: copy the rows out
            return np.array(source[start:stop], copy=True)
        part: np.ndarray = source[start:stop]  # read from the client (pxpool._data.direct)
        return part

    if kind == "plain":
        return copy(arrays[0])
    import pandas as pd

    if kind == "tz":
        return pd.array(copy(arrays[0])).tz_localize("UTC").tz_convert(meta.tz)
    if kind == "cat":
        return pd.Categorical.from_codes(copy(arrays[0]), dtype=meta)
    if kind == "masked":
        return meta.construct_array_type()(copy(arrays[0]), copy(arrays[1]))
    raise ValueError(f"unknown column layout {kind!r}")


# ---------------------------------------------------------------- engine: inputs


def each_column(layout: tuple[Any, ...], change: Callable[[Any], Any]) -> tuple[Any, ...]:
    """``layout`` with ``change`` applied to each of its column layouts."""
    kind = layout[0]
    if kind == "numpy":
        return (kind, change(layout[1]))
    index = layout[2]
    if index[0] == "column":
        index = ("column", change(index[1]), index[2])
    if kind == "series":
        return (kind, change(layout[1]), index, layout[3])
    return (kind, [change(c) for c in layout[1]], index, layout[3])


def rebuild(layout: tuple[Any, ...], start: int, stop: int, view: Mapped) -> Any:
    """Rows ``start:stop`` of one input, the engine's own writable copies."""

    def take(column: Any) -> Any:
        return rows(column, view, start, stop)

    kind = layout[0]
    if kind == "numpy":
        return take(layout[1])
    import pandas as pd

    index_layout = layout[2]
    if index_layout[0] == "range":
        _, first, step, name = index_layout
        index: Any = pd.RangeIndex(first + start * step, first + stop * step, step, name=name)
    else:
        values = take(index_layout[1])
        dtype = values.dtype if isinstance(values, np.ndarray) else None  # objects stay objects
        index = pd.Index(values, dtype=dtype, name=index_layout[2], copy=False)

    def column(values: Any) -> Any:
        if isinstance(values, np.ndarray) and values.dtype == object:  # not inferred as str
            return pd.Series(values, index=index, dtype=object, copy=False)
        return values

    if kind == "series":
        values = take(layout[1])
        dtype = object if isinstance(values, np.ndarray) and values.dtype == object else None
        return pd.Series(values, index=index, dtype=dtype, name=layout[3], copy=False)
    data = {i: column(take(c)) for i, c in enumerate(layout[1])}
    frame = pd.DataFrame(data, index=index, copy=False)
    frame.columns = layout[3]
    return frame
