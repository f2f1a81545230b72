"""The joblib backend ``"pxpool"``: joblib's ``Parallel`` (and scikit-learn's ``n_jobs``)
on a pool's engines, over the task lane.

Selected with ``joblib.parallel_config(backend="pxpool")`` (optionally ``pool=...``;
else the pool ``pool.register_joblib()`` registered, else the current pool, the one most
recently started in this process). Batches of calls travel as one task each, joblib
sizing them by measured duration as for its own process backend; functions from
``__main__`` travel by value (cloudpickle). ``n_jobs=-1`` means every engine;
``n_jobs=1`` makes joblib run the calls here, in this process, as with any backend.

This module imports joblib; :mod:`pxpool._tasks.joblib_hook` registers the backend
without importing it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

from joblib.parallel import AutoBatchingMixin, ParallelBackendBase

from ..errors import PoolStateError
from .future import TaskFuture


class Pool(Protocol):
    """What the backend uses of a :class:`pxpool.Pool`."""

    @property
    def ids(self) -> list[int]: ...

    def submit(self, f: Any, *args: Any, **kwargs: Any) -> TaskFuture: ...


class PxpoolBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]  # untyped joblib
    """joblib's view of a pxpool pool (see the module docstring)."""

    supports_retrieve_callback = True  # per call: see configure
    supports_timeout = True  # both ways: retrieve_result, or joblib's own check
    supports_return_generator = True  # both ways (joblib asks before configure)
    supports_inner_max_num_threads = False
    default_n_jobs = -1

    def __init__(
        self,
        pool: Pool | None = None,
        find_pool: Callable[[], Pool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._pool = pool
        self._find_pool = find_pool  # pxpool.current, once pxpool.pool is imported
        self._futures: set[TaskFuture] = set()

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            if self._find_pool is None:  # no pool was started in this process
                raise PoolStateError(
                    "No running pool in this process for joblib's backend='pxpool'; start "
                    "one with `pxpool.Pool.from_profile('local').start_sync()`."
                )
            self._pool = self._find_pool()
        return self._pool

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        engines = max(len(self.pool.ids), 1)
        if n_jobs is None:
            return engines
        if n_jobs < 0:
            return max(engines + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, **kwargs: Any) -> int:
        self.parallel = parallel
        # Results in order (return_as "list" or "generator"): joblib's main thread waits
        # on the next batch's future (retrieve_result) and takes it as soon as it is
        # done. With the retrieval callback it would poll every 10 ms instead, so a short
        # call ended on a 10 ms step. Results in completion order ("generator_unordered")
        # need the callback: joblib queues batches for retrieval from it.
        self.supports_retrieve_callback = not getattr(parallel, "return_ordered", True)
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Callable[[], Any], callback: Any = None) -> TaskFuture:
        future = self.pool.submit(func)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: TaskFuture) -> Any:
        return out.result()

    def retrieve_result(self, out: TaskFuture, timeout: float | None = None) -> Any:
        """Results in order: the next batch's, waited for here (``Parallel(timeout=)``:
        at most that long, then the ``multiprocessing.TimeoutError`` joblib raises)."""
        try:
            return out.result(timeout)
        except FutureTimeout as exc:
            raise multiprocessing.TimeoutError(
                f"a batch of joblib calls took longer than timeout={timeout} s"
            ) from exc

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: the batches still queued never run."""
        for future in list(self._futures):
            future.cancel()
        self.reset_batch_stats()
