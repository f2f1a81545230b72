"""Using a running pool's engines: views, data movement, one-off tasks.

Kept apart from the lifecycle in ``pool.py``; every method here needs a running pool
and raises :class:`~pxpool.errors.PoolStateError` otherwise (through ``_running``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import ipyparallel as ipp

from . import data
from ._reliability import timeouts
from ._reliability.idle import keeps_awake, wake_if_released
from ._reliability.supervisor import supervisor_of
from .errors import EngineNotFoundError

if TYPE_CHECKING:
    from .pool import Pool


class EngineAccess:
    """Mixed into :class:`~pxpool.pool.Pool` (``self`` is always a Pool)."""

    def _running(self) -> tuple[ipp.Client, ipp.Cluster]:
        raise NotImplementedError

    def _pool(self) -> Pool:
        return cast("Pool", self)

    @property
    def client(self) -> ipp.Client:
        wake_if_released(self._pool())  # engines released after idle_timeout start again
        return self._running()[0]

    @property
    def ids(self) -> list[int]:
        return [] if self._pool().state == "idle" else sorted(self._running()[0].ids)

    @property
    def engines(self) -> int:
        return len(self.ids)

    @keeps_awake
    def view(self, targets: Any = None) -> ipp.DirectView:
        """A blocking DirectView on ``targets`` (default: all engines, also later ones)."""
        client = self.client
        if targets is not None:
            self._check_targets(targets)
        view = client.direct_view("all" if targets is None else targets)
        view.block = True
        return view

    @keeps_awake
    def lbview(self, targets: Any = None, timeout: float | None = None) -> ipp.LoadBalancedView:
        """A blocking LoadBalancedView, which sends each task to the next free engine.

        With ``timeout``, a blocking ``apply`` that runs longer on its engine is stopped
        and raises :class:`~pxpool.TaskTimeout` (see ``pool.apply``)."""
        view = timeouts.timed_lbview(self._pool(), targets, timeout)
        view.block = True
        return view

    def _check_targets(self, targets: Any) -> None:
        ids = self.client.ids
        wanted = [targets] if isinstance(targets, int) else targets
        if isinstance(wanted, list | tuple | range):
            for target in wanted:
                if target not in ids:
                    raise EngineNotFoundError(target, ids)

    @keeps_awake
    def push(self, namespace: dict[str, Any], targets: Any = None) -> None:
        """Set names in the engines' namespaces (all engines unless ``targets``).

        Names pushed to all engines are pushed again to engines that join later."""
        data.push(self._pool(), namespace, targets)
        if targets is None or targets == "all":
            supervisor_of(self._pool()).setup.record_push(namespace)

    @keeps_awake
    def pull(self, names: str | list[str] | tuple[str, ...], targets: Any = None) -> Any:
        """Read names back: one value per engine, or one value for a single target."""
        return data.pull(self._pool(), names, targets)

    @keeps_awake
    def scatter(self, name: str, values: Any, targets: Any = None) -> None:
        """Split ``values`` (list, numpy array, pandas object) into one part per engine."""
        data.scatter(self._pool(), name, values, targets)

    @keeps_awake
    def gather(self, name: str, targets: Any = None) -> Any:
        """Join the parts of ``name`` from the engines back into one object."""
        return data.gather(self._pool(), name, targets)

    @keeps_awake
    def map(
        self,
        f: Any,
        values: Any,
        *more: Any,
        chunksize: int | str = "auto",
        ordered: bool = True,
        progress: bool | None = None,
        timeout: float | None = None,
        retries: int = 1,
    ) -> Any:
        """Apply ``f`` to every item of ``values`` on the engines, load-balanced
        (see :func:`pxpool.data.pool_map`)."""
        return data.pool_map(
            self._pool(),
            f,
            values,
            *more,
            chunksize=chunksize,
            ordered=ordered,
            progress=progress,
            timeout=timeout,
            retries=retries,
        )

    @keeps_awake
    def apply(
        self, f: Any, *args: Any, timeout: float | None = None, retries: int = 1, **kwargs: Any
    ) -> Any:
        """Run ``f(*args, **kwargs)`` once, on the next free engine, and return its result.

        ``timeout``: seconds ``f`` may run on its engine; then the engine is interrupted
        (killed and replaced if it does not yield) and :class:`~pxpool.TaskTimeout` is
        raised. ``retries``: how often to run ``f`` again on another engine when its
        engine dies under it; then :class:`~pxpool.TaskLost` names the engine and how it
        died. (An exception raised by ``f`` itself is never retried.)"""
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
        return timeouts.apply(self._pool(), f, args, kwargs, timeout, retries)

    @keeps_awake
    def setup(self, code: str) -> None:
        """Run ``code`` on every engine now, and again on every engine that joins later
        (restarts, replacements, ``scale``): imports, loaded data, configuration."""
        self.execute(code)
        supervisor_of(self._pool()).setup.record_code(code)

    @keeps_awake
    def execute(self, code: str, targets: Any = None) -> None:
        """Run ``code`` on the engines, as a ``%%px`` cell does."""
        self.view(targets).execute(code, block=True)

    # ------------------------------------------------------------ views of the pool

    def job_script(self) -> str:
        """The exact script a batch provider would submit for one job, before submitting."""
        pool = self._pool()
        return pool.provider.job_script(pool_name=pool.name)
