"""ipyparallel's Client with errors that name what could not be sent.

When a task's function, an argument or an item of ``pool.map`` cannot be pickled,
ipyparallel raises the pickler's bare ``TypeError`` ("cannot pickle '_thread.lock'
object") without saying which of them it was. This Client finds the culprit, only
on that failure path, and raises :class:`~pxpool.UnpicklableFunctionError` or
:class:`~pxpool.UnpicklableArgumentError` naming it.
"""

from __future__ import annotations

import pickle
from typing import Any

import ipyparallel as ipp
from ipyparallel.serialize import PrePickled, serialize_object

from .._data import chunking
from .._data_errors import UnpicklableArgumentError, UnpicklableFunctionError, function_name
from .._reliability import result_limit
from . import hold

SEND_ERRORS = (TypeError, AttributeError, pickle.PicklingError, RecursionError)


def _pickle_error(value: Any) -> str | None:
    """Why ``value`` cannot be serialized as ipyparallel sends it, or None if it can."""
    if isinstance(value, PrePickled):
        return None
    try:
        serialize_object(value)
    except SEND_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def send_error(f: Any, args: Any, kwargs: Any) -> Exception | None:
    """The error naming what of ``f(*args, **kwargs)`` cannot be sent, if anything."""
    if f is chunking.run_items and len(args) >= 4 and isinstance(args[3], list | tuple):
        for offset, item in enumerate(args[3]):  # a pool.map chunk: name the item
            if (reason := _pickle_error(item)) is not None:
                return UnpicklableArgumentError(
                    "pool.map", f"item {args[2] + offset}", item, reason
                )
    if not isinstance(f, PrePickled) and (reason := _pickle_error(f)) is not None:
        return UnpicklableFunctionError(function_name(f), reason, caller="a task")
    name = function_name(f)
    for position, value in enumerate(args, start=1):
        if (reason := _pickle_error(value)) is not None:
            return UnpicklableArgumentError(name, f"argument {position}", value, reason)
    for key, value in kwargs.items():
        if (reason := _pickle_error(value)) is not None:
            return UnpicklableArgumentError(name, f"keyword argument {key!r}", value, reason)
    return None


class PxClient(ipp.Client):
    def send_apply_request(
        self,
        socket: Any,
        f: Any,
        args: Any = None,
        kwargs: Any = None,
        metadata: Any = None,
        *rest: Any,
        **more: Any,
    ) -> Any:
        metadata = hold.mark(metadata)  # engine hooks' messages pass held engines
        try:
            return super().send_apply_request(socket, f, args, kwargs, metadata, *rest, **more)
        except SEND_ERRORS as exc:
            error = send_error(f, args or (), kwargs or {})
            if error is None:
                raise
            raise error from exc

    def send_execute_request(
        self, socket: Any, code: str, silent: bool = True, metadata: Any = None, **more: Any
    ) -> Any:
        return super().send_execute_request(socket, code, silent, hold.mark(metadata), **more)

    def _unwrap_exception(self, content: dict[str, Any]) -> Any:
        """An engine's refusal to send a too large result arrives as ResultTooLarge."""
        return result_limit.unwrap(content, super()._unwrap_exception(content))
