"""How messages name a function: the client's send errors and ``pool.map``'s errors.

In the core rather than beside the map because the core's client names functions too
(:func:`pxpool._core.client.send_error`), and the core imports no feature package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["current_task_name", "function_name", "task_name", "task_named"]

# the name a task sent now is shown under (a map chunk: the user's function, not its runner)
_TASK_NAME: ContextVar[str | None] = ContextVar("pxpool_task_name", default=None)


def function_name(f: Any) -> str:
    """``f``'s qualified name (``Model.fit``, ``<lambda>``), or its repr if it has none."""
    name = getattr(f, "__qualname__", None) or getattr(f, "__name__", None)
    return name if name else repr(f)


@contextmanager
def task_named(name: str) -> Iterator[None]:
    """Tasks sent through the hub inside this block are named ``name`` in task streams."""
    token = _TASK_NAME.set(name)
    try:
        yield
    finally:
        _TASK_NAME.reset(token)


def current_task_name() -> str | None:
    """The name :func:`task_named` gives tasks sent now, if any."""
    return _TASK_NAME.get()


def task_name(f: Any) -> str:
    """The name a task of ``f`` sent now is shown under (see :func:`task_named`)."""
    return _TASK_NAME.get() or function_name(f)
