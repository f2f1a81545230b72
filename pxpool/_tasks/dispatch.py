"""The lane's dispatcher: one thread per pool, a zmq poller, a DEALER socket per engine.

Other threads only queue work (:meth:`Dispatcher.add`) or post actions to run on the
thread (:meth:`Dispatcher.post`), and wake it through a socket pair when it sleeps in
its poll. The thread alone touches the zmq sockets and settles futures, so a result is
set once: a reply for a task already settled (a copy taken back from a stalled engine
that ran anyway, a task whose timeout was enforced) is dropped. Placement rules are in
:mod:`pxpool._tasks.board`.

Engines that leave are noticed from :class:`PoolCore` (registered ids and their uuids,
checked every ``TICK``): tasks in flight there run again elsewhere, up to their
``retries``, then fail with :class:`~pxpool.TaskLost`. A timeout is enforced as
``pool.apply`` enforces it (:meth:`pxpool._reliability.timeouts.TaskGuard.stop_task`,
on a thread of its own: interrupt, then kill and replace the engine).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from .._core.state import PoolState
from .._core.waiting import EngineWait
from ..errors import NoEnginesError, PoolStateError
from . import wire
from .board import Agent, Board, Link, Task
from .death_reports import DeathReports
from .payload import complete, decode_result
from .support import Activity, Ended, record_settled, stopped_error, task_error

if TYPE_CHECKING:
    from .._core.core import PoolCore
    from .._reliability.timeouts import TaskGuard

log = logging.getLogger("pxpool.tasks")
STALL = 0.05  # seconds a task runs before the tasks queued behind it are taken back
TICK = 0.02  # seconds between checks of engines, stalls and timeouts while work is out
IDLE_TICK = 0.5
JOIN_TIMEOUT = 5.0


class Dispatcher:
    """The thread and its state (see the module docstring)."""

    def __init__(self, core: PoolCore, guard: TaskGuard, activity: Activity, key: bytes) -> None:
        self.core = core
        self.guard = guard
        self.activity = activity
        self.signer = wire.FrameSigner(key)
        self.token = secrets.token_hex(8)
        self.lock = threading.Lock()
        self.board = Board(STALL)
        self.outstanding = 0  # tasks added and not settled
        self.closing: Exception | None = None
        self._inbox: list[Callable[[], None]] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sleeping = False
        self._woken = False
        self._sent = threading.Event()  # set as the thread sends tasks
        self._counted: bool | None = None  # activity entered (its answer) while busy
        self._sockets: dict[Any, Link] = {}
        self._poller = zmq.Poller()
        self._wake_fd = self._wake_r.fileno()  # zmq's poller reports plain sockets by number
        self._poller.register(self._wake_fd, zmq.POLLIN)
        self._next_check = 0.0
        self._curve: tuple[bytes, bytes] | None = None
        self._engine_wait = EngineWait(core, "the task lane")
        self.deaths = DeathReports(guard.supervisor)  # tasks lost with their engine
        self.thread = threading.Thread(target=self._run, name=f"pxpool-lane-{core.name}")
        self.thread.daemon = True
        self.thread.start()

    # ------------------------------------------------------------ any thread

    def add(self, *tasks: Task, hand_over: float = 0.0) -> None:
        """Queue ``tasks``. With ``hand_over``, wait up to that many seconds for the thread
        to send them if it can (an engine has room, or is being linked): a caller queueing
        thousands more holds the GIL, which the thread gets only every switch interval."""
        with self.lock:
            if self.closing is not None:
                raise PoolStateError(f"{tasks[0].label} cannot be queued: {self.closing}")
            self.outstanding += len(tasks)
            self.board.queue.extend(tasks)
            wake = self._wake_needed()
            room = hand_over and (bool(self._inbox) or self.board.free_link(time.monotonic()))
            self._sent.clear()
        if wake:
            self._wake_w.send(b"!")
        if room:
            self._sent.wait(hand_over)

    def post(self, action: Callable[[], None]) -> None:
        """Run ``action()`` on the dispatcher's thread."""
        with self.lock:
            self._inbox.append(action)
            wake = self._wake_needed()
        if wake:
            self._wake_w.send(b"!")

    def close(self, error: Exception, wait: bool = True) -> None:
        """Fail every task not settled with ``error`` and end the thread."""

        def closing() -> None:
            self.closing = error

        self.post(closing)
        if wait and threading.current_thread() is not self.thread:
            self.thread.join(JOIN_TIMEOUT)

    def _wake_needed(self) -> bool:  # under self.lock
        if self._sleeping and not self._woken:
            self._woken = True
            return True
        return False

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            while self._iterate():
                pass
        except Exception as exc:
            log.exception("pxpool: the task lane of pool %r failed", self.core.name)
            self.closing = PoolStateError(
                f"the task lane of pool {self.core.name!r} failed: {exc!r}"
            )
        finally:
            self._fail_all(self.closing or PoolStateError("the task lane stopped"))
            for sock in list(self._sockets):
                sock.close(linger=0)
            self._wake_r.close()
            self._wake_w.close()
            self._track_activity(force_idle=True)

    def _iterate(self) -> bool:
        with self.lock:
            ready = bool(self._inbox) or bool(
                self.board.queue and self.board.free_link(time.monotonic())
            )
            busy = self.outstanding > 0
            self._sleeping, self._woken = not ready, False
        timeout = 0 if ready else (TICK if busy else IDLE_TICK)
        events = dict(self._poller.poll(int(timeout * 1000)))
        with self.lock:
            self._sleeping = False
            inbox, self._inbox = self._inbox, []
        if self._wake_fd in events:
            self._drain_wake()
        for action in inbox:
            action()
        if self.closing is not None:
            return False
        now = time.monotonic()
        for sock in events:
            link = self._sockets.get(sock)
            if link is not None:
                self._receive(link, now)
        if now >= self._next_check:
            self._next_check = now + TICK
            self._check(now)
        self._dispatch(now)
        self._track_activity()
        return True

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _track_activity(self, force_idle: bool = False) -> None:
        busy = self.outstanding > 0 and not force_idle
        if busy and self._counted is None:
            self._counted = self.activity.enter()
        elif not busy and self._counted is not None:
            self.activity.leave(self._counted)
            self._counted = None

    # ------------------------------------------------------------ engines

    def add_link(self, engine_id: int, agent: Agent) -> None:
        """On the thread: a (new) agent on ``engine_id`` listens at ``agent.address``
        (encrypted with CurveZMQ when it gave a key)."""
        old = self.board.links.get(engine_id)
        if old is not None:
            if (old.address, old.uuid) == (agent.address, agent.uuid):
                return
            self._engine_left(old)
        if agent.curve_key:
            self._curve = self._curve or zmq.curve_keypair()  # one per dispatcher
        sock = wire.dealer(agent.address, agent.curve_key, self._curve)
        link = Link(engine_id, agent.address, agent.uuid, socket=sock)
        self._sockets[sock] = link
        self._poller.register(sock, zmq.POLLIN)
        with self.lock:
            self.board.links[engine_id] = link

    def _check(self, now: float) -> None:
        state = self.core.state
        if state in (PoolState.STOPPED, PoolState.NEW, PoolState.FAILED):
            self.closing = PoolStateError(f"pool {self.core.name!r} is {state}")
            return
        if state is PoolState.RUNNING:
            registered = set(self.core.registered_ids())
            try:
                uuids = {i: str(u) for i, u in self.core.engine_uuids().items()}
            except Exception:  # the table changed while copied, or the pool stopped: later
                uuids = {}
            for engine_id, link in list(self.board.links.items()):
                if engine_id not in registered or uuids.get(engine_id, link.uuid) != link.uuid:
                    self._engine_left(link)
            if self.board.queue and self._engine_wait.starved(now):
                self._fail_queued()
        self.deaths.fail_ready(self._settle)
        with self.lock:
            taken = self.board.recall_stalled(now)
            late = self.board.overdue(now)
        self._cancel(taken)
        for link, task in late:
            self._start_stop(link, task, now)

    def _fail_queued(self) -> None:
        """No engine, and none on its way: the queued tasks fail (NoEnginesError)."""
        with self.lock:
            tasks = list(self.board.queue)
            self.board.queue.clear()
        grace = self._engine_wait.grace
        self._fail(tasks, lambda task: NoEnginesError(self.core.name, grace, task.label))

    def _engine_left(self, link: Link) -> None:
        """``link``'s engine left (died, removed, replaced): retry or fail its tasks."""
        with self.lock:
            tasks = self.board.drop_link(link.engine_id)
        self._sockets.pop(link.socket, None)
        self._poller.unregister(link.socket)
        link.socket.close(linger=0)
        again: list[Task] = []
        lost: list[Task] = []
        for task in tasks:
            if task.stopping:
                continue  # its stop settles it
            task.lost += 1
            (again if task.lost <= task.retries else lost).append(task)
        self.deaths.hold(link.engine_id, lost)  # failed once the supervisor says how
        with self.lock:
            self.board.requeue(again)

    # ------------------------------------------------------------ messages

    def _send(self, link: Link, header: dict[str, Any], parts: list[Any] | None = None) -> None:
        with self.lock:
            header["q"] = self.board.next_seq()  # each message's number is new
        frames = wire.pack(self.signer, header, parts or [])
        link.socket.send_multipart(frames, copy=len(frames) == 1)  # large parts: not copied

    def _cancel(self, taken: list[tuple[Link, Task]]) -> None:
        """Ask engines to drop tasks taken back (they answer for those not started)."""
        runs: dict[Link, list[int]] = {}
        for link, task in taken:
            runs.setdefault(link, []).append(task.seq)
        for link, seqs in runs.items():
            self._send(link, {"op": wire.CANCEL, "c": self.token, "x": seqs})

    def _dispatch(self, now: float) -> None:
        with self.lock:
            sends, cancelled = self.board.assign(now)
            self.outstanding -= len(cancelled)
        batches: dict[Link, list[Task]] = {}
        for link, task in sends:
            if (error := complete(task)) is not None:  # its arguments cannot be sent
                with self.lock:
                    link.in_flight.pop(task.seq, None)
                task.future.engine_id = None  # it never reached one
                self._settle(task, error=error)
                continue
            batches.setdefault(link, []).append(task)
        for link, tasks in batches.items():  # one message per engine
            runs = [[t.seq, t.id, t.na, t.nk, int(t.timeout is not None), t.runner] for t in tasks]
            parts = [part for t in tasks for part in t.payload]
            self._send(link, {"op": wire.RUN, "c": self.token, "tasks": runs}, parts)
        if batches:
            self._sent.set()

    def _receive(self, link: Link, now: float) -> None:
        while True:
            try:
                frames = link.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            unpacked = wire.unpack(self.signer, frames)
            if isinstance(unpacked, str):
                log.warning("pxpool: refused a reply from engine %s: %s", link.engine_id, unpacked)
                continue
            header, parts = unpacked
            printed, used = header.get("p", {}), 0  # an engine may reply for several tasks
            for seq, status, count, took in header.get("r", ()):
                if (said := printed.get(str(seq))) and seq in link.in_flight:
                    link.in_flight[seq].future.set_printed(link.engine_id, said)  # its prints
                self._reply(link, seq, status, parts[used : used + count], float(took), now)
                used += count

    def _reply(
        self, link: Link, seq: int, status: str, payload: list[Any], took: float, now: float
    ) -> None:
        with self.lock:
            if status == wire.STARTED:
                self.board.started(link, seq, now)
                return
            if status == wire.CANCELLED:
                self.board.recalled.pop(seq, None)
                return
            task, current = self.board.finished(link, seq, now, took)
        if task is None or task.resolved:
            return
        if task.stopping:
            task.ended.set()  # its stop settles it
            return
        if status in (wire.OK, wire.PLAIN):
            try:
                value = decode_result(status, payload)
            except Exception as exc:  # e.g. a class the client cannot import
                self._settle(task, error=exc)
                return
            self._settle(task, value)
            return
        content = json.loads(memoryview(payload[0]).tobytes())
        if link.stopping and content.get("ename") == "KeyboardInterrupt":
            if current:  # interrupted by the stop of another task there: run again
                with self.lock:
                    self.board.requeue([task])
            return  # (a task taken back is queued already)
        self._settle(task, error=task_error(task.label, link.engine_id, content))

    def _settle(self, task: Task, value: Any = None, error: BaseException | None = None) -> None:
        if task.resolved:
            return
        task.resolved = True
        with self.lock:
            self.outstanding -= 1
        if error is not None:
            task.future.set_exception(error)
        else:
            task.future.set_result(value)
        record_settled(self.core.task_events, task, error is None)

    def _fail_all(self, error: Exception) -> None:
        with self.lock:
            tasks = list(self.board.queue)
            self.board.queue.clear()
            for link in self.board.links.values():
                tasks.extend(link.in_flight.values())
                link.in_flight.clear()
        self._fail([*tasks, *self.deaths.drain()], lambda _task: error)

    def _fail(self, tasks: list[Task], error_of: Callable[[Task], BaseException]) -> None:
        for task in tasks:
            if task.resolved:
                continue
            if task.future.done():  # cancelled while queued
                task.resolved = True
                with self.lock:
                    self.outstanding -= 1
            else:
                self._settle(task, error=error_of(task))

    # ------------------------------------------------------------ timeouts

    def _start_stop(self, link: Link, task: Task, now: float) -> None:
        """``task`` ran past its timeout: the tasks waiting behind it go elsewhere,
        and a thread stops it as ``pool.apply`` would."""
        task.stopping = True
        task.ended = threading.Event()
        link.stopping = True
        with self.lock:
            waiting = self.board.take_back_behind(link, task)
        self._cancel([(link, other) for other in waiting])
        threading.Thread(
            target=self._stop, args=(link, task), name="pxpool-lane-stop", daemon=True
        ).start()

    def _stop(self, link: Link, task: Task) -> None:
        error = stopped_error(self.guard, link.engine_id, task, Ended(task.ended))

        def stopped() -> None:
            link.stopping = False
            with self.lock:
                link.in_flight.pop(task.seq, None)
            self._settle(task, error=error)

        self.post(stopped)
