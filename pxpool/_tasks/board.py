"""Where each lane task is: queued on the client, or in flight on one engine.

Pure bookkeeping, no sockets (the dispatcher, :mod:`pxpool._tasks.dispatch`, does the I/O
and holds the lane's lock around every call here). The rules:

- Work waits on the client, in one queue, and goes to the first engine with a free
  slot: the one with the fewest tasks in flight. A few tasks may be in flight per
  engine, so an engine finds its next task waiting when it finishes one: enough for
  about ``TARGET`` seconds of work by the tasks' measured durations, at least
  ``MIN_SLOTS`` and at most ``MAX_SLOTS`` (tiny tasks travel and run in batches).
  An engine is topped up once it is down to half its slots, all at once: short tasks
  then travel several to a message, each of which costs both ends more than a task.
- An engine whose current task has run longer than ``stall`` seconds takes no more,
  and the tasks waiting behind it there are taken back (the dispatcher sends a cancel;
  the engine drops a task it has not started) and queued first, when another engine
  could run them now. So a short task never waits for a long one while an engine is
  free. If the engine ran one anyway (the cancel came late), the first result wins.
  A map's chunks are cut alike, so one is taken back only for an idle engine: moved to
  an engine busy with its siblings, it would wait as long and leave its own engine idle.
- A task's timeout counts from its ``started`` notice, sent by the engine as it starts.
  A task that stops its engine at once (SIGSTOP, a hang in C) may freeze the notice
  with it: a task first in line on its engine with no notice for ``timeout`` seconds
  counts from when it came first in line (as ``pool.apply`` asks the hub instead).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from .._reliability.timeouts import DEFAULT_RETRIES
from .future import TaskFuture

MIN_SLOTS = 2
MAX_SLOTS = 32
TARGET = 0.02  # seconds of work in flight per engine
SMOOTHING = 0.1  # weight of the latest duration in the running estimate


@dataclass(eq=False, slots=True)
class Task:
    """One ``pool.submit`` call, from queue to result."""

    id: int
    label: str
    payload: list[Any]  # [function, *args frames, *kwargs frames]
    na: int  # args frames
    nk: int  # kwargs frames
    future: TaskFuture
    timeout: float | None = None
    retries: int = DEFAULT_RETRIES
    sent: int = 0  # times handed to an engine
    lost: int = 0  # times its engine died under it
    seq: int = 0  # sequence number of its latest run message
    started: float | None = None  # when its engine said it started (this attempt)
    stopping: bool = False  # its timeout is being enforced
    ended: Any = None  # threading.Event: set when its reply comes while it is stopped
    resolved: bool = False  # its future got its outcome (or was cancelled) here
    runner: str = ""  # engine-side "module:function" that runs the function (map chunks)
    placed: float = 0.0  # when it was last handed to an engine (monotonic)
    ran: float | None = None  # seconds its engine reported it ran (once its reply came)
    name: str = ""  # of its function, in errors and task streams
    later: tuple[Any, ...] | None = None  # arguments still to encode into payload as sent
    # one of a map's chunks, cut alike: behind a long task it is taken back only for an
    # idle engine (on a busy one it would wait as long for chunks like itself)
    chunk: bool = False


@dataclass(frozen=True)
class Agent:
    """An engine's lane agent as its install answered: where it listens, the engine's
    uuid (a replacement has another), and its CurveZMQ public key ("" unencrypted)."""

    address: str
    uuid: str
    curve_key: str = ""


@dataclass(eq=False)
class Link:
    """One engine as the lane knows it: its agent's address and its tasks in flight."""

    engine_id: int
    address: str
    uuid: str
    in_flight: dict[int, Task] = field(default_factory=dict)  # seq -> task, in send order
    head_since: float = 0.0  # when its current (first) task began, as far as known
    stopping: bool = False  # a timeout stop acts on it: it takes no tasks
    socket: Any = None  # the dispatcher's DEALER socket to it


