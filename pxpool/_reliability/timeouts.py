"""Runtime timeouts that really stop a task, and retries of tasks whose engine died.

ipyparallel's ``timeout`` only bounds how long a task may wait for its dependencies;
a task that runs too long runs on. Here the clock starts when the task is seen
running on an engine; when it runs out, the engine gets SIGINT (through its nanny,
so any provider works); if the task has not ended ``INTERRUPT_GRACE`` seconds later
(a C-level loop, a stopped process), the nanny kills the engine with SIGKILL and the
pool starts a new one under the same id. The caller gets :class:`TaskTimeout`.

A ``pool.map`` chunk (or a task of the lane, :mod:`pxpool._tasks.dispatch`) whose
engine died under it runs again on another engine, up to ``retries`` times
(:data:`DEFAULT_RETRIES`, as Ray retries a task and Dask allows a task's failures), then
:class:`TaskLost` names the engine and how it died. A task sent again may have run partly or wholly before its engine died, so each
task runs at least once and at most ``1 + retries`` times; an exception that the task
itself raised is never retried.
"""

from __future__ import annotations

import re
import signal
import time
from typing import TYPE_CHECKING, Any

import ipyparallel as ipp
from traitlets import Float

from .._core.names import function_name, task_named
from .._core.waiting import EngineWait
from ..errors import EngineDied, TaskLost, TaskTimeout

if TYPE_CHECKING:
    from .._core.client import PxClient
    from .._core.core import PoolCore
    from .supervisor import Supervisor

DEFAULT_RETRIES = 3  # runs again elsewhere of a task or map chunk whose engine died
INTERRUPT_GRACE = 2.0  # seconds a task gets to end after SIGINT before its engine is killed
POLL = 0.05
HUB_POLL = 0.5  # seconds between asking the controller where a silent task runs


def running_engine(
    ar: ipp.AsyncResult, ask_hub: bool = False, client: PxClient | None = None
) -> int | None:
    """The engine running a load-balanced task, once it has started (else ``None``).

    The client learns it from the engine's first output message; a task that stops
    its engine at once (SIGSTOP, a hang in C) sends none, so with ``ask_hub`` the
    controller's task table answers instead, asked through ``client`` (the pool's
    client, which sent ``ar``)."""
    engine = ar.engine_id
    if isinstance(engine, int):
        return engine
    if ask_hub:
        if client is None:
            return None  # no client to ask (the pool stopped meanwhile)
        msg_id = ar.msg_ids[0]
        try:
            status = client.queue_status(verbose=True)
        except Exception:
            return None
        for key, queues in status.items():
            if isinstance(key, int) and isinstance(queues, dict):
                if msg_id in queues.get("tasks", ()) or msg_id in queues.get("queue", ()):
                    return key
    return None


class TaskGuard:
    """Timeouts and retries for one pool's tasks (``pool.apply``, ``pool.map``'s
    chunks, ``pool.lbview(timeout=...)``); the supervisor says how engines died."""

    def __init__(self, core: PoolCore, supervisor: Supervisor) -> None:
        self.core = core
        self.supervisor = supervisor

    def stop_task(self, ar: ipp.AsyncResult, engine_id: int) -> str:
        """Interrupt ``engine_id``; kill and replace it if the task does not end.
        Returns ``"interrupted"`` or ``"replaced"``."""
        core = self.core
        client = core.live_client()
        try:
            client.send_signal(signal.SIGINT, targets=[engine_id], block=True)
        except Exception:
            pass  # the nanny is gone too: the kill below finds out
        if ar.wait(INTERRUPT_GRACE):
            return "interrupted"
        set_id = next((s for s, ids in core.engine_sets.items() if engine_id in ids), None)
        if set_id is not None and core.cluster is not None:
            core.cluster.expect_exit(set_id)
        try:
            client.send_signal(signal.SIGKILL, targets=[engine_id], block=True)
        except Exception:
            pass
        core.loop.submit(core.restart_engine(engine_id)).result()
        return "replaced"

    def wait_with_timeout(self, ar: ipp.AsyncResult, timeout: float | None, task: str) -> None:
        """Wait for ``ar``; a task running longer than ``timeout`` is stopped (TaskTimeout)."""
        started: float | None = None
        asked = submitted = time.monotonic()
        engine_wait = EngineWait(self.core, task)
        while not ar.ready():
            if timeout is None:
                ar.wait(1.0)
                self.core.running()
                engine_wait.check()
                continue
            engine_wait.check()
            now = time.monotonic()
            ask = started is None and now - submitted > timeout and now - asked > HUB_POLL
            asked = now if ask else asked
            engine = running_engine(ar, ask_hub=ask, client=self.core.client)
            if engine is not None and started is None:
                started = now if not ask else submitted  # seen only by asking: it ran all along
            if started is not None and now - started > timeout and engine is not None:
                action = self.stop_task(ar, engine)
                raise TaskTimeout(task, engine, timeout, action)
            ar.wait(POLL)

    def lost_error(self, ar: ipp.AsyncResult, task: str, retried: int) -> EngineDied:
        """The error for a task whose engine died (``TaskLost`` once retries were tried)."""
        engine = running_engine(ar)
        if engine is None:  # it died before its first output: the scheduler's error names its uuid
            named = _DIED_UUID.search(str(ar.exception(timeout=0)))
            engine = self.supervisor.engine_of(named[1] if named else None)
        if engine is None:
            how = self.supervisor.how_died(engine)
        else:  # its exit report can come a moment after the hub's word
            how = self.supervisor.wait_for_death(engine, time.time())
        cls = TaskLost if retried else EngineDied
        return cls(task, engine, how, retried)

    def timed_lbview(self, targets: Any, timeout: float | None) -> ipp.LoadBalancedView:
        """A LoadBalancedView whose blocking apply is bounded by ``timeout``."""
        client = self.core.live_client()
        socket, ids = client.balanced_view_parts(targets)
        view = TimedLoadBalancedView(client=client, socket=socket, targets=ids)
        view.runtime_timeout = timeout
        view.__dict__["pxpool_guard"] = self
        return view


_DIED_UUID = re.compile(r"Engine b?'([^']+)' died while running task")


def engine_died(error: BaseException) -> bool:
    """True for the error ipyparallel gives a task whose engine died under it."""
    return isinstance(error, ipp.error.EngineError) or (
        isinstance(error, ipp.error.RemoteError) and error.ename == "EngineError"
    )


class TimedLoadBalancedView(ipp.LoadBalancedView):  # type: ignore[misc]  # ipyparallel ships no type information
    """A LoadBalancedView whose blocking ``apply`` stops tasks running longer than
    ``runtime_timeout`` seconds (``pool.lbview(timeout=...)``)."""

    runtime_timeout = Float(None, allow_none=True)

    def _really_apply(
        self, f: Any, args: Any = None, kwargs: Any = None, block: Any = None, **options: Any
    ) -> Any:
        block = self.block if block is None else block
        if not block:
            return super()._really_apply(f, args, kwargs, block=block, **options)
        ar = super()._really_apply(f, args, kwargs, block=False, **options)
        guard: TaskGuard = self.__dict__["pxpool_guard"]
        task = f"pool.lbview().apply({getattr(f, '__name__', f)!s})"
        guard.wait_with_timeout(ar, self.runtime_timeout, task)  # also: no engine left
        return ar.get(0)

    def map(self, f: Any, *sequences: Any, **kwargs: Any) -> Any:
        """ipyparallel's map; its chunks are named after ``f`` in task streams (it sends
        them pickled ahead, without a name)."""
        with task_named(function_name(f)):
            return super().map(f, *sequences, **kwargs)
