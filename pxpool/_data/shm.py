"""Large numpy arrays between the client and engines on the same host, via shared memory.

Pushes mostly go through the reused slots of :mod:`pxpool._data.arena` instead; this
module's one-off segments serve pulls, ``pool.map`` input and pushes that do not fit.

Lifetime of a one-off segment: the sender creates a POSIX shared-memory segment named
``pxpool-<pool>-<token>``, copies the array into it once, the receivers map it, and
the sender unlinks the *name* as soon as they have (before ``push``/``pull``
returns). Nothing stays in ``/dev/shm`` after the call; the memory itself lives as
long as some process maps it: on the engines, until the pushed name is overwritten
or deleted (the array is garbage collected) or the engine stops.

Engines map pushed arrays **read-only** (the kernel enforces it; several engines
share one copy); ``arr.copy()`` gives a private writable one. Pulled arrays are
writable on the client (nobody else maps them any more).

Segments are opened with ``_posixshmem`` and ``mmap`` directly rather than
``multiprocessing.shared_memory.SharedMemory``: its resource tracker, in every
process that attaches, would unlink the segment or warn about a "leak" when that
process exits. Here only the creator unlinks, always in a ``finally``; what a crash
leaves behind is removed when the pool stops (:func:`cleanup`).

Shared by both sides: the client and the engines create, map and unlink segments with
these functions; what the engines run is in :mod:`pxpool._data.agent`.
"""

from __future__ import annotations

import glob
import mmap
import os
import secrets
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

try:
    import _posixshmem
except ImportError:  # Windows: no POSIX shared memory, every transfer uses the network
    _posixshmem = None

THRESHOLD = 1 << 20  # arrays of at least this many bytes go through shared memory
PARALLEL_COPY_BYTES = 16 << 20
COPY_THREADS = 4
SHM_DIR = "/dev/shm"

Order = Literal["C", "F"]
# a one-off segment as the receivers map it: (name, shape, dtype, order)
SegmentDescriptor = tuple[str, tuple[int, ...], np.dtype[Any], Order]

# an arena slot (:mod:`pxpool._data.arena`): a header of one int32 holder cell per engine
# id below HEADER_SLOTS, then the data, page-aligned
HEADER_SLOTS = 4096
HEADER_BYTES = HEADER_SLOTS * 4  # a multiple of the page size
# what an engine maps: ("arena", (slot, capacity, shape, dtype, order)) or
# ("shm", (name, shape, dtype, order)), a fresh segment; or what it reads from the
# client's own memory: ("direct", (pid, address, shape, dtype)) (pxpool._data.direct)
Descriptor = tuple[str, tuple[Any, ...]]


def available() -> bool:
    return _posixshmem is not None and sys.platform != "win32"


_IDENTITY: str | None = None


def identity() -> str:
    """Which shared memory this process sees: the kernel's boot id and the device of
    ``/dev/shm``. Two processes share memory exactly when their identities are equal:
    the same host name is not enough (a container, or a host with a /dev/shm of its
    own, sees other segments), and a device number alone can repeat on another machine.
    Empty where there is no /dev/shm to compare."""
    global _IDENTITY
    if _IDENTITY is None:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
                boot = handle.read().strip()
            _IDENTITY = f"{boot}:{os.stat(SHM_DIR).st_dev}"
        except OSError:
            _IDENTITY = ""
    return _IDENTITY


def eligible(value: Any, threshold: int = THRESHOLD) -> bool:
    """A numpy array big enough to be worth a segment, and made of plain bytes."""
    return (
        isinstance(value, np.ndarray)
        and value.dtype != object
        and not value.dtype.hasobject
        and value.nbytes >= threshold
    )


def _room_for(nbytes: int) -> bool:
    """tmpfs over-commits: writing past its size kills the writer with SIGBUS, so check."""
    try:
        stat = os.statvfs(SHM_DIR)
    except OSError:
        return True  # no /dev/shm (macOS): the system allocates on demand
    return stat.f_bavail * stat.f_frsize > nbytes + (64 << 20)


def segment_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def create(name: str, nbytes: int) -> mmap.mmap:
    """A new segment of ``nbytes``, mapped read-write and populated; the caller unlinks it."""
    assert _posixshmem is not None
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        os.ftruncate(fd, nbytes)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        return mmap.mmap(fd, nbytes, flags=flags)
    except BaseException:
        unlink(name)
        raise
    finally:
        os.close(fd)


@contextmanager
def opened(name: str, writable: bool) -> Iterator[int]:
    """A file descriptor of the existing segment ``name``, closed on leaving (mappings
    made from it stay)."""
    assert _posixshmem is not None
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR if writable else os.O_RDONLY, mode=0o600)
    try:
        yield fd
    finally:
        os.close(fd)


def _open(name: str, nbytes: int, writable: bool) -> mmap.mmap:
    with opened(name, writable) as fd:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=prot)


def exists(name: str) -> bool:
    """Whether segment ``name`` is still linked (closed or retired slots are not)."""
    return os.path.exists(os.path.join(SHM_DIR, name))


def unlink(name: str) -> None:
    """Remove a segment's name; processes that map it keep their memory until they unmap."""
    if _posixshmem is None:
        return
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


def order_of(array: np.ndarray) -> Order:
    """The memory order a copy of ``array`` keeps: Fortran only for Fortran arrays."""
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


def export(array: np.ndarray, prefix: str) -> SegmentDescriptor:
    """Copy ``array`` into a new segment; returns its descriptor. The caller unlinks it."""
    name = segment_name(prefix)
    order = order_of(array)
    view = create(name, max(array.nbytes, 1))
    try:
        target = np.ndarray(array.shape, array.dtype, buffer=view, order=order)
        copy_into(target, array)
        del target
    finally:
        view.close()
    return name, array.shape, array.dtype, order


def copy_into(target: np.ndarray, source: np.ndarray) -> None:
    """Copy in a few threads: first-touch page faults in a fresh segment cost more than
    the copy itself, and numpy releases the GIL, so they run in parallel."""
    threads = min(os.cpu_count() or 1, COPY_THREADS)
    flat_ok = source.flags.c_contiguous and target.flags.c_contiguous
    if threads < 2 or source.nbytes < PARALLEL_COPY_BYTES or not flat_ok:
        np.copyto(target, source, casting="no")
        return
    src, dst = source.reshape(-1).view(np.uint8), target.reshape(-1).view(np.uint8)
    bounds = np.linspace(0, src.size, threads + 1).astype(np.int64)
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(lambda span: np.copyto(dst[span[0] : span[1]], src[span[0] : span[1]]), spans)
        )


def attach(descriptor: SegmentDescriptor, writable: bool) -> np.ndarray:
    """Map a segment as an array; the mapping lives as long as the array does."""
    name, shape, dtype, order = descriptor
    nbytes = max(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize, 1)
    view = _open(name, nbytes, writable)
    return np.ndarray(shape, dtype, buffer=view, order=order)


def cleanup(prefix: str) -> list[str]:
    """Unlink segments left by a crashed transfer of the pool with this name prefix."""
    removed = []
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "-*")):
        name = os.path.basename(path)
        unlink(name)
        removed.append(name)
    return removed


def pool_prefix(pool_name: str) -> str:
    return f"pxpool-{pool_name}"


def can_share(nbytes: int) -> bool:
    return available() and _room_for(nbytes)
