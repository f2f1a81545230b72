"""Engine side of the task lane: tasks straight from the client, on the engine's main thread.

:func:`install` runs on each engine (from the pool's engine hook; idempotent). It binds
a zmq ROUTER socket on the engine's interface towards the controller and registers it
on the kernel's own event loop (``kernel.io_loop``, the loop of the main thread that
runs every ``%%px`` cell and every apply). Tasks therefore run on the main thread, in
the engine's namespace, one at a time and never during a cell or an apply: they start
only when no shell request holds the kernel's lock (an async cell that awaits keeps it;
the tasks wait for it), run back to back for at most ``TURN`` seconds (plus the last
one's own time), and then the loop serves waiting shell requests before more tasks.
Held engines (:mod:`pxpool._core.hold`) run no task before their release.

Each task runs the way ipyparallel's ``do_apply`` runs one: SIGINT interrupts it (as the
kernel's handler hooks arrange), ``init_metadata``/``finish_metadata`` (health counts
it), a failure through ``shell.showtraceback`` (``sys.last_traceback`` is set, so the
debugger's post-mortem works), the result through ``serialize_object`` of ipyparallel's
engine kernel module (so ``max_result_size`` applies), or pickled at once when it is
plain values (:mod:`pxpool._tasks.plain`; the same limit applies). What a task prints goes
back with its reply and is shown in the client with its result
(:mod:`pxpool._tasks.printed`); on the engine it is also published without a parent
request, which the pool's client and controller skip (no record grows with it), and
kept with the engine's output (``pool.logs``).

Names: the function arrives cloudpickled, with the client's globals it uses (a notebook's
imports and helpers); the engine's names win (:mod:`pxpool._tasks.names`).

This module imports no client side and no ipyparallel: the ipyparallel modules every
engine has loaded are reached through ``sys.modules``.
"""

from __future__ import annotations

import _signal
import asyncio
import importlib
import json
import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .._entry.net import local_address
from . import wire
from .names import load_function
from .outbox import SHORT, Outbox
from .plain import plain_frames
from .printed import Catching

log = logging.getLogger("pxpool.tasks")
MAX_CLIENTS = 64  # client tokens whose sequence numbers an engine remembers
TURN = 0.01  # seconds of back-to-back tasks before shell requests get the loop
_LANE: Lane | None = None
RUNNER_MODULES = {"pxpool._data.agent"}  # the modules a task may name a runner of
LIMITS_MODULE = "pxpool._reliability.limits"  # names the memory limit a MemoryError hit
RESULT_LIMIT_MODULE = "pxpool._reliability.result_limit"  # loaded where max_result_size is set


@dataclass
class Job:
    """One task of a received ``run`` message."""

    ident: Any  # the client's connection
    client: str
    x: int  # the run's number in replies and cancels
    task: Any
    na: int
    nk: int
    started_notice: bool
    parts: list[Any]
    runner: str = ""  # "module:function" the task's function is handed to ("": called)


def _ipp(module: str) -> Any:
    """An ipyparallel module this engine process has loaded (it is ipyparallel's engine)."""
    found = sys.modules.get(module)
    if found is None:
        raise RuntimeError(f"{module} is not loaded: this process is not an ipyparallel engine")
    return found


def _runner(name: str) -> Any:
    """A runner a task names (``pool.map`` chunks: ``pxpool._data.agent:run_items``):
    only pxpool's own engine-side modules, imported on first use."""
    module, _, function = name.partition(":")
    if module not in RUNNER_MODULES:
        raise ValueError(f"unknown task runner {name!r}")
    return getattr(importlib.import_module(module), function)


def run_chunk(fn: Any, chunk: list[tuple[Any, ...]]) -> list[Any]:
    """``pool.executor().map`` with ``chunksize > 1``: one task runs a chunk of calls."""
    return [fn(*args) for args in chunk]


