"""Engine side of engine logs: every line an engine prints, kept in a file beside it.

ipyparallel sends what a task or a ``%%px`` cell prints to the client with its result
and nowhere else: the engine's own output file never sees it, so once the client has
moved on (or the engine died mid-task) it is gone. :func:`install` (run on each engine
by the pool's engine hook; idempotent) makes the engine's ``sys.stdout`` and
``sys.stderr`` keep a copy of each write in ``engine-<id>.log``:

- the copy goes to the file with one ``os.write`` per write, no buffer in the process:
  the kernel owns the bytes the moment ``print`` returns, so they survive a SIGKILL or
  a segfault a microsecond later;
- the file is bounded: past ``max_bytes`` it becomes ``engine-<id>.log.1`` (the one
  before is dropped) and a new one starts, so an engine keeps between ``max_bytes``
  and twice that of its latest output;
- an engine started again under the same id appends to the same file, after a line
  naming the new process, so the lines of the one that died stay readable above it.

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

import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Keeper", "install", "tail", "read_tail"]

MAX_BYTES = 1 << 20  # bytes per file; with the one before, up to 2 MiB per engine
READ_BYTES = 1 << 20  # bytes read from the end of a file for a tail
_KEEPER: Keeper | None = None
_KEPT = "_pxpool_kept"  # marks a stream's write that keeps a copy
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # terminal colours of IPython's tracebacks


class Keeper:
    """The bounded file of one engine: :meth:`keep` appends, rotating past ``max_bytes``."""

    def __init__(self, path: str, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        os.register_at_fork(after_in_child=self._after_fork)

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _after_fork(self) -> None:
        self.lock = threading.Lock()  # a forked child (multiprocessing) keeps writing

    def keep(self, text: str) -> None:
        """Append ``text`` now (no buffer: it survives the process); never raises."""
        data = text.encode("utf-8", "replace")
        if not data:
            return
        try:
            with self.lock:
                if self.size and self.size + len(data) > self.max_bytes:
                    self._rotate()
                view = memoryview(data)
                while view:
                    written = os.write(self.fd, view)
                    view = view[written:]
                self.size += len(data)
        except OSError:
            pass  # a full disk or a removed directory must not break the engine's print

    def _rotate(self) -> None:
        os.replace(self.path, self.path + ".1")
        os.close(self.fd)
        self.fd = self._open()
        self.size = 0


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
    engine_id: int, wanted_dir: str, pool: str, max_bytes: int = MAX_BYTES
) -> dict[str, Any]:
    """Keep this engine's output in ``engine-<engine_id>.log`` (once per process);
    where the file is, for the client to read."""
    global _KEEPER
    if _KEEPER is None:
        directory = _directory(wanted_dir, pool)
        os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)  # both private
        os.makedirs(directory, mode=0o700, exist_ok=True)
        keeper = Keeper(os.path.join(directory, f"engine-{engine_id}.log"), max_bytes)
        began = time.strftime("%Y-%m-%d %H:%M:%S")
        keeper.keep(
            f"---- pxpool: engine {engine_id}, pid {os.getpid()} on {socket.gethostname()}, "
            f"keeps its output here from {began} ----\n"
        )
        _KEEPER = keeper
    for name in ("stdout", "stderr"):
        _keep_stream(name)
    _keep_tracebacks()
    stat = os.stat(_KEEPER.path)
    return {
        "path": _KEEPER.path,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "file": [stat.st_dev, stat.st_ino],
    }


def read_tail(path: str, lines: int) -> str:
    """The last ``lines`` lines of ``path.1`` and ``path`` together ("" if neither exists)."""
    chunks: list[bytes] = []
    for name in (path + ".1", path):
        try:
            with open(name, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(max(0, size - READ_BYTES))
                chunks.append(handle.read())
        except OSError:
            continue
    text = b"".join(chunks).decode("utf-8", "replace")
    return "".join(text.splitlines(keepends=True)[-lines:]) if lines > 0 else ""


def tail(lines: int) -> str:
    """On an engine: the last ``lines`` lines it kept (for files the client cannot read)."""
    keeper = _KEEPER
    return "" if keeper is None else read_tail(keeper.path, lines)
