"""Engine side of engine logs: every line an engine prints, kept in a file beside it.

ipyparallel sends what a task or a ``%%px`` cell prints to the client with its result
and nowhere else: the engine's own output file never sees it, so once the client has
moved on (or the engine died mid-task) it is gone. :func:`install` (run on each engine
by the pool's engine hook; idempotent) makes the engine's ``sys.stdout`` and
``sys.stderr`` keep a copy of each write in ``engine-<id>.log``:

- the file is a ring of ``RING_BYTES`` (2 MiB) mapped into the engine's memory
  (``mmap``, shared with the file): a write is a copy into the kernel's page cache, a
  fraction of a microsecond and no system call, and it is in the file the moment
  ``print`` returns, so it survives a SIGKILL or a segfault a microsecond later;
- the ring keeps the latest output: a header counts the bytes written, the oldest are
  overwritten (:func:`ring_text` reads it back in order);
- an engine started again under the same id continues the same ring, after a line
  naming the new process, so the lines of the one that died stay readable above it.
  (Forked children of an engine write into the same ring; lines they print at the very
  moment their parent does may overlap.)

The streams are ipykernel's ``OutStream`` objects; the copy is made by their ``write``
(an attribute of the instance), which ipykernel's own watcher of the process's file
descriptors calls too, so output of C code and subprocesses is kept as well. A
traceback the engine shows (a failed cell, apply or lane task) travels to the client as
an error message, not on a stream; the shell's ``_showtraceback`` keeps a plain-text copy.

The file lives in the pool's directory when the engine sees it (local engines, batch
jobs on a shared filesystem), else in ``$TMPDIR/pxpool-logs-<uid>/<pool>`` on the
engine's host (SSH hosts); the client reads it there, over ssh for a remote host.

This module imports the standard library, and IPython's ``get_ipython`` when it runs.
"""

from __future__ import annotations

import mmap
import os
import re
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Keeper", "install", "tail", "read_tail", "ring_text", "last_lines", "token_of"]

RING_BYTES = 2 << 20  # bytes of output an engine keeps (its latest)
# magic, bytes written since the file was made, and the file's own random token: a
# client that reads the same token where the engine said the file is sees that file
_HEADER = struct.Struct("<8sQ16s")
_MAGIC = b"pxlogs2\0"
_COUNT, _COUNT_AT, _DATA = struct.Struct("<Q"), 8, _HEADER.size  # where the count and data are
_KEEPER: Keeper | None = None
_KEPT = "_pxpool_kept"  # marks a stream's write that keeps a copy
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # terminal colours of IPython's tracebacks


class Keeper:
    """One engine's ring file, mapped into memory: :meth:`keep` copies into the ring.

    A shared file mapping's pages belong to the file in the kernel's page cache, so a
    write is in the file the moment the copy is done, with no system call, and stays
    there whatever happens to the process. An existing ring of the same size is
    continued (an engine started again under the same id)."""

    def __init__(self, path: str, ring_bytes: int = RING_BYTES) -> None:
        self.path = path
        self.capacity = ring_bytes
        self.lock = threading.Lock()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = _HEADER.size + ring_bytes
            fresh = os.fstat(fd).st_size != size
            if fresh:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, size)  # sparse: disk is used as output comes
            self.ring = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        magic, written, token = _HEADER.unpack_from(self.ring, 0)
        if fresh or magic != _MAGIC:
            written, token = 0, os.urandom(16)
        self.written, self.token = written, token
        _HEADER.pack_into(self.ring, 0, _MAGIC, written, token)
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self.lock = threading.Lock()  # a forked child (multiprocessing) keeps writing

    def keep(self, text: str) -> None:
        """Copy ``text`` into the ring (it survives the process); never raises."""
        data = text.encode("utf-8", "replace")
        size = len(data)
        if size > self.capacity:
            data, size = data[-self.capacity :], self.capacity
        with self.lock:
            at = self.written % self.capacity
            ring = self.ring
            if at + size <= self.capacity:
                ring[_DATA + at : _DATA + at + size] = data
            else:  # wraps around
                first = self.capacity - at
                ring[_DATA + at :] = data[:first]
                ring[_DATA : _DATA + size - first] = data[first:]
            self.written += size
            _COUNT.pack_into(ring, _COUNT_AT, self.written)