class Board:
    """The queue and the engines' tasks in flight (see the module docstring)."""

    def __init__(self, stall: float) -> None:
        self.slots = MIN_SLOTS
        self.duration: float | None = None  # running estimate of a task's duration
        self.stall = stall
        self.queue: deque[Task] = deque()
        self.links: dict[int, Link] = {}
        self.recalled: dict[int, tuple[int, Task]] = {}  # seq -> (engine, task) taken back
        self.seq = 0  # of the lane's messages: each engine sees them increase

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def took(self, seconds: float) -> None:
        """A task ran ``seconds``: the estimate, and the slots per engine, follow."""
        d = self.duration
        d = seconds if d is None else (1 - SMOOTHING) * d + SMOOTHING * seconds
        self.duration = d
        self.slots = min(MAX_SLOTS, max(MIN_SLOTS, math.ceil(TARGET / max(d, 1e-6)) + 1))

    def free_link(
        self, now: float, filling: Collection[int] = (), batched: bool = True
    ) -> Link | None:
        """The engine the next task should go to, or None if none should take one.

        With ``batched``, an engine takes more tasks once it is down to half its slots,
        and is then filled up to all of them (``filling``: the engines being filled
        now), so that tasks travel several to a message when tasks are short."""
        best: Link | None = None
        low = self.slots // 2
        for link in self.links.values():
            busy = len(link.in_flight)
            if link.stopping or busy >= self.slots:
                continue
            if batched and busy > low and link.engine_id not in filling:
                continue
            if busy and now - link.head_since > self.stall:
                continue  # running something long: what it gets now waits for it
            if best is None or busy < len(best.in_flight):
                best = link
        return best

    def assign(self, now: float) -> tuple[list[tuple[Link, Task]], list[Task]]:
        """Queued tasks handed to engines (the caller sends them), and the tasks
        found cancelled on the way (they never run)."""
        sends: list[tuple[Link, Task]] = []
        cancelled: list[Task] = []
        filling: set[int] = set()
        while self.queue:
            link = self.free_link(now, filling)
            if link is None:
                break
            filling.add(link.engine_id)
            task = self.queue.popleft()
            if task.resolved:
                continue  # a late result of a taken-back copy settled it meanwhile
            if task.sent == 0 and not task.future.set_running_or_notify_cancel():
                task.resolved = True
                cancelled.append(task)
                continue
            self.place(link, task, now)
            sends.append((link, task))
        return sends, cancelled

    def place(self, link: Link, task: Task, now: float) -> None:
        if not link.in_flight:
            link.head_since = now
        task.seq = self.next_seq()
        task.sent += 1
        task.started = None
        task.placed = now
        task.future.engine_id = link.engine_id
        link.in_flight[task.seq] = task

    def finished(
        self, link: Link, seq: int, now: float, took: float | None = None
    ) -> tuple[Task | None, bool]:
        """The task whose reply came after it ran ``took`` seconds (None if unknown), and
        False if it had been taken back (it is queued or running elsewhere too)."""
        if took is not None:
            self.took(took)
        task = link.in_flight.pop(seq, None)
        if task is None:
            engine_task = self.recalled.pop(seq, None)
            task = engine_task[1] if engine_task is not None else None
            if task is not None:
                task.ran = took
            return task, False
        task.ran = took
        link.head_since = now  # the next one starts now
        return task, True

    def started(self, link: Link, seq: int, now: float) -> None:
        task = link.in_flight.get(seq)
        if task is not None:
            task.started = now
            link.head_since = now

    def recall_stalled(self, now: float) -> list[tuple[Link, Task]]:
        """Take back the tasks waiting behind a long one, when another engine could
        run them now; they go first in the queue. The caller sends the cancels."""
        stalled = [
            link
            for link in self.links.values()
            if len(link.in_flight) > 1 and now - link.head_since > self.stall
        ]
        free = self.free_link(now, batched=False) if stalled else None
        if free is None:
            return []
        taken: list[tuple[Link, Task]] = []
        for link in stalled:
            waiting = list(link.in_flight.items())[1:]
            for seq, task in waiting:
                if task.stopping or (task.chunk and free.in_flight):
                    continue
                del link.in_flight[seq]
                self.recalled[seq] = (link.engine_id, task)
                taken.append((link, task))
        self.queue.extendleft(task for _, task in reversed(taken))
        return taken

    def overdue(self, now: float) -> list[tuple[Link, Task]]:
        """Tasks running past their timeout, on engines no stop acts on yet."""
        late = []
        for link in self.links.values():
            if link.stopping or not link.in_flight:
                continue
            head = next(iter(link.in_flight.values()))
            for task in link.in_flight.values():
                if task.timeout is None or task.stopping:
                    continue
                began = task.started
                if began is None and task is head and now - link.head_since > task.timeout:
                    began = link.head_since  # no notice: it may have frozen its engine
                if began is not None and now - began > task.timeout:
                    late.append((link, task))
        return late

    def take_back_behind(self, link: Link, task: Task) -> list[Task]:
        """The tasks waiting behind ``task`` on ``link`` (its timeout is being
        enforced), taken back and queued first; the caller sends the cancels."""
        waiting = [t for t in list(link.in_flight.values()) if t is not task]
        for other in waiting:
            del link.in_flight[other.seq]
            self.recalled[other.seq] = (link.engine_id, other)
        self.requeue(waiting)
        return waiting

    def drop_link(self, engine_id: int) -> list[Task]:
        """Forget an engine that left; its tasks in flight (to retry or fail)."""
        link = self.links.pop(engine_id, None)
        for seq in [s for s, (e, _) in self.recalled.items() if e == engine_id]:
            del self.recalled[seq]
        return [] if link is None else list(link.in_flight.values())

    def requeue(self, tasks: list[Task]) -> None:
        """Tasks to run again, ahead of the queue, in their order."""
        self.queue.extendleft(reversed(tasks))
