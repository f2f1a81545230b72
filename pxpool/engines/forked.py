"""An ipyparallel process launcher whose process is forked by the pool's fork server.

Mixed into :class:`~pxpool.engines.local.LocalEngine`. When the engine set's
environment names a fork server (:data:`~pxpool.engines.forking.FORK_SERVER_VARIABLE`),
:meth:`ForkFromServer.start` sends it the engine's arguments, environment and working
directory with the engine's output file as its stdout and stderr (the same file,
``log/ipengine-<cluster>-<set>-<n>.log``, an exec'd engine writes), and takes the pid it
answers as this launcher's process. Everything after that is ipyparallel's: signals
and stop go to the pid, the pool's process bookkeeping sees it and its nanny.

The exit is learnt from the server, the engine's parent, which reports the exit code
(a signal as a negative code, so "killed by SIGKILL" and out-of-memory kills are told
apart as for exec'd engines). Should the server die first, the engine runs on and is
watched by its pid. A server that does not answer makes the engine exec the old way.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import psutil

from .._entry.forkserver import wire
from .._entry.pids import alive
from .forking import FORK_SERVER_VARIABLE

log = logging.getLogger("pxpool.engines.forked")

POLL = 0.05  # seconds between looks at an engine whose server is gone
FORK_TIMEOUT = 10.0  # seconds for the server to answer one request


class ForkFromServer:
    """The fork-server half of a local process launcher (see the module's text)."""

    # ipyparallel's LocalProcessLauncher members this mixin reads and sets
    environment: dict[str, str]
    engine_cmd: list[str]
    args: list[str]
    output_file: str
    work_dir: str
    state: str
    pid: int
    process: Any
    identifier: str
    loop: Any
    _stop_waiting: Any
    _forked: wire.Forked | None = None

    def start(self) -> None:
        path = self.environment.get(FORK_SERVER_VARIABLE)
        if not path or self.state != "before":
            super().start()  # type: ignore[misc]  # ipyparallel's LocalProcessLauncher
            return
        try:
            forked = self._fork(path)
        except wire.ForkRefused as exc:
            log.warning(
                "pxpool: %s; engine %s starts as a process of its own", exc, self.identifier
            )
            super().start()  # type: ignore[misc]
            return
        self._forked = forked
        self.pid = forked.pid
        self.process = psutil.Process(forked.pid)
        self.notify_start(forked.pid)  # type: ignore[attr-defined]
        self._start_waiting()  # type: ignore[attr-defined]

    def _fork(self, path: str) -> wire.Forked:
        env = {**os.environ, **self.get_env()}  # type: ignore[attr-defined]
        env.pop(FORK_SERVER_VARIABLE, None)
        argv = self.args[len(self.engine_cmd) :]  # the engine command is the server's target
        with open(self.output_file, "ab") as output, open(os.devnull, "rb") as stdin:
            fds = [stdin.fileno(), output.fileno(), output.fileno()]
            body = {"argv": argv, "env": env, "cwd": os.path.abspath(self.work_dir)}
            return wire.fork(path, body, fds, FORK_TIMEOUT)

    def _wait(self) -> None:
        """ipyparallel's wait thread, for a forked engine: the server's exit report,
        else (server gone) the pid."""
        forked = self._forked
        if forked is None:
            super()._wait()  # type: ignore[misc]
            return
        code: int | None = None
        reported = False
        while not self._stop_waiting.is_set() and self.state == "running":
            done, code = forked.wait(timeout=1.0)
            if done:
                reported = code is not None
                break
        while not reported and not self._stop_waiting.is_set() and alive(self.pid):
            time.sleep(POLL)
        stop_data = {"exit_code": code, "pid": self.pid, "identifier": self.identifier}
        self.loop.add_callback(lambda: self.notify_stop(stop_data))  # type: ignore[attr-defined]
