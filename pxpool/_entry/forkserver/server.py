"""The fork server: imports once, forks engines on request, reaps them, reports exits.

``python -m pxpool._entry.forkserver.server SOCKET --target MODULE --preload M ...``

1. imports ``MODULE`` (what every engine runs) and each ``--preload`` module, in order;
   it starts no thread and no zmq context (importing ipyparallel, ipykernel and zmq
   creates neither), then freezes the collected objects (``gc.freeze``) so that the
   children's collections do not write to the shared pages;
2. writes one JSON line on stdout, ``{"ready": pid}`` or ``{"error": ..., "module": M}``
   when an import failed (and exits 3), then sends stdout to stderr (its log);
3. serves requests (:mod:`.wire`): each is forked into a child that becomes the engine
   (:func:`become`): its own session (``setsid``: the pool's signals and the server's
   are not its), its stdin/stdout/stderr, working directory and environment from the
   request, default signal handlers, fresh random seeds, then ``MODULE`` as
   ``__main__`` with the request's arguments;
4. stays the engines' parent and reaps each at once on ``SIGCHLD``, so no engine is
   left a zombie, and sends the exit code to the connection that asked for it: the
   caller learns how its engine died (a signal, an exit code) as it would from its own
   child. The caller tracks the engine by its pid (``psutil``), as any engine.

It exits on SIGTERM, when its parent process is gone (``--parent``), or after
``--idle-exit`` seconds without engines. Engines it forked are not signalled then:
they run on, orphaned, and their callers watch them by pid.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from typing import Any, NoReturn

from ..lean_imports import import_ipyparallel
from . import WARM, wire

TICK = 1.0  # seconds between looks at the parent and the idle clock
REQUEST_TIMEOUT = 5.0  # one request must arrive within this long of connecting
PRELOAD_FAILED = 3  # exit code when an import failed


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pxpool._entry.forkserver.server")
    parser.add_argument("socket", help="path of the Unix socket to listen on")
    parser.add_argument("--target", required=True, help="module each engine runs as __main__")
    parser.add_argument("--preload", nargs="*", default=[], help="modules imported once")
    parser.add_argument("--warm", nargs="*", default=list(WARM), help="imported if they can be")
    parser.add_argument("--parent", type=int, default=0, help="exit when this pid is gone")
    parser.add_argument("--idle-exit", type=float, default=0.0, help="seconds; 0: never")
    return parser.parse_args(argv)


def preload(modules: list[str], warm: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Import ``modules`` in order (the report of the first failure), then ``warm``,
    what engines import later on (skipped where missing: each engine imports it then)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # SystemExit in a module body counts as failing too
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return {"error": detail, "module": name}
    for name in warm:
        try:
            importlib.import_module(name)
        except Exception as exc:
            print(f"pxpool: fork server: not preloading {name}: {exc!r}", file=sys.stderr)
    gc.collect()
    gc.freeze()  # shared pages stay shared: children's collections skip these objects
    return {"ready": os.getpid(), "threads": len(os.listdir("/proc/self/task"))}


class Server:
    """The accept-fork-reap loop (one thread, no zmq)."""

    def __init__(self, path: str, target: str, parent: int, idle_exit: float) -> None:
        self.path = path
        self.target = target
        self.parent = parent
        self.idle_exit = idle_exit
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        self.last_busy = time.monotonic()
        self.listener = _listen(path)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)  # a signal wakes the select below
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a notebook's interrupt is not ours

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        selector.register(self.wake_r, selectors.EVENT_READ)
        try:
            while not self.stopping:
                for key, _ in selector.select(TICK):
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        _drain(self.wake_r)
                self._reap()
                if self._done():
                    break
        finally:
            self._close()

    def _done(self) -> bool:
        if self.parent and os.getppid() != self.parent:
            return True  # the pool's process is gone: nobody will ask again
        if self.children:
            self.last_busy = time.monotonic()
            return False
        return bool(self.idle_exit) and time.monotonic() - self.last_busy > self.idle_exit

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.last_busy = time.monotonic()
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            uid = wire.peer_uid(conn)
            if uid is not None and uid != os.getuid():
                raise PermissionError(f"uid {uid} may not use the fork server of uid {os.getuid()}")
            body, fds = wire.read_request(conn)
        except (OSError, ValueError) as exc:
            _refuse(conn, exc)
            return
        pid = self._fork(conn, body, fds)
        if pid is None:
            return
        self.children[pid] = conn
        try:
            wire.send_reply(conn, {"pid": pid})
        except OSError:
            pass  # the caller gave up; the engine runs on and is reaped here

    def _fork(self, conn: socket.socket, body: dict[str, Any], fds: list[int]) -> int | None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            _refuse(conn, exc)
            pid = None
        if pid == 0:
            # the server's sockets are the server's: detached, so that no socket object
            # can ever close a descriptor number the engine reuses
            mine = [s.detach() for s in (self.listener, conn, *self.children.values())]
            become(self.target, body, fds, [*mine, self.wake_r, self.wake_w])
        for fd in fds:
            os.close(fd)
        return pid

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                try:
                    wire.send_reply(conn, {"exit": os.waitstatus_to_exitcode(status)})
                except OSError:
                    pass
                conn.close()

    def _close(self) -> None:
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        for conn in self.children.values():
            conn.close()  # end of file: callers watch their engines by pid from now on


def _listen(path: str) -> socket.socket:
    try:
        os.unlink(path)  # a socket left by a server that was killed
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)  # 0600: only the user may connect
    finally:
        os.umask(old)
    listener.listen(128)
    return listener


def _refuse(conn: socket.socket, exc: BaseException) -> None:
    try:
        wire.send_reply(conn, {"error": f"{type(exc).__name__}: {exc}"})
    except OSError:
        pass
    conn.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


# ---------------------------------------------------------------- in the child


def become(target: str, body: dict[str, Any], fds: list[int], server_fds: list[int]) -> NoReturn:
    """Turn this fresh child into the engine the request asked for; never returns."""
    code: Any = 1
    try:
        _reset_signals()
        for number in body.get("ignored") or ():  # as exec keeps the caller's SIG_IGN
            signal.signal(int(number), signal.SIG_IGN)
        for fd in server_fds:
            os.close(fd)
        os.setsid()  # a session of its own, as the engines started by exec have
        for number, fd in enumerate(fds):
            os.dup2(fd, number)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        _take_environment(body)
        _reseed()
        code = _run(target, [str(arg) for arg in body.get("argv", [])])
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for name in ("SIGCHLD", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _take_environment(body: dict[str, Any]) -> None:
    """The request's environment and working directory, and ``sys.path`` as a process
    started there with that environment would have it (``-m``: the working directory
    first, then ``PYTHONPATH``)."""
    env = {str(k): str(v) for k, v in dict(body.get("env") or {}).items()}
    cwd = str(body.get("cwd") or os.getcwd())
    old_cwd = os.getcwd()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if sys.path and sys.path[0] == old_cwd:
        sys.path[0] = os.getcwd()
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[1:1] = extra


def _reseed() -> None:
    """``random`` reseeds itself after a fork; numpy's global generator does not, and
    every engine would draw the same numbers."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except Exception:
            pass


def _run(target: str, argv: list[str]) -> Any:
    import runpy

    sys.argv = [target, *argv]
    # run as __main__ like `python -m` (its imports are all cached); without the copy
    # imported as a module, runpy would warn in every engine's output
    sys.modules.pop(target, None)
    runpy.run_module(target, run_name="__main__", alter_sys=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    options = _options(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # without what engines never use: ~0.25 s less before the first fork
        import_ipyparallel()
    except Exception:
        pass  # the preload below reports what failed to import
    report = preload([options.target, *options.preload], options.warm)
    if "error" in report:
        _say(report)
        sys.exit(PRELOAD_FAILED)
    server = Server(options.socket, options.target, options.parent, options.idle_exit)
    _say(report)  # listening already: the starter may connect as soon as it reads this
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the starter reads one line only
    server.serve()


def _say(report: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
