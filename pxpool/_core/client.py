"""ipyparallel's Client with errors that name what could not be sent.

When a task's function or an argument cannot be pickled, ipyparallel raises the
pickler's bare ``TypeError`` ("cannot pickle '_thread.lock' object") without saying
which of them it was. This Client finds the culprit, only on that failure path, and
raises :class:`~pxpool.UnpicklableFunctionError` or
:class:`~pxpool.UnpicklableArgumentError` naming it. (``pool.map`` names the item of
a chunk itself, with :func:`pickle_error`.)
"""

from __future__ import annotations

import datetime
import pickle
import time
from typing import Any

import ipyparallel as ipp
from ipyparallel.serialize import PrePickled, serialize_object

from ..errors import PxpoolError, UnpicklableArgumentError, UnpicklableFunctionError
from . import hold
from .events import TaskEvents
from .names import current_task_name, function_name, task_name
from .recent import RecentItems

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
    history: list[Any]  # ipyparallel's trait; a RecentItems here

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.history = RecentItems(self.history)  # the last task ids only (see .recent)

    def purge_everything(self) -> None:
        super().purge_everything()  # which sets ``history`` to a plain list
        self.history = RecentItems(self.history)

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
            future = super().send_apply_request(socket, f, args, kwargs, metadata, *rest, **more)
        except SEND_ERRORS as exc:
            error = send_error(f, args or (), kwargs or {})
            if error is None:
                raise
            raise error from exc
        if not isinstance(f, PrePickled) or current_task_name() is not None:
            self._name_task(future, metadata, task_name(f))  # (pickled ahead: no name)
        return future

    def send_execute_request(
        self, socket: Any, code: str, silent: bool = True, metadata: Any = None, **more: Any
    ) -> Any:
        metadata = hold.mark(metadata)
        future = super().send_execute_request(socket, code, silent, metadata, **more)
        self._name_task(future, metadata, "execute")
        return future

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

    # ------------------------------------------------------------ task events

    task_events: TaskEvents | None = None  # the pool's ring: hub tasks are recorded there

    def _name_task(self, future: Any, metadata: dict[str, Any] | None, name: str) -> None:
        """Remember the name of a task to record when its reply comes; engine hooks'
        own messages (marked) are the pool's housekeeping, not the user's tasks."""
        if self.task_events is None or (metadata or {}).get(hold.MARK):
            return
        msg_id = getattr(future, "msg_id", None)
        if msg_id is not None:
            self.__dict__.setdefault("_task_names", {})[msg_id] = name

    def _handle_apply_reply(self, msg: dict[str, Any]) -> None:
        task = self._finished_task(msg)
        super()._handle_apply_reply(msg)
        self._record(task)

    def _handle_execute_reply(self, msg: dict[str, Any]) -> None:
        task = self._finished_task(msg)
        super()._handle_execute_reply(msg)
        self._record(task)

    def _finished_task(self, msg: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The name and metadata of a reply's task, read from the reply itself before
        ipyparallel handles it: a waiting AsyncResult may drop the client's copy of the
        metadata as soon as its result is set."""
        msg_id = msg.get("parent_header", {}).get("msg_id")
        name = self.__dict__.get("_task_names", {}).pop(msg_id, None)
        if name is None or self.task_events is None:
            return None
        try:
            return name, self._extract_metadata(msg)
        except (KeyError, TypeError):  # a reply of another shape: not a task to show
            return None

    def _record(self, task: tuple[str, dict[str, Any]] | None) -> None:
        """A hub task's outcome into the ring: its engine, and the times the engine
        stamped (one that died under it: from its submission to the death)."""
        events = self.task_events
        if task is None or events is None or not isinstance(task[1].get("engine_id"), int):
            return
        name, md = task
        end = _seconds(md.get("completed")) or time.time()
        start = _seconds(md.get("started")) or _seconds(md.get("submitted")) or end
        events.record(md["engine_id"], name, start, end, md.get("status") == "ok", "hub")


def _seconds(when: Any) -> float | None:
    """A message's date (a datetime, or its ISO text) as ``time.time()`` seconds."""
    if isinstance(when, str):
        try:
            when = datetime.datetime.fromisoformat(when)
        except ValueError:
            return None
    if not isinstance(when, datetime.datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)  # jupyter messages' dates are UTC
    return float(when.timestamp())
