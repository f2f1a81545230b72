"""A result-size limit enforced on the engine, before the result is sent.

ipyparallel sends whatever a task returns: a 10 GB result travels through the
controller (which keeps a copy in its task database) to the client, and can take
either down. With ``[engine] max_result_size`` (default ``"1G"``, ``"0"``: no limit)
each engine measures an apply result once serialised and, when it is larger, sends
a ``ResultTooLarge`` error instead; the engine stays usable.

The check wraps the one function ipyparallel's engine kernel serialises apply
results with (``serialize_object`` in ``ipyparallel.engine.kernel``), so the error
takes the kernel's own error path (traceback, engine info, a failed task in the
health counts). The client turns that error back into
:class:`pxpool._core.client.ResultTooLarge`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_size", "limit_results", "human_size"]

_limit: tuple[int, str] | None = None  # on an engine: (bytes, how the profile says it)


def human_size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def _engine_id() -> Any:
    try:
        from IPython.core.getipython import get_ipython

        return get_ipython().kernel.engine_id
    except Exception:
        return "?"


def _checked(serialize: Any) -> Any:
    def serialize_object(obj: Any, *args: Any, **kwargs: Any) -> Any:
        buffers = serialize(obj, *args, **kwargs)
        check_size(buffers)
        return buffers

    serialize_object.__wrapped__ = serialize  # type: ignore[attr-defined]
    return serialize_object


def check_size(buffers: list[Any]) -> None:
    """On an engine: raise ``ResultTooLarge`` when a serialised result is over the limit
    (also for results serialised without ``serialize_object``: the task lane's plain ones)."""
    if _limit is None:
        return
    size = sum(memoryview(b).nbytes for b in buffers)
    limit, described = _limit
    if size > limit:
        raise ResultTooLargeOnEngine(
            f"The result of a task on engine {_engine_id()} is {human_size(size)} "
            f"({size} bytes) serialised, larger than the limit of {human_size(limit)} "
            f"({limit} bytes) set by {described}; it was not sent and the engine "
            "keeps running. Return less (reduce it on the engine, or write it to a "
            "shared file and return the path), or raise max_result_size in the "
            'profile ("0": no limit).'
        )


class ResultTooLargeOnEngine(Exception):
    """Raised on the engine; the client receives it as
    :class:`pxpool._core.client.ResultTooLarge`."""


# the name the error is sent under, which the client matches
ResultTooLargeOnEngine.__name__ = ResultTooLargeOnEngine.__qualname__ = "ResultTooLarge"


def limit_results(limit: int, described: str) -> None:
    """On an engine: refuse apply results larger than ``limit`` bytes (0: no limit)."""
    global _limit
    from ipyparallel.engine import kernel

    _limit = (limit, described) if limit > 0 else None
    if not hasattr(kernel.serialize_object, "__wrapped__"):
        kernel.serialize_object = _checked(kernel.serialize_object)