def ring_text(content: bytes) -> str:
    """The text a ring file holds, oldest first ("" for anything else)."""
    if len(content) < _HEADER.size:
        return ""
    magic, written, _token = _HEADER.unpack_from(content, 0)
    data = content[_HEADER.size :]
    if magic != _MAGIC or not data:
        return ""
    if written <= len(data):
        kept = data[:written]
    else:  # wrapped: the oldest byte follows the newest
        at = written % len(data)
        kept = data[at:] + data[:at]
    return kept.decode("utf-8", "replace")


def _keeping(write: Callable[[str], Any]) -> Callable[[str], Any]:
    """``write`` that also hands the text to the engine's keeper."""

    def kept_write(text: str) -> Any:
        keeper = _KEEPER
        if keeper is not None and isinstance(text, str):
            keeper.keep(text)
        return write(text)

    setattr(kept_write, _KEPT, True)
    return kept_write


class _KeptStream:
    """A stream that keeps a copy of each write (for streams whose ``write`` cannot be
    replaced on the instance); everything else is the stream's own."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.write = _keeping(stream.write)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _keep_stream(name: str) -> None:
    stream = getattr(sys, name)
    if getattr(getattr(stream, "write", None), _KEPT, False):
        return
    try:
        stream.write = _keeping(stream.write)  # ipykernel's fd watcher calls it too
    except (AttributeError, TypeError):
        setattr(sys, name, _KeptStream(stream))


def _keep_tracebacks() -> None:
    """The engine's shell keeps a copy of each traceback it shows (without colours)."""
    from IPython.core.getipython import get_ipython

    shell = get_ipython()
    show = getattr(shell, "_showtraceback", None)
    if show is None or getattr(show, _KEPT, False):
        return

    def kept_show(etype: Any, evalue: Any, stb: list[str]) -> Any:
        keeper = _KEEPER
        if keeper is not None:
            keeper.keep(_COLOURS.sub("", "\n".join(stb)) + "\n")
        return show(etype, evalue, stb)

    setattr(kept_show, _KEPT, True)
    # ipykernel's shell sends a traceback only from there (no public hook)
    shell._showtraceback = kept_show  # noqa: SLF001


def _directory(wanted: str, pool: str) -> str:
    """``wanted`` when its parent exists here and is writable, else a private folder
    under the host's temporary directory."""
    parent = os.path.dirname(wanted.rstrip(os.sep))
    if wanted and os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK):
        return wanted
    return os.path.join(tempfile.gettempdir(), f"pxpool-logs-{os.getuid()}", pool)


def install(
    engine_id: int, wanted_dir: str, pool: str, ring_bytes: int = RING_BYTES
) -> dict[str, Any]:
    """Keep this engine's output in ``engine-<engine_id>.log`` (once per process);
    where the file is, for the client to read."""
    global _KEEPER
    if _KEEPER is None:
        directory = _directory(wanted_dir, pool)
        os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)  # both private
        os.makedirs(directory, mode=0o700, exist_ok=True)
        keeper = Keeper(os.path.join(directory, f"engine-{engine_id}.log"), ring_bytes)
        began = time.strftime("%Y-%m-%d %H:%M:%S")
        keeper.keep(
            f"---- pxpool: engine {engine_id}, pid {os.getpid()} on {socket.gethostname()}, "
            f"keeps its output here from {began} ----\n"
        )
        _KEEPER = keeper
    for name in ("stdout", "stderr"):
        _keep_stream(name)
    _keep_tracebacks()
    return {
        "path": _KEEPER.path,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": _KEEPER.token.hex(),
    }


def last_lines(text: str, lines: int) -> str:
    """The last ``lines`` lines of ``text``."""
    return "".join(text.splitlines(keepends=True)[-lines:]) if lines > 0 else ""


def token_of(path: str) -> str:
    """The token of the ring file at ``path`` here, hex ("" if it is none)."""
    try:
        with open(path, "rb") as handle:
            magic, _written, token = _HEADER.unpack(handle.read(_HEADER.size))
    except (OSError, struct.error):
        return ""
    return token.hex() if magic == _MAGIC else ""


def read_tail(path: str, lines: int) -> str:
    """The last ``lines`` lines a ring file holds ("" if there is none)."""
    try:
        with open(path, "rb") as handle:
            content = handle.read(_HEADER.size + RING_BYTES * 4)
    except OSError:
        return ""
    return last_lines(ring_text(content), lines)


def tail(lines: int) -> str:
    """On an engine: the last ``lines`` lines it kept (for files the client cannot read)."""
    keeper = _KEEPER
    return "" if keeper is None else last_lines(ring_text(keeper.ring[:]), lines)