class Lane:
    """The engine's lane socket and the tasks received on it (see the module docstring)."""

    def __init__(self, kernel: Any, key: bytes, host: str, encrypt: bool = False) -> None:
        import zmq

        self.kernel = kernel
        self.shell = kernel.shell
        self.engine_id = int(kernel.engine_id)
        self.signer = wire.FrameSigner(key)
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        # with encrypt: the CurveZMQ public key clients need (install's answer)
        self.curve_key = wire.serve_encrypted(self.socket) if encrypt else ""
        self.address = f"tcp://{host}:{self.socket.bind_to_random_port(f'tcp://{host}')}"
        self.outbox = Outbox(self.socket, self.signer, self.engine_id)
        self.pending: deque[Job] = deque()
        self.seen: dict[str, int] = {}  # client token -> last sequence number
        self.refused = 0
        self.ran = 0
        self._busy = False  # tasks run (or the socket is being read) now
        self._scheduled = False
        self._waiting = False  # for the kernel's lock or the hold's release
        self._parent: dict[str, Any] = {"header": {}, "metadata": {}}  # output: no parent
        kernel.io_loop.add_handler(self.socket, self._readable, kernel.io_loop.READ)

    # ------------------------------------------------------------ receiving

    def _readable(self, fd: Any = None, events: Any = None) -> None:
        self._read()
        self._pump()

    def _read(self, wait: bool = True) -> None:
        """Take every message waiting on the socket (its descriptor only signals
        edges, so reading goes on while the socket says a message is there). Without
        ``wait``, only if the outbox's thread is not sending meanwhile."""
        import zmq

        lock = self.outbox.lock  # every use of the socket, from either thread
        while lock.acquire(blocking=wait):
            try:
                if not int(self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    return
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            finally:
                lock.release()
            self._accept(frames[0], frames[1:])

    def _accept(self, ident: Any, frames: list[Any]) -> None:
        unpacked = wire.unpack(self.signer, frames)
        if isinstance(unpacked, str):
            return self._refuse(unpacked)
        header, parts = unpacked
        client, seq = header.get("c"), header.get("q")
        if not isinstance(client, str) or not isinstance(seq, int):
            return self._refuse("malformed header (no client or sequence number)")
        if seq <= self.seen.get(client, 0):
            return self._refuse(f"replayed message (sequence {seq} seen before)")
        self.seen[client] = seq
        if len(self.seen) > MAX_CLIENTS:
            del self.seen[next(iter(self.seen))]
        if header.get("op") == wire.RUN:
            self._queue(ident, client, header.get("tasks"), parts)
        elif header.get("op") == wire.CANCEL:
            self._cancel(ident, client, header.get("x"))
        else:
            self._refuse(f"unknown operation {header.get('op')!r}")

    def _queue(self, ident: Any, client: str, tasks: Any, parts: list[Any]) -> None:
        try:
            jobs, used = [], 0
            for x, task, na, nk, notice, *via in tasks:
                count = 1 + int(na) + int(nk)
                job_parts = parts[used : used + count]
                runner = str(via[0]) if via else ""
                job = Job(ident, client, int(x), task, na, nk, bool(notice), job_parts, runner)
                jobs.append(job)
                used += count
        except (TypeError, ValueError):
            return self._refuse("malformed run message (its task list)")
        if used != len(parts):
            return self._refuse("malformed run message (parts do not match its tasks)")
        self.pending.extend(jobs)

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        log.warning("pxpool: engine %s refused a task lane message: %s", self.engine_id, reason)

    def _cancel(self, ident: Any, client: str, runs: Any) -> None:
        wanted = set(runs) if isinstance(runs, list) else set()
        dropped = [job for job in self.pending if job.client == client and job.x in wanted]
        for job in dropped:
            self.pending.remove(job)
            self._reply(ident, job.x, wire.CANCELLED)

    def _reply(
        self,
        ident: Any,
        x: int,
        status: str,
        parts: list[Any] | None = None,
        took: float = 0.0,
        printed: list[str] | None = None,
        cpu: float = 0.0,
    ) -> None:
        """Send a reply. While the next task waits, a short task's waits for the next
        task's, and that of a task that mostly waited (``cpu`` seconds of its ``took``)
        leaves from the outbox's thread while the next one runs (:mod:`.outbox`)."""
        result = status in (wire.OK, wire.PLAIN, wire.ERROR) and bool(self.pending)
        hold = result and took < SHORT
        hand_off = result and not hold and cpu < took / 2
        entry = [x, status, len(parts or ()), round(took, 6)]
        self.outbox.reply(ident, entry, parts or [], printed, hold, hand_off)

    # ------------------------------------------------------------ running

    def _pump(self) -> None:
        self._scheduled = False
        if self._busy or not self.pending or self._deferred():
            return
        self._turn()

    def _deferred(self) -> bool:
        """True while tasks must wait: the engine is held, or a shell request holds
        the kernel's lock (an async cell awaiting); they run once that is over."""
        if self._waiting:
            return True
        hold = sys.modules.get("pxpool._core.hold")
        if hold is not None and hold.is_held():
            self._waiting = True
            hold.when_released(self._resume)
            return True
        # the lock ipykernel runs every shell request under (it has no public name)
        lock = self.kernel._main_asyncio_lock  # noqa: SLF001 - ipykernel Kernel
        if lock.locked():
            self._waiting = True
            asyncio.ensure_future(self._after_lock(lock))
            return True
        return False

    def _resume(self) -> None:
        self._waiting = False
        self._pump()

    async def _after_lock(self, lock: asyncio.Lock) -> None:
        async with lock:
            self._waiting = False
            if not self._busy and self.pending:
                self._turn()

    def _turn(self) -> None:
        """Run waiting tasks back to back for up to TURN seconds, then let the loop
        serve shell requests (cells, applies) before the next ones."""
        self._busy = True
        try:
            if self.kernel.get_parent("shell") is not self._parent:
                self.kernel.set_parent([], self._parent, channel="shell")
            ends = time.monotonic() + TURN
            while True:
                # a cancel that came meanwhile drops its task first; with a task
                # waiting, not while the outbox's thread sends (the next read sees it)
                self._read(wait=not self.pending)
                if not self.pending:
                    break
                self._run(self.pending.popleft())
                if time.monotonic() > ends:
                    break
        finally:
            self.outbox.flush()
            self._busy = False
        self._read()  # sending resets the descriptor's edge: read what came
        if self.pending and not self._scheduled:
            self._scheduled = True
            self.kernel.io_loop.add_callback(self._pump)

    def _run(self, job: Job) -> None:
        kernel = self.kernel
        if job.started_notice:
            self._reply(job.ident, job.x, wire.STARTED)
        parent = {"header": {"msg_id": f"lane-{job.client[:8]}-{job.task}"}, "metadata": {}}
        metadata = kernel.init_metadata(parent)
        reply: dict[str, Any] = {"status": "ok"}
        status = wire.OK
        began, cpu_began = time.perf_counter(), time.thread_time()
        saved = None
        with Catching() as caught:  # what it prints goes back with its reply
            try:
                # as the kernel's pre_handler_hook: SIGINT interrupts the task (a timeout's
                # stop); the raw call, as the hook's enum conversions cost a task's run time
                saved = _signal.signal(_signal.SIGINT, _signal.default_int_handler)
                status, frames = self._call(job)
            except BaseException as exc:  # as ipyparallel's do_apply: whatever it raised
                reply, frames = self._failure(exc)
                status = wire.ERROR
            finally:
                if saved is not None:
                    _signal.signal(_signal.SIGINT, saved)  # the kernel's post_handler_hook
        took, cpu = time.perf_counter() - began, time.thread_time() - cpu_began
        kernel.finish_metadata(parent, metadata, reply)
        self.ran += 1
        self._reply(job.ident, job.x, status, frames, took, caught.printed(), cpu)

    def _call(self, job: Job) -> tuple[str, list[Any]]:
        """Run the task; its reply's status (``ok`` or ``plain``) and parts."""
        namespace = self.shell.user_ns
        parts = job.parts
        f = load_function(parts[0], namespace)
        deserialize = _ipp("ipyparallel.serialize").deserialize_object
        args_end = 1 + int(job.na)
        args = deserialize(parts[1:args_end], namespace)[0] if args_end > 1 else ()
        kwargs = deserialize(parts[args_end:], namespace)[0] if job.nk else {}
        result = _runner(job.runner)(f, *args, **kwargs) if job.runner else f(*args, **kwargs)
        session = self.kernel.session
        plain = plain_frames(result, session.item_threshold)
        if plain is not None:
            if (limit := sys.modules.get(RESULT_LIMIT_MODULE)) is not None:
                limit.check_size(plain)  # max_result_size, as serialize_object checks it
            return wire.PLAIN, plain
        serialize = _ipp("ipyparallel.engine.kernel").serialize_object  # with the size limit
        frames: list[Any] = serialize(
            result,
            buffer_threshold=session.buffer_threshold,
            item_threshold=session.item_threshold,
        )
        return wire.OK, frames

    def _failure(self, exc: BaseException) -> tuple[dict[str, Any], list[Any]]:
        """The error reply, after the shell showed the traceback (it keeps it in
        ``sys.last_traceback`` for post-mortem debugging)."""
        shell = self.shell
        try:
            shell.showtraceback()
        except Exception as shown:
            log.error("pxpool: cannot show the traceback of a lane task: %r", shown)
        try:
            evalue = str(exc)
        except Exception as unprintable:
            evalue = f"(str() of the error failed: {unprintable!r})"
        # ipykernel's shell keeps the formatted traceback only there (do_apply reads it too)
        limits = sys.modules.get(LIMITS_MODULE)  # loaded once the pool set a memory limit
        if isinstance(exc, MemoryError) and limits is not None:
            evalue = limits.named_memory_error(self.kernel.engine_id, evalue)
        traceback = list(getattr(shell, "_last_traceback", None) or [])
        shell._last_traceback = None  # noqa: SLF001 - ipykernel ZMQInteractiveShell
        content = {"ename": type(exc).__name__, "evalue": evalue, "traceback": traceback}
        reply = {"status": "error", "ename": content["ename"], "evalue": evalue}
        return reply, [json.dumps(content).encode()]


def install(controller_ip: str, encrypt: bool = False) -> dict[str, Any]:
    """Start this engine's lane (once); its address, the engine's identity, and with
    ``encrypt`` (the profile's ``[controller] encrypt``) the socket's CurveZMQ key."""
    global _LANE
    from IPython.core.getipython import get_ipython

    kernel = get_ipython().kernel
    if _LANE is None:
        key = kernel.session.key
        if not key:
            raise RuntimeError(
                "this pool's engines have no message key; the task lane signs every "
                "message with it and cannot run without one"
            )
        _LANE = Lane(kernel, key, local_address(controller_ip), encrypt)
    return {
        "address": _LANE.address,
        "uuid": str(kernel.ident),
        "pid": os.getpid(),
        "curve_key": _LANE.curve_key,
    }


def counts() -> dict[str, int]:
    """On an engine: lane tasks run, messages refused, reply messages sent, replies
    held for later ones and replies handed to the outbox's thread since it started."""
    lane = _LANE
    if lane is None:
        return {"ran": 0, "refused": 0, "replies": 0, "held": 0, "handed": 0}
    box = lane.outbox
    return {
        "ran": lane.ran,
        "refused": lane.refused,
        "replies": box.messages,
        "held": box.held,
        "handed": box.handed,
    }
