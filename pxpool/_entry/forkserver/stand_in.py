"""A stand-in for one engine where the caller needs a process of its own per engine.

``python -m pxpool._entry.forkserver.stand_in --key KEY [--preload M,N] -m MODULE ARGS...``

A batch job's script starts its engines as background processes and waits for them;
its signals (walltime warnings, cancel) go to those processes. This small process
(standard library only: a Python start, no imports of note) takes an engine's place
there:

1. it finds this host's fork server for ``KEY`` (a Unix socket in a private directory
   of the user's under ``$TMPDIR``, which is node-local), or starts one, under a lock
   so that engines starting side by side start one server;
2. it asks the server for the engine with its own stdin, stdout and stderr (the job's
   output file), environment and working directory, and the signals it ignores (a job
   script starts engines with SIGUSR1/SIGUSR2 ignored until pxpool's drain handler takes
   them over: the forked engine starts so too);
3. it passes on every signal it gets (TERM, INT, HUP, USR1, USR2) to the engine, and
   exits with the engine's exit code (a signal: by the same signal).

Where no server can be had, it runs the engine itself (``exec``), the old way.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import sys
import tempfile
from typing import Any, NoReturn

from . import wire

SERVER_MODULE = "pxpool._entry.forkserver.server"
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")
SERVER_START_TIMEOUT = 120.0  # imports on a busy node's shared file system are slow
IDLE_EXIT = 10.0  # seconds a server with no engine left lives on
POLL = 0.1  # seconds between looks at an engine whose server is gone


def _options(argv: list[str] | None) -> argparse.Namespace:
    """Options, then ``-m MODULE`` and the engine's arguments, as ``python -m`` takes
    them (the job script's line reads as the engine's command it stands in for)."""
    words = list(sys.argv[1:] if argv is None else argv)
    split = words.index("-m") if "-m" in words else len(words)
    parser = argparse.ArgumentParser(prog="python -m pxpool._entry.forkserver.stand_in")
    parser.add_argument("--key", required=True, help="names the pool's server on this host")
    parser.add_argument("--preload", default="", help="modules to preload, comma-separated")
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT, help="the server's")
    parser.add_argument("--kill-after", type=float, default=0.0, help="SIGKILL after TERM")
    parser.add_argument("--stop", action="store_true", help="stop this host's server for KEY")
    options = parser.parse_args(words[:split])
    if not options.stop and split + 1 >= len(words):
        parser.error("the engine's module follows: -m MODULE ARGS...")
    options.target = words[split + 1] if not options.stop else ""
    options.engine_args = words[split + 2 :]
    return options


def socket_path(key: str) -> str:
    """This host's socket for ``key``, in ``$TMPDIR/pxpool-UID`` (0700)."""
    base = os.path.join(tempfile.gettempdir(), f"pxpool-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    info = os.stat(base)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{base} is not a private directory of uid {os.getuid()}")
    name = hashlib.sha256(f"{key}@{socket.gethostname()}".encode()).hexdigest()[:24]
    return os.path.join(base, f"{name}.sock")


def _start_server(path: str, options: argparse.Namespace) -> None:
    """Start the server unless another engine's stand-in did (lock held meanwhile)."""
    command = [sys.executable, "-m", SERVER_MODULE, path, "--target", options.target]
    command += ["--idle-exit", str(options.idle_exit)]
    command += ["--preload", *_names(options.preload)]
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(path):
            return
        line = _spawn_detached(command, f"{path}.log")
        report: dict[str, Any] = json.loads(line) if line.strip() else {}
        if "module" in report:
            sys.stderr.write(
                f"pxpool: the engines' fork server could not preload module "
                f"{report['module']!r}: {report.get('error')}\n"
            )
            sys.exit(3)
        if "ready" not in report:
            raise wire.ForkRefused(f"the fork server did not start; see {path}.log")


def _spawn_detached(command: list[str], log_path: str) -> bytes:
    """Run the server as nobody's child but init's (a double fork, its own session),
    its output in ``log_path``: not this process's, whose pid callers kill with its
    children, and not this process's stdout, an ssh channel that would stay open for
    as long as the server holds it. Returns the server's first line."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(ready_w, 1)
                os.dup2(log, 2)
                os.closerange(3, 256)
                os.execv(sys.executable, command)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.waitpid(pid, 0)
    with os.fdopen(ready_r, "rb") as ready:
        found, _, _ = select.select([ready], [], [], SERVER_START_TIMEOUT)
        return ready.readline() if found else b""


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _ignored() -> list[int]:
    found = []
    for name in FORWARDED:
        number = getattr(signal, name)
        if signal.getsignal(number) == signal.SIG_IGN:
            found.append(int(number))
    return found


def fork_engine(options: argparse.Namespace) -> wire.Forked:
    path = socket_path(options.key)
    if not _answers(path):
        _start_server(path, options)
    body = {
        "argv": options.engine_args,
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "ignored": _ignored(),
    }
    return wire.fork(path, body, [0, 1, 2])


def stand_in(forked: wire.Forked, kill_after: float = 0.0) -> NoReturn:
    """Pass signals on to the engine until it exits; exit as it did. With
    ``kill_after``, an engine still there that long after a SIGTERM gets SIGKILL (the
    caller's own SIGKILL would end only this process)."""

    def forward(number: int, _frame: Any) -> None:
        try:
            os.kill(forked.pid, number)
        except OSError:
            pass
        if number == signal.SIGTERM and kill_after > 0:
            signal.setitimer(signal.ITIMER_REAL, kill_after)

    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    signal.signal(signal.SIGALRM, lambda *_: forward(signal.SIGKILL, None))
    while True:
        done, code = forked.wait(timeout=None)
        if done:
            break
    if code is None:  # the server went away: watch the engine by its pid
        from ..pids import alive

        while alive(forked.pid):
            select.select([], [], [], POLL)
        code = 1
    if code < 0:  # end by the same signal: ssh and the job see what the engine saw
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def stop_server(key: str, timeout: float = 3.0) -> None:
    """End this host's server for ``key`` (its pid from the socket's peer credentials):
    engines it forked are not touched."""
    path = socket_path(key)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        pid = wire.peer_pid(probe)
    except OSError:
        return  # none runs
    finally:
        probe.close()
    if pid:
        os.kill(pid, signal.SIGTERM)
        from ..pids import alive

        for _ in range(int(timeout / POLL)):
            if not alive(pid):
                break
            select.select([], [], [], POLL)


def main(argv: list[str] | None = None) -> None:
    options = _options(argv)
    if options.stop:
        stop_server(options.key)
        return
    try:
        forked = fork_engine(options)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"pxpool: no fork server ({exc}); the engine starts on its own\n")
        sys.stderr.flush()
        engine = [sys.executable, "-m", options.target, *options.engine_args]
        os.execv(sys.executable, engine)
    stand_in(forked, options.kill_after)


if __name__ == "__main__":
    main()
