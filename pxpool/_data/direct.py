"""A map's numeric input read by the engines straight from the client's memory.

Through shared memory, the client first copies every input column into a segment and
each engine copies its rows out again: for a cheap ``f`` over a 16 MB frame the
client's copy alone (~1.9 ms on this kind of machine) costs more than ``f``. On Linux,
a process may read the memory of another process of the same user with
``process_vm_readv`` (cross-memory attach), at memcpy speed. So where the engines can,
they read their rows of a plain column (numbers, datetimes, a categorical's codes, a
nullable column's values and mask) from the client's own arrays: one copy, made by the
engines in parallel, and no segment at all. The client holds those arrays until the
map is over (:class:`pxpool._data.shared_parts.SharedInputs`); ``pool.map`` blocks
meanwhile, so they do not change under the engines unless another thread of the
client writes to them.

Whether an engine may read the client is found out once per engine (:func:`marker`,
:func:`reads`): the client names its pid and a random token in its memory, and the
engine reads the token back. Where that fails (another pid namespace, a kernel setting
such as Yama's ``ptrace_scope``, a seccomp filter, another user), the map copies into
shared memory as before. Both sides; standard library, ctypes and numpy only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import sys
from typing import Any

import numpy as np

__all__ = ["Remote", "RemoteDescriptor", "available", "describe", "marker", "read_into", "reads"]

# an array in the client's memory, as the engines read it: (pid, address, shape, dtype)
RemoteDescriptor = tuple[int, int, tuple[int, ...], str]


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def _load() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function = libc.process_vm_readv
    except (OSError, AttributeError):
        return None
    iov = ctypes.POINTER(_IoVec)
    function.argtypes = [ctypes.c_int, iov, ctypes.c_ulong, iov, ctypes.c_ulong, ctypes.c_ulong]
    function.restype = ctypes.c_ssize_t
    return function


_READV = _load()
_TOKEN = np.frombuffer(bytearray(secrets.token_bytes(16)), np.uint8)  # see marker()


def available() -> bool:
    """Whether this system has ``process_vm_readv`` at all."""
    return _READV is not None


def read_into(pid: int, address: int, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous, this process's own) with as many bytes from ``address``
    in process ``pid``. OSError naming the process when the kernel refuses or the range
    is not mapped there."""
    if _READV is None:
        raise OSError(errno.ENOSYS, "process_vm_readv is not available on this system")
    view = out.reshape(-1).view(np.uint8)
    done, total = 0, view.size
    while done < total:
        local = _IoVec(view.ctypes.data + done, total - done)
        remote = _IoVec(address + done, total - done)
        got = _READV(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got <= 0:
            code = ctypes.get_errno() if got < 0 else errno.EFAULT
            raise OSError(
                code,
                f"reading {total - done} bytes of the map's input from the client process "
                f"(pid {pid}) failed: {os.strerror(code)}; the client may have stopped or "
                "freed the input: run the map again from a running client",
            )
        done += got


def marker() -> tuple[int, int, bytes]:
    """What an engine needs to prove it reads this process: (pid, address, token)."""
    return os.getpid(), int(_TOKEN.ctypes.data), _TOKEN.tobytes()


def reads(pid: int, address: int, token: bytes) -> bool:
    """Engine side: whether the process ``pid`` is the client that made ``token`` and its
    memory can be read from here (a pid of another namespace names another process)."""
    out = np.empty(len(token), np.uint8)
    try:
        read_into(pid, address, out)
    except OSError:
        return False
    return out.tobytes() == token


def describe(array: np.ndarray) -> RemoteDescriptor:
    """The descriptor of a C-contiguous array of this process."""
    assert array.flags.c_contiguous and not array.dtype.hasobject
    return os.getpid(), int(array.ctypes.data), tuple(array.shape), array.dtype.str


class Remote:
    """An array in the client's memory: slicing its first axis reads those rows into a
    new array of this process (never a view)."""

    def __init__(self, descriptor: RemoteDescriptor) -> None:
        self.pid, self.address, self.shape, dtype = descriptor
        self.dtype = np.dtype(dtype)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("a remote array reads contiguous rows only")
        stop = max(start, stop)
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        if out.size:
            read_into(self.pid, self.address + start * self._row_bytes, out)
        return out
