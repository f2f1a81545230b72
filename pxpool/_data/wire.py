"""How a ``pool.map`` chunk's data travels: packing, and the shape of a chunk's reply.

Shared by both sides: the client packs partitions for the engines and reads the
replies (:mod:`pxpool._data.mapper`), the engine unpacks its arguments and builds
the replies (:mod:`pxpool._data.agent`). Standard library and numpy only.

ipyparallel sends the numpy arrays among the top-level items of a plain ``tuple`` as
separate frames, without copying them into a pickle; any other object, a
``NamedTuple`` included, is pickled whole. So what crosses the wire is always a flat
plain tuple: :func:`pack` lays a value out as one, and a :class:`ChunkReply` travels
as ``(seconds, done, *body)`` (:meth:`ChunkReply.flat`, :meth:`ChunkReply.read`).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["ChunkReply", "flat_args", "pack", "pack_pickled", "unpack", "unpack_from"]

# at most this many out-of-band buffers are sent as separate frames (ipyparallel cans
# the top-level items of a tuple of fewer than 64 items); beyond it, pickle in-band
MAX_BUFFERS = 48
OUT_OF_BAND_MIN_BYTES = 64 * 1024


def pack(obj: Any) -> tuple[Any, ...]:
    """A flat tuple whose large buffers are uint8 arrays, sent by ipyparallel as frames.

    ipyparallel sends numpy arrays as separate frames but pickles pandas objects
    whole; pickle protocol 5 lets their column blocks travel as frames too. Layouts:
    ``("array", arr)``, ``("pickle5", payload, n, *n_buffers)``, ``("object", obj)``,
    and ``("pickled", payload)`` (:func:`pack_pickled`).
    """
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return ("array", obj)
    if type(obj).__module__.startswith("pandas"):
        buffers: list[pickle.PickleBuffer] = []

        def keep_in_band(buffer: pickle.PickleBuffer) -> bool:
            try:
                view = buffer.raw()
            except BufferError:  # not contiguous: pickle it in-band
                return True
            if view.nbytes < OUT_OF_BAND_MIN_BYTES or len(buffers) >= MAX_BUFFERS:
                return True
            buffers.append(buffer)
            return False

        payload = pickle.dumps(obj, protocol=5, buffer_callback=keep_in_band)
        arrays = [np.frombuffer(b.raw(), dtype=np.uint8) for b in buffers]
        return ("pickle5", payload, len(arrays), *arrays)
    return ("object", obj)


def pack_pickled(obj: Any) -> tuple[Any, ...]:
    """``obj`` pickled here, now: a chunk of items pickles its results on the engine so
    that the cost it measures includes pickling them (for tiny items, more than the
    work itself)."""
    return ("pickled", pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def unpack_from(flat: Sequence[Any], at: int = 0) -> tuple[Any, int]:
    """Decode one packed object starting at ``flat[at]``; returns it and the next position."""
    tag = flat[at]
    if tag == "pickle5":
        count = int(flat[at + 2])
        buffers = list(flat[at + 3 : at + 3 + count])
        return pickle.loads(flat[at + 1], buffers=buffers), at + 3 + count
    if tag == "pickled":
        return pickle.loads(flat[at + 1]), at + 2
    return flat[at + 1], at + 2


def unpack(packed: Sequence[Any]) -> Any:
    """Inverse of :func:`pack` and :func:`pack_pickled`."""
    return unpack_from(packed)[0]


def flat_args(parts: Sequence[Any]) -> list[Any]:
    """Pack several partitions into one flat argument list for the engine's partition
    runner (:func:`pxpool._data.agent.run_part`)."""
    return [x for part in parts for x in pack(part)]


class ChunkReply(NamedTuple):
    """What one chunk of ``pool.map`` sends back from its engine.

    Built on the engine (:mod:`pxpool._data.agent`), sent as :meth:`flat`, read by
    name on the client with :meth:`read` (:mod:`pxpool._data.mapper`).
    """

    seconds: float  # engine seconds the chunk took (pickling its results included)
    done: int  # items or rows done: fewer than sent when a budgeted chunk stopped early
    body: tuple[Any, ...]  # the results, packed (:func:`pack` or :func:`pack_pickled`)

    def flat(self) -> tuple[Any, ...]:
        """The reply as it travels: ``(seconds, done, *body)``, a plain tuple."""
        return (self.seconds, self.done, *self.body)

    @classmethod
    def read(cls, flat: Sequence[Any]) -> ChunkReply:
        """Inverse of :meth:`flat`."""
        return cls(float(flat[0]), int(flat[1]), tuple(flat[2:]))

    def results(self) -> Any:
        """The chunk's results: the list of an item chunk's results, or the joined
        result of a chunk of rows."""
        return unpack(self.body)
