"""Runtime timeouts that really stop a task, and retries of tasks whose engine died.

ipyparallel's ``timeout`` only bounds how long a task may wait for its dependencies;
a task that runs too long runs on. Here the clock starts when the task is seen
running on an engine; when it runs out, the engine gets SIGINT (through its nanny,
so any provider works); if the task has not ended ``INTERRUPT_GRACE`` seconds later
(a C-level loop, a stopped process), the nanny kills the engine with SIGKILL and the
pool starts a new one under the same id. The caller gets :class:`TaskTimeout`.
"""

from __future__ import annotations

import re
import signal
import time
from typing import TYPE_CHECKING, Any

import ipyparallel as ipp
from traitlets import Float

from .._fault_errors import EngineDied, TaskLost, TaskTimeout
from .supervisor import supervisor_of

if TYPE_CHECKING:
    from ..pool import Pool

INTERRUPT_GRACE = 2.0  # seconds a task gets to end after SIGINT before its engine is killed
POLL = 0.05
HUB_POLL = 0.5  # seconds between asking the controller where a silent task runs


def running_engine(ar: ipp.AsyncResult, ask_hub: bool = False) -> int | None:
    """The engine running a load-balanced task, once it has started (else ``None``).

    The client learns it from the engine's first output message; a task that stops
    its engine at once (SIGSTOP, a hang in C) sends none, so with ``ask_hub`` the
    controller's task table answers instead."""
    engine = ar.engine_id
    if isinstance(engine, int):
        return engine
    if ask_hub:
        msg_id = ar.msg_ids[0]
        try:
            status = ar._client.queue_status(verbose=True)
        except Exception:
            return None
        for key, queues in status.items():
            if isinstance(key, int) and isinstance(queues, dict):
                if msg_id in queues.get("tasks", ()) or msg_id in queues.get("queue", ()):
                    return key
    return None


def stop_task(pool: Pool, ar: ipp.AsyncResult, engine_id: int) -> str:
    """Interrupt ``engine_id``; kill and replace it if the task does not end. Returns
    ``"interrupted"`` or ``"replaced"``."""
    client = pool.client
    try:
        client.send_signal(signal.SIGINT, targets=[engine_id], block=True)
    except Exception:
        pass  # the nanny is gone too: the kill below finds out
    if ar.wait(INTERRUPT_GRACE):
        return "interrupted"
    set_id = next((s for s, ids in pool._engine_sets.items() if engine_id in ids), None)
    if set_id is not None and pool._cluster is not None:
        pool._cluster.expect_exit(set_id)  # type: ignore[attr-defined]
    try:
        client.send_signal(signal.SIGKILL, targets=[engine_id], block=True)
    except Exception:
        pass
    pool.restart_sync(engine_id)
    return "replaced"


def wait_with_timeout(pool: Pool, ar: ipp.AsyncResult, timeout: float | None, task: str) -> None:
    """Wait for ``ar``; a task running longer than ``timeout`` is stopped (TaskTimeout)."""
    started: float | None = None
    asked = submitted = time.monotonic()
    while not ar.ready():
        if timeout is None:
            ar.wait(1.0)
            pool._running()
            continue
        now = time.monotonic()
        ask = started is None and now - submitted > timeout and now - asked > HUB_POLL
        asked = now if ask else asked
        engine = running_engine(ar, ask_hub=ask)
        if engine is not None and started is None:
            started = now if not ask else submitted  # seen only by asking: it ran all along
        if started is not None and now - started > timeout and engine is not None:
            action = stop_task(pool, ar, engine)
            raise TaskTimeout(task, engine, timeout, action)
        ar.wait(POLL)


_DIED_UUID = re.compile(r"Engine b?'([^']+)' died while running task")


def lost_error(pool: Pool, ar: ipp.AsyncResult, task: str, retried: int) -> EngineDied:
    """The error for a task whose engine died (``TaskLost`` once retries were tried)."""
    supervisor = supervisor_of(pool)
    engine = running_engine(ar)
    if engine is None:  # it died before its first output: the scheduler's error names its uuid
        named = _DIED_UUID.search(str(ar.exception(timeout=0)))
        engine = supervisor.engine_of(named[1] if named else None)
    how = supervisor.how_died(engine)
    cls = TaskLost if retried else EngineDied
    return cls(task, engine, how, retried)


def engine_died(error: BaseException) -> bool:
    """True for the error ipyparallel gives a task whose engine died under it."""
    return isinstance(error, ipp.error.EngineError) or (
        isinstance(error, ipp.error.RemoteError) and error.ename == "EngineError"
    )


def apply(
    pool: Pool,
    f: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    retries: int,
) -> Any:
    """``pool.apply``: load-balanced, bounded by ``timeout``, retried if its engine dies."""
    task = f"pool.apply({getattr(f, '__name__', repr(f))})"
    view = pool.client.load_balanced_view()
    for attempt in range(retries + 1):
        ar = view.apply_async(f, *args, **kwargs)
        wait_with_timeout(pool, ar, timeout, task)
        try:
            return ar.get(0)
        except Exception as exc:
            if not engine_died(exc):
                raise
            if attempt == retries:
                raise lost_error(pool, ar, task, attempt) from exc
    raise AssertionError("unreachable")


class TimedLoadBalancedView(ipp.LoadBalancedView):
    """A LoadBalancedView whose blocking ``apply`` stops tasks running longer than
    ``runtime_timeout`` seconds (``pool.lbview(timeout=...)``)."""

    runtime_timeout = Float(None, allow_none=True)

    def _really_apply(
        self, f: Any, args: Any = None, kwargs: Any = None, block: Any = None, **options: Any
    ) -> Any:
        block = self.block if block is None else block
        if self.runtime_timeout is None or not block:
            return super()._really_apply(f, args, kwargs, block=block, **options)
        ar = super()._really_apply(f, args, kwargs, block=False, **options)
        pool = self.__dict__["pxpool_pool"]
        wait_with_timeout(pool, ar, self.runtime_timeout, f"task {getattr(f, '__name__', f)!s}")
        return ar.get(0)


def timed_lbview(pool: Pool, targets: Any, timeout: float | None) -> ipp.LoadBalancedView:
    client = pool.client
    if targets == "all":
        targets = None
    if targets is not None:
        targets = client._build_targets(targets)[1]
    view = TimedLoadBalancedView(client=client, socket=client._task_stream, targets=targets)
    view.runtime_timeout = timeout
    view.__dict__["pxpool_pool"] = pool
    return view
