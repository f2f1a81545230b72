"""Engines keep the memory they freed while they work, and give it back once idle.

glibc gives freed memory back to the system as soon as the free part at the top of the
heap passes a threshold, and serves each allocation over another threshold (128 KB at
first, adjusted up to 32 MB) with a fresh mapping. A map's chunk allocates its rows,
``f``'s temporaries and its result, frees them, and the next chunk faults the same
pages in again; the first touch of a page costs 0.2-3 us (3 us in the virtual machine
this project is tested on: 0.75 ms per MB). Measured here, a map of ``a * 2 + b`` over
a 1M-row frame on 2 engines: engine time per chunk 9.0 -> 5.5 ms, the map 15 -> 11 ms.

So each engine (:func:`keep_freed_memory`) raises both thresholds, so that freed
memory is reused rather than returned, and runs a thread that returns what is free
(``malloc_trim``) once the engine used next to no CPU for ``IDLE_SECONDS``: an idle
engine holds what it uses, as it did before. An engine under a memory limit gives its
freed memory back at once instead (:func:`give_back_freed_memory`): what it keeps would
count against the limit. Linux with glibc only; elsewhere, and where ``mallopt``
refuses, nothing changes.

Small objects (up to 512 bytes) come from Python's own allocator, which unmaps each
1 MiB arena as soon as its last object is freed; glibc's thresholds do not reach them.
A chunk that decodes 500k strings (:mod:`pxpool._data.columns`) filled ~30 arenas,
freed them when it ended, and the next chunk faulted them in again: splitting the text
took 32 ms, 12 ms with the arenas kept. So the same policy holds a few objects of each
such array (:func:`keep_arenas_of`, every ``KEEP_EVERY``-th): their arenas stay mapped,
and the next chunk's objects fill them again. The idle trimmer lets them go.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from collections import deque
from typing import Any

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # allocations below this come from the heap (glibc's own cap)
TRIM_THRESHOLD = 128 << 20  # free heap kept while busy, at most
DEFAULT_THRESHOLD = 128 << 10  # glibc's initial value of both
IDLE_SECONDS = 2.0
IDLE_CPU_SHARE = 0.02  # of one core, measured over each look
LOOK_SECONDS = 0.5
KEEP_EVERY = 1024  # objects per one held: an arena holds 2,048 of 512 bytes, 16,384 of 64
KEPT_ARRAYS = 64  # the last arrays whose arenas are held
_kept: deque[list[Any]] = deque(maxlen=KEPT_ARRAYS)
_keeping = False  # keep_freed_memory ran, give_back_freed_memory did not


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl): its allocator, as it is
        return None
    if not all(hasattr(libc, name) for name in ("mallopt", "malloc_trim")):
        return None
    return libc


def keep_freed_memory(idle_seconds: float = IDLE_SECONDS) -> bool:
    """Raise glibc's thresholds in this process and start the idle trimmer (after a
    fork: threads are not inherited). False where that is not possible."""
    libc = _glibc()
    if libc is None:
        return False
    raised = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    raised = raised and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    global _keeping
    _keeping = bool(raised)
    if raised:
        trimmer = threading.Thread(
            target=_trim_when_idle, args=(libc, idle_seconds), name="pxpool-heap", daemon=True
        )
        trimmer.start()
    return bool(raised)


def give_back_freed_memory() -> None:
    """Freed memory goes back to the system at once again (glibc's initial thresholds),
    and what is free now goes too: for engines under a memory limit."""
    global _keeping
    _keeping = False
    _kept.clear()
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_THRESHOLD)
        libc.malloc_trim(0)


def _trim_when_idle(libc: Any, idle_seconds: float) -> None:
    """Every ``LOOK_SECONDS``: busy if the process used CPU; once idle for
    ``idle_seconds`` after being busy, return the free heap to the system."""
    cpu, idle_since, trimmed = time.process_time(), time.monotonic(), False
    while True:
        time.sleep(LOOK_SECONDS)
        now_cpu, now = time.process_time(), time.monotonic()
        if now_cpu - cpu > IDLE_CPU_SHARE * LOOK_SECONDS:
            idle_since, trimmed = now, False
        elif not trimmed and now - idle_since >= idle_seconds:
            _kept.clear()  # Python's arenas go as their last objects do
            libc.malloc_trim(0)
            trimmed = True
            now_cpu = time.process_time()  # the trim's own CPU is not work
        cpu = now_cpu


def keep_arenas_of(values: Any) -> None:
    """While this process keeps freed memory, hold every ``KEEP_EVERY``-th of the small
    objects in ``values`` (a list or an array of objects), so that the allocator's arenas
    they fill stay mapped after ``values`` is freed."""
    if _keeping and len(values) > KEEP_EVERY:
        _kept.append(list(values[::KEEP_EVERY]))
