"""What a lane task carries to its engine: its function cloudpickled, its arguments as
ipyparallel serializes them (large numpy buffers as frames of their own).

``pool.submit`` encodes both as it is called, so a function or an argument that cannot
be pickled fails where it was given. ``pool.executor().map`` pickles its function once,
as it is called, and each call's arguments only as the call is sent to an engine, as
``ProcessPoolExecutor`` does: thousands of submissions in a row held the client's
interpreter lock for their whole encoding, and the lane's thread, which needs that lock
to keep the engines fed, got it only every switch interval (the engines of a 2,000-task
map of 2 ms calls stood idle 60-80 ms). An argument of such a call that cannot be
pickled fails that call's future, and arguments changed in place before their call
is sent travel as changed (as with ``ProcessPoolExecutor``).
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from ipyparallel.serialize import deserialize_object, serialize_object

from .._core.client import SEND_ERRORS, pickle_error
from .._core.names import function_name
from ..errors import UnpicklableArgumentError, UnpicklableFunctionError
from . import wire
from .pickling import dumps_function
from .plain import ITEMS, plain_frames

if TYPE_CHECKING:
    from .board import Task


def encode_function(f: Any, caller: str) -> bytes:
    """``f`` cloudpickled (a notebook's functions travel with the globals they use)."""
    try:
        return dumps_function(f)
    except (*SEND_ERRORS, ValueError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise UnpicklableFunctionError(function_name(f), reason, caller, cloudpickled=True) from exc


def encode_arguments(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[list[Any], int, int]:
    """The frames of the arguments and keyword arguments of a call of ``name``, and
    how many of each; an argument that cannot be pickled is named in the error.
    Plain arguments are pickled without canning (:mod:`.plain`): the engine's
    ``deserialize_object`` reads them as it reads canned ones."""
    try:
        arg_frames = (plain_frames(args, ITEMS) or serialize_object(args)) if args else []
        kw_frames = serialize_object(kwargs) if kwargs else []
    except SEND_ERRORS as exc:
        for what, value in [(f"argument {i}", a) for i, a in enumerate(args, 1)] + [
            (f"keyword argument {k!r}", v) for k, v in kwargs.items()
        ]:
            if (why := pickle_error(value)) is not None:
                raise UnpicklableArgumentError(name, what, value, why) from exc
        raise
    return [*arg_frames, *kw_frames], len(arg_frames), len(kw_frames)


def encode(
    f: Any, args: tuple[Any, ...], kwargs: dict[str, Any], caller: str = "pool.submit"
) -> tuple[list[Any], int, int]:
    """The payload of a task, ``[function, *argument frames]``, and the numbers of
    argument and keyword frames."""
    function = encode_function(f, caller)
    frames, na, nk = encode_arguments(function_name(f), args, kwargs)
    return [function, *frames], na, nk


def complete(task: Task) -> BaseException | None:
    """Encode the arguments a task left for later (on the lane's thread, as it is sent);
    the error that fails its future instead, if they cannot be."""
    if task.later is None:
        return None
    try:
        frames, task.na, task.nk = encode_arguments(task.name, task.later, {})
    except Exception as exc:  # a __reduce__ may raise anything: it fails this call only
        return exc
    task.payload = [*task.payload, *frames]  # a new list: the head is shared
    task.later = None
    return None


def decode_result(status: str, parts: list[Any]) -> Any:
    """A task's result as its engine sent it: plain values pickled (status ``plain``,
    :mod:`pxpool._tasks.plain`) or ``serialize_object`` frames (``ok``)."""
    if status == wire.PLAIN:
        return pickle.loads(parts[0])
    return deserialize_object(parts)[0]
