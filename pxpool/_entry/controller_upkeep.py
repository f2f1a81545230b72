"""Keep a long-running controller's memory flat, and report it.

ipyparallel's hub and task scheduler remember the id of every task they ever saw: the
hub in ``completed[engine]`` and ``all_completed``, the scheduler in ``all_ids``,
``all_done``, ``all_completed``/``all_failed``, per-engine sets and ``destinations``.
That is a few hundred bytes per task, without end: ~0.5 GB over a million tasks in a
notebook that runs all day. The upkeep drops the ids of all but the most recent
``KEEP_DONE`` finished tasks, on each structure's own event loop so it never races the
code that owns it. The hub keeps counting every finished task per engine, so
``queue_status`` (and with it ``tasks_done`` in ``pool.health()``) stays exact.

What it costs a user: a task can depend (``after=``/``follow=`` on a load-balanced view)
only on one of the last ``KEEP_DONE`` finished tasks; an older id is unknown to the
scheduler, which fails the task with ipyparallel's ``InvalidDependency``. Results the hub
stores are culled already by its own database limits.

It also writes the controller's memory (RSS and PSS from ``/proc``) every
``REPORT_SECONDS`` to ``pxpool-controller-memory.json`` in its security directory, where
``pool.memory()`` reads it when the controller runs elsewhere (a batch job).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

# finished task ids the hub and scheduler remember, and how often they forget older ones
# (the environment can lower both, as the tests do, to see the trim within seconds)
KEEP_DONE = int(os.environ.get("PXPOOL_CONTROLLER_KEEP_DONE", "20000"))
TRIM_SECONDS = float(os.environ.get("PXPOOL_CONTROLLER_TRIM_SECONDS", "30"))
REPORT_SECONDS = 5.0
MEMORY_FILE = "pxpool-controller-memory.json"

log = logging.getLogger("pxpool.controller")


class CountingTail(list):  # type: ignore[type-arg]  # holds ipyparallel's msg id strings
    """The hub's list of one engine's finished task ids: only the most recent are kept,
    and ``len`` still counts every one (the hub answers ``queue_status`` with it)."""

    dropped = 0

    def __len__(self) -> int:
        return self.dropped + super().__len__()

    def trim(self, keep: int) -> list[Any]:
        """Forget all but the last ``keep`` ids; return the ids forgotten."""
        excess = super().__len__() - keep
        if excess <= 0:
            return []
        old = self[:excess]
        del self[:excess]
        self.dropped += excess
        return old


def trim_hub(hub: Any, keep: int | None = None) -> int:
    """Drop all but ``keep`` finished task ids per engine from the hub; how many."""
    keep = KEEP_DONE if keep is None else keep
    dropped = 0
    for engine_id, ids in list(hub.completed.items()):
        if not isinstance(ids, CountingTail):
            ids = hub.completed[engine_id] = CountingTail(ids)
        old = ids.trim(keep)
        hub.all_completed.difference_update(old)
        dropped += len(old)
    culled = getattr(hub.db, "_culled_ids", None)
    if isinstance(culled, set) and len(culled) > keep:
        culled.clear()  # ids the hub's own database dropped: only an error message uses them
    return dropped


def trim_scheduler(scheduler: Any, keep: int | None = None) -> int:
    """Drop the scheduler's memory of all but its ``keep`` most recent finished tasks.

    ``destinations`` (task id -> engine) is filled as tasks finish, in order, so its
    first keys are the oldest finished tasks."""
    destinations: dict[Any, Any] = scheduler.destinations
    excess = len(destinations) - (KEEP_DONE if keep is None else keep)
    if excess <= 0:
        return 0
    old = [msg_id for msg_id, _ in zip(destinations, range(excess), strict=False)]
    for msg_id in old:
        del destinations[msg_id]
    for ids in _scheduler_sets(scheduler):
        ids.difference_update(old)
    return len(old)


def _scheduler_sets(scheduler: Any) -> Iterable[set[Any]]:
    yield scheduler.all_ids
    yield scheduler.all_done
    yield scheduler.all_completed
    yield scheduler.all_failed
    for per_engine in (scheduler.completed, scheduler.failed):
        yield from per_engine.values()


def memory_report() -> dict[str, Any]:
    """This process's pid, host, RSS and PSS (bytes; None where /proc has no answer)."""
    fields = {"VmRSS:": "rss_bytes"}
    report: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    report.update(rss_bytes=None, pss_bytes=None)
    for path, wanted in (
        ("/proc/self/status", fields),
        ("/proc/self/smaps_rollup", {"Pss:": "pss_bytes"}),
    ):
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                for line in handle:
                    parts = line.split()  # "VmRSS:   123456 kB"
                    if parts and parts[0] in wanted:
                        report[wanted[parts[0]]] = int(parts[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return report


def write_memory_report(security_dir: str) -> None:
    """The report, replaced atomically (a reader never sees half a file)."""
    path = os.path.join(security_dir, MEMORY_FILE)
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(memory_report(), handle)
    os.replace(partial, path)


class Upkeep:
    """A daemon thread that asks each loop to trim its own structures, and reports."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stopping = threading.Event()
        self.schedulers: list[Any] = []

    def start(self) -> None:
        threading.Thread(target=self._run, name="pxpool-upkeep", daemon=True).start()

    def _run(self) -> None:
        next_trim = time.monotonic() + TRIM_SECONDS
        while not self.stopping.wait(min(REPORT_SECONDS, TRIM_SECONDS)):
            try:
                write_memory_report(self.app.profile_dir.security_dir)
            except OSError as exc:
                log.debug("pxpool: cannot write the controller's memory report: %r", exc)
            if time.monotonic() >= next_trim:
                next_trim = time.monotonic() + TRIM_SECONDS
                self.app.loop.add_callback(_logged, trim_hub, self.app.hub)
                self.schedulers = self.schedulers or _thread_schedulers()
                for scheduler in self.schedulers:
                    scheduler.loop.add_callback(_logged, trim_scheduler, scheduler)


def _thread_schedulers() -> list[Any]:
    """The task schedulers running as threads of this process (``use_threads``, pxpool's
    default): ipyparallel keeps no reference to them outside their threads."""
    from ipyparallel.controller.task_scheduler import TaskScheduler

    return [obj for obj in gc.get_objects() if isinstance(obj, TaskScheduler)]


def _logged(trim: Any, owner: Any) -> None:
    dropped = trim(owner)
    if dropped:
        log.debug("pxpool: %s forgot %d finished task ids", type(owner).__name__, dropped)
