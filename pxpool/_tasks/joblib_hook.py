"""Registering the joblib backend ``"pxpool"`` without importing joblib.

``import pxpool`` must stay light (engines import it), and joblib takes a good part of a
second to import. So at ``import pxpool``: if joblib is already imported the backend is
registered at once; otherwise a finder on ``sys.meta_path`` waits for joblib's own
import and registers the backend right after it (then removes itself). Registering
stores a small factory; :mod:`pxpool._tasks.joblib_backend` is imported on first use.
Standard library only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

NAME = "pxpool"
_WATCHED = "joblib"
# pxpool.current, set by pxpool.pool once a pool is started (this layer cannot import it)
current_pool: Callable[[], Any] | None = None


def use_current(finder: Callable[[], Any]) -> None:
    """The function that says which pool ``backend="pxpool"`` runs on by default."""
    global current_pool
    current_pool = finder


def make_backend(**kwargs: Any) -> Any:
    """joblib's factory for ``backend="pxpool"`` (imports the backend on first use)."""
    from .joblib_backend import PxpoolBackend

    return PxpoolBackend(find_pool=current_pool, **kwargs)


def register(pool: Any = None) -> None:
    """Register the backend with joblib (importing it); bound to ``pool`` if given."""
    import joblib

    if pool is None:
        joblib.register_parallel_backend(NAME, make_backend)
        return

    def bound(**kwargs: Any) -> Any:
        kwargs.setdefault("pool", pool)
        return make_backend(**kwargs)

    joblib.register_parallel_backend(NAME, bound)


def _register_or_warn() -> None:
    try:
        register()
    except Exception as exc:  # joblib works on; only backend="pxpool" is missing
        import logging

        logging.getLogger("pxpool.tasks").warning(
            "pxpool: could not register the joblib backend: %r", exc
        )


class _Loader:
    """Runs joblib's own loader, then registers the backend."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _register_or_warn()


class _JoblibFinder:
    """A ``sys.meta_path`` entry that only acts on the first import of joblib."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != _WATCHED:
            return None
        import importlib.util

        remove_finder()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)  # type: ignore[assignment]  # a Loader by shape
        return spec


_FINDER = _JoblibFinder()


def remove_finder() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def register_when_imported() -> None:
    """At ``import pxpool``: register now if joblib is loaded, else on its import."""
    if _WATCHED in sys.modules:
        _register_or_warn()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
