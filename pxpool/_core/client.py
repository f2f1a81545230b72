"""ipyparallel's Client with errors that name what could not be sent.

When a task's function or an argument cannot be pickled, ipyparallel raises the
pickler's bare ``TypeError`` ("cannot pickle '_thread.lock' object") without saying
which of them it was. This Client finds the culprit, only on that failure path, and
raises :class:`~pxpool.UnpicklableFunctionError` or
:class:`~pxpool.UnpicklableArgumentError` naming it. (``pool.map`` names the item of
a chunk itself, with :func:`pickle_error`.)
"""

from __future__ import annotations

import pickle
from typing import Any

import ipyparallel as ipp
from ipyparallel.serialize import PrePickled, serialize_object

from ..errors import PxpoolError, UnpicklableArgumentError, UnpicklableFunctionError
from . import hold
from .names import function_name

SEND_ERRORS = (TypeError, AttributeError, pickle.PicklingError, RecursionError)


def pickle_error(value: Any) -> str | None:
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
    if not isinstance(f, PrePickled) and (reason := pickle_error(f)) is not None:
        return UnpicklableFunctionError(function_name(f), reason, caller="a task")
    name = function_name(f)
    for position, value in enumerate(args, start=1):
        if (reason := pickle_error(value)) is not None:
            return UnpicklableArgumentError(name, f"argument {position}", value, reason)
    for key, value in kwargs.items():
        if (reason := pickle_error(value)) is not None:
            return UnpicklableArgumentError(name, f"keyword argument {key!r}", value, reason)
    return None


class ResultTooLarge(PxpoolError, ipp.RemoteError):  # type: ignore[misc]  # untyped base
    """A task's result was larger than ``[engine] max_result_size``; the engine did not
    send it. Also a ``RemoteError``, so views and ``CompositeError`` carry it as any
    other engine error; the message names the size, the limit and the key. Defined
    here, beside the client that makes it, so :mod:`pxpool.errors` stays free of
    ipyparallel (engine-side code imports it)."""

    def __init__(
        self, ename: str, evalue: str, traceback: str, engine_info: dict[str, Any] | None = None
    ) -> None:
        ipp.RemoteError.__init__(self, ename, evalue, traceback, engine_info)

    def __str__(self) -> str:
        return str(self.evalue)


class TaskError(PxpoolError, ipp.RemoteError):  # type: ignore[misc]  # untyped base
    """A task of ``pool.submit`` (or of ``pool.executor()``, the joblib backend) raised on
    its engine. A ``RemoteError`` as ``pool.apply``'s errors are: ``ename``, ``evalue``,
    ``traceback`` (the engine's, shown by IPython) and ``engine_info``; ``task`` and
    ``engine_id`` name what failed where, and ``pool.debug(engine_id)`` opens the
    failure post-mortem. Defined beside :class:`ResultTooLarge` for the same reason."""

    def __init__(self, task: str, engine_id: int, ename: str, evalue: str, traceback: str) -> None:
        info = {"engine_id": engine_id, "method": "submit"}
        ipp.RemoteError.__init__(self, ename, evalue, traceback, info)
        self.task = task
        self.engine_id = engine_id

    def __str__(self) -> str:
        return (
            f"{self.task} failed on engine {self.engine_id}: {self.ename}: {self.evalue}. "
            f"The engine's traceback is in .traceback; `pool.debug({self.engine_id})` "
            "opens it post-mortem."
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.task, self.engine_id, self.ename, self.evalue, self.traceback))


def unwrap_result_too_large(content: dict[str, Any], error: Any) -> Any:
    """An engine's refusal to send a too large result (the engine-side error's name is
    ``ResultTooLarge``, :mod:`pxpool._reliability.result_limit`) as ResultTooLarge."""
    if content.get("ename") != "ResultTooLarge":
        return error
    return ResultTooLarge(error.ename, error.evalue, error.traceback, error.engine_info)


class PxClient(ipp.Client):  # type: ignore[misc]  # untyped base
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
        return unwrap_result_too_large(content, super()._unwrap_exception(content))

    def balanced_view_parts(self, targets: Any) -> tuple[Any, list[int] | None]:
        """The task socket and the engine ids a LoadBalancedView over ``targets`` is made
        with, as ``load_balanced_view`` makes them (``"all"`` or None: every engine, also
        those that join later); for subclasses of LoadBalancedView, which ipyparallel's
        Client does not construct."""
        if targets == "all":
            targets = None
        ids: list[int] | None = None if targets is None else self._build_targets(targets)[1]
        return self._task_stream, ids
