"""The task lane as a pool uses it: ``pool.submit``, ``pool.apply`` and the engine hook.

``pool.lbview()`` takes ipyparallel's route: client, scheduler process, engine, scheduler,
client, with the hub recording every message (milliseconds of CPU per task across four
processes). The lane goes straight from the client to an agent on each engine
(:mod:`pxpool._tasks.agent`) and back, signed with the pool's key. Same semantics as the
rest of the pool: the engine's main thread and namespace, timeouts, retries, pxpool's
errors. Remote engines are reached as health and debugging reach them
(:func:`pxpool.engines.reach_url`, through SSH forwards when engines are tunnelled).

**Results exactly once, execution at least once.** A task whose engine dies runs again
on another engine (up to ``retries`` times), so it may have run partly or wholly
before; a task taken back from an engine busy with a long one may, rarely, run there
too. Its future still gets exactly one outcome: the first. Give side effects that must
not repeat an idempotent form (write to a file named after the task, say).
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any

from .._core.names import function_name
from .._reliability.timeouts import DEFAULT_RETRIES
from ..engines import reach_url
from ..errors import PoolStateError
from . import agent as _lane_agent
from .board import Agent, Task
from .dispatch import Dispatcher
from .executor import PoolExecutor
from .future import TaskFuture
from .joblib_hook import register, use_current
from .payload import encode, encode_function
from .support import Activity, LaneLoad

if TYPE_CHECKING:
    from .._core.core import PoolCore
    from .._reliability.timeouts import TaskGuard

__all__ = ["Lane", "PoolExecutor", "TaskFuture", "check_options", "encode", "use_current"]

log = logging.getLogger("pxpool.tasks")
INSTALL_TIMEOUT = 30.0  # seconds for an engine to start its lane agent
ADD_BATCH = 256  # calls of an executor map queued at a time
# seconds the first batch may wait for the lane's thread to send it (it takes ~1 ms; the
# bound is for a thread held up, e.g. by a slow done-callback of another future)
HAND_OVER = 0.5


def check_options(timeout: float | None, retries: int) -> None:
    """Bad ``timeout``/``retries`` fail where they were given, not on an engine."""
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds or None; got {timeout!r}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0; got {retries!r}")


class Lane:
    """One pool's lane: agents' addresses from the engine hook, a dispatcher on first use."""

    def __init__(self, core: PoolCore, guard: TaskGuard, activity: Activity) -> None:
        self.core = core
        self.guard = guard
        self.activity = activity
        self.lock = threading.Lock()
        self.addresses: dict[int, Agent] = {}  # engine id -> its agent
        self._dispatcher: Dispatcher | None = None
        self._ids = itertools.count(1)

    def submit(
        self,
        f: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
        retries: int = DEFAULT_RETRIES,
        caller: str = "pool.submit",
        runner: str = "",
        label: str = "",
        chunk: bool = False,
    ) -> TaskFuture:
        """Queue ``f(*args, **kwargs)`` (with ``runner``: ``runner(f, *args, **kwargs)``
        on the engine); its future (see :class:`TaskFuture`), named ``label`` in errors.
        ``chunk``: one of a map's chunks, cut alike (see :attr:`Task.chunk`); it is handed
        to the lane's thread before this returns, since the map goes on to encode the next
        chunk holding the GIL (measured: an engine's first chunk of text left 11 ms late)."""
        self._admit(f, timeout, retries, caller)
        payload, na, nk = encode(f, args, kwargs, caller)
        task_id = next(self._ids)
        label = label or f"{caller}({function_name(f)}) #{task_id}"
        task = Task(task_id, label, payload, na, nk, TaskFuture(label), timeout, retries)
        task.runner, task.chunk = runner, chunk
        task.name = function_name(f)
        self.dispatcher().add(task, hand_over=HAND_OVER if chunk else 0.0)
        return task.future

    def submit_many(
        self,
        f: Any,
        calls: list[tuple[Any, ...]],
        timeout: float | None = None,
        retries: int = DEFAULT_RETRIES,
        caller: str = "pool.executor().map",
    ) -> list[TaskFuture]:
        """``f(*args)`` for each ``args`` of ``calls``, queued at once; their futures.
        ``f`` is pickled now, each call's arguments as it is sent (:mod:`.payload`)."""
        self._admit(f, timeout, retries, caller)
        head = [encode_function(f, caller)]  # each task's payload until its arguments join
        name = function_name(f)
        futures: list[TaskFuture] = []
        for start in range(0, len(calls), ADD_BATCH):  # engines start on the first batch
            tasks = []
            for args in calls[start : start + ADD_BATCH]:
                task_id = next(self._ids)
                label = f"{caller}({name}) #{task_id}"
                task = Task(task_id, label, head, 0, 0, TaskFuture(label), timeout, retries)
                task.name, task.later = name, args
                tasks.append(task)
            self.dispatcher().add(*tasks, hand_over=0.0 if futures else HAND_OVER)
            futures += [task.future for task in tasks]
        return futures

    def _admit(self, f: Any, timeout: float | None, retries: int, caller: str) -> None:
        """Bad options fail where they were given; a pool whose engines were released
        after ``idle_timeout`` starts them again; a stopped pool refuses the work."""
        check_options(timeout, retries)
        if not callable(f):
            raise TypeError(f"{caller} needs a function (a callable); got {f!r}")
        self.activity.wake_if_released()
        self.core.running()

    def apply(
        self,
        f: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        retries: int,
    ) -> Any:
        """``pool.apply``: one task on the lane, waited for. The wait needs no timeout of
        its own: the lane settles every task (its ``timeout``, its engine's death after
        ``retries``, no engine left, the pool stopping)."""
        return self.submit(f, args, kwargs, timeout, retries, caller="pool.apply").result()

    def executor(self, timeout: float | None, retries: int) -> PoolExecutor:
        """``pool.executor()``: its tasks go through :meth:`submit`."""
        check_options(timeout, retries)
        return PoolExecutor(self.submit, self.submit_many, timeout, retries)

    def register_joblib(self, pool: Any) -> None:
        """``pool.register_joblib()``: joblib's ``backend="pxpool"`` runs on ``pool``."""
        try:
            register(pool)
        except ImportError as exc:
            raise ImportError(
                f"pool.register_joblib() needs joblib, which is not importable here ({exc}); "
                "install it with `pip install joblib`."
            ) from exc

    def load(self) -> LaneLoad:
        """Tasks waiting on the client and in flight per engine, and the seconds a task
        takes: what an adaptive pool sizes itself by (:mod:`pxpool._adapt`)."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return LaneLoad()
        with dispatcher.lock:
            board = dispatcher.board
            flight = {i: len(link.in_flight) for i, link in board.links.items()}
            return LaneLoad(len(board.queue), flight, board.duration)

    def retire(self, engine_ids: list[int], retired: bool = True) -> bool:
        """Send ``engine_ids`` no more tasks, as they are about to stop; False, with
        nothing changed, while one of them has a task. ``retired=False`` undoes it."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return True
        with dispatcher.lock:
            links = [link for i, link in dispatcher.board.links.items() if i in engine_ids]
            if retired and any(link.in_flight for link in links):
                return False
            for link in links:
                link.stopping = retired  # as under a timeout's stop: it takes no tasks
        return True

    def dispatcher(self) -> Dispatcher:
        """The running dispatcher (made on first use, with every agent known so far; a
        pool attached from another process installs the agents now)."""
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher.thread.is_alive() and not dispatcher.closing:
            return dispatcher
        if not self.addresses:  # attached from another process: the hook never ran here
            self.engines_joined(self.core, self.core.registered_ids())
        with self.lock:
            dispatcher = self._dispatcher
            if dispatcher is not None and dispatcher.thread.is_alive() and not dispatcher.closing:
                return dispatcher
            key = self.core.live_client().session.key
            dispatcher = self._dispatcher = Dispatcher(self.core, self.guard, self.activity, key)
            known = dict(self.addresses)
        for engine_id, agent in known.items():
            self._post_link(dispatcher, engine_id, agent)
        return dispatcher

    def engines_joined(self, core: PoolCore, engine_ids: list[int]) -> None:
        """Engine hook: start the lane agent on ``engine_ids``; the lane sends them tasks
        from now on (held engines run them after their release)."""
        if not engine_ids:
            return
        client = core.live_client()
        controller_ip = core.controller_ip()
        encrypt = core.profile.controller.encrypt
        pending = {
            i: client[i].apply_async(_lane_agent.install, controller_ip, encrypt)
            for i in engine_ids
        }
        for engine_id, result in pending.items():
            try:
                answer = result.get(timeout=INSTALL_TIMEOUT)
                address = reach_url(core, engine_id, str(answer["address"]))
            except Exception as exc:
                log.warning("pxpool: the task lane did not start on engine %s: %r", engine_id, exc)
                continue
            agent = Agent(address, str(answer["uuid"]), str(answer.get("curve_key") or ""))
            with self.lock:
                self.addresses[engine_id] = agent
                dispatcher = self._dispatcher
            if dispatcher is not None:
                self._post_link(dispatcher, engine_id, agent)

    @staticmethod
    def _post_link(dispatcher: Dispatcher, engine_id: int, agent: Agent) -> None:
        dispatcher.post(lambda: dispatcher.add_link(engine_id, agent))

    def teardown(self, name: str) -> None:
        """Teardown hook of the pool: tasks not finished fail with PoolStateError."""
        with self.lock:
            dispatcher, self._dispatcher = self._dispatcher, None
            self.addresses.clear()
        if dispatcher is not None:
            dispatcher.close(
                PoolStateError(
                    f"pool {name!r} stopped before the task finished; start it again "
                    "and submit the task anew"
                )
            )
