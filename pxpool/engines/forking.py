"""The pool's side of the fork server (:mod:`pxpool._entry.forkserver`): start one per
pool on this machine, find it again, notice when it died, stop it with the pool.

A provider asks :meth:`ForkServers.ensure` for the server's socket before it starts
engines; the engine launchers (:class:`~pxpool.engines.local.LocalEngine`) then fork
their engines from it instead of running the engine command. Supervision: a server
that died is replaced by a new one at the next start (engines it forked run on,
untouched); a server that cannot start at all, or that died too often, leaves the
pool to exec its engines the old way, with a warning. A preload that fails to import
is the user's to fix and fails the start with :class:`EngineStartError` naming it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .._core.cluster import PxCluster
from ..errors import EngineStartError
from ..profile import Profile
from .base import ENGINE_MODULE

log = logging.getLogger("pxpool.engines.forking")

SERVER_MODULE = "pxpool._entry.forkserver.server"
# set in an engine set's environment: its launchers fork from the server at this path
FORK_SERVER_VARIABLE = "PXPOOL_FORK_SOCKET"
# the profile's preload, for engines that are exec'd (pxpool._entry.engine_main reads it)
PRELOAD_VARIABLE = "PXPOOL_PRELOAD"
MAX_SERVER_STARTS = 3  # servers one pool starts before it execs its engines instead
SOCKET_NAME = "forkserver.sock"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


STAND_IN_MODULE = "pxpool._entry.forkserver.stand_in"


def stand_in_command(python: str, key: str, preload: tuple[str, ...], *options: str) -> list[str]:
    """The command that starts one engine from this host's fork server for ``key``
    (starting the server with the first engine), standing in for ``python -m
    ENGINE_MODULE``: the engine's arguments follow it as they follow that. ``options``:
    the stand-in's own (``--idle-exit=S``, ``--kill-after=S``)."""
    command = [python, "-m", STAND_IN_MODULE, f"--key={key}", *options]
    if preload:
        command.append(f"--preload={','.join(preload)}")
    return [*command, "-m", ENGINE_MODULE]


def stop_server_command(python: str, key: str) -> list[str]:
    """The command that ends the fork server for ``key`` on the host it runs on."""
    return [python, "-m", STAND_IN_MODULE, f"--key={key}", "--stop"]


class ForkServerUnavailable(RuntimeError):
    """The server did not come up for a reason of the machine, not of the profile."""


def supported() -> bool:
    """Fork servers need ``fork`` and Unix sockets that carry descriptors (Linux)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


def socket_path(profile_dir: str) -> str:
    """The server's socket in the pool's runtime directory (0700), or, where that path
    is too long for a Unix socket, in a private directory of the user's under /tmp."""
    path = os.path.join(profile_dir, SOCKET_NAME)
    if len(path) <= MAX_SOCKET_PATH:
        return path
    short = Path(tempfile.gettempdir()) / f"pxpool-{os.getuid()}"
    short.mkdir(mode=0o700, exist_ok=True)
    if short.stat().st_uid != os.getuid() or short.stat().st_mode & 0o077:
        raise ForkServerUnavailable(f"{short} is not a private directory of uid {os.getuid()}")
    digest = hashlib.sha256(profile_dir.encode()).hexdigest()[:20]
    return str(short / f"{digest}.sock")


class ForkServer:
    """One running server: its process (our child) and its socket."""

    def __init__(self, process: subprocess.Popen[bytes], path: str) -> None:
        self.process = process
        self.path = path

    @classmethod
    def start(
        cls,
        command: list[str],
        env: Mapping[str, str],
        cwd: str | None,
        path: str,
        log_path: str,
        timeout: float,
    ) -> ForkServer:
        """Start a server and wait (up to ``timeout``) until it imported everything and
        listens; blocking, so callers on an event loop run it in a thread."""
        with open(log_path, "ab") as output:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=output,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,  # the notebook's interrupts are not the server's
            )
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else b""
        process.stdout.close()
        try:
            report = json.loads(line) if line.strip() else {}
        except ValueError:
            report = {}
        if "ready" in report:
            return cls(process, path)
        _end(process)
        if "module" in report:
            raise PreloadFailed(str(report["module"]), str(report.get("error", "")))
        said = f"printed {line[:200]!r} instead of its ready line" if line else "gave no answer"
        raise ForkServerUnavailable(
            f"the fork server {said} within {timeout:g}s "
            f"(exit code {process.returncode}; its log: {log_path})"
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the server (engines it forked are not touched: the pool stops those)."""
        _end(self.process)


class PreloadFailed(Exception):
    def __init__(self, module: str, error: str) -> None:
        super().__init__(module, error)
        self.module = module
        self.error = error


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=2)


class ForkServers:
    """A provider's fork server for its pool on this machine, started on first need."""

    def __init__(self, profile: Profile, python: str, engine_module: str) -> None:
        self.profile = profile
        self.python = python
        self.engine_module = engine_module
        self.server: ForkServer | None = None
        self.starts = 0
        self.enabled = profile.engine.fork_server and supported()

    def command(self, path: str) -> list[str]:
        """The server's command line: it names the engine module (what the leak checks
        and ``ps`` look for) and the modules it preloads."""
        server = [self.python, "-m", SERVER_MODULE, path, "--target", self.engine_module]
        server += ["--parent", str(os.getpid())]
        return [*server, "--preload", *self.profile.engine.preload]

    async def ensure(
        self, cluster: PxCluster, environment: Mapping[str, str], python: str | None = None
    ) -> str | None:
        """The socket of a running server for ``cluster``, starting one if needed; None
        when engines are to be exec'd (fork servers off, unsupported, or failing).
        ``python``: the engines' interpreter now; a server of another one is stopped."""
        if not self.enabled:
            return None
        if python is not None and python != self.python:
            self.stop()  # it would fork engines of the interpreter the profile no longer names
            self.python = python
        if self.server is not None and self.server.alive():
            return self.server.path
        if self.server is not None:
            log.warning(
                "pxpool: the fork server of pool %s (pid %d) exited with code %s; engines it "
                "forked run on; starting a new one for the next engines",
                cluster.cluster_id,
                self.server.process.pid,
                self.server.process.returncode,
            )
            self.server = None
        if self.starts >= MAX_SERVER_STARTS:
            self._give_up(f"{self.starts} fork servers exited already")
            return None
        self.starts += 1
        try:
            self.server = await asyncio.to_thread(self._start, cluster, environment)
        except PreloadFailed as failed:
            raise EngineStartError(self._preload_message(failed)) from None
        except (ForkServerUnavailable, OSError) as exc:
            self._give_up(str(exc))
            return None
        return self.server.path

    def _start(self, cluster: PxCluster, environment: Mapping[str, str]) -> ForkServer:
        profile_dir = str(cluster.profile_dir)
        env = {
            **os.environ,
            "IPP_CLUSTER_ID": str(cluster.cluster_id),
            "IPP_PROFILE_DIR": profile_dir,
            **environment,
        }
        env.pop(FORK_SERVER_VARIABLE, None)
        log_dir = os.path.join(profile_dir, "log")
        os.makedirs(log_dir, exist_ok=True)
        path = socket_path(profile_dir)
        return ForkServer.start(
            self.command(path),
            env,
            self.profile.engine.work_dir or None,
            path,
            os.path.join(log_dir, "forkserver.log"),
            self.profile.timeouts.start,
        )

    def _preload_message(self, failed: PreloadFailed) -> str:
        whose = (
            f"module {failed.module!r} of `preload`"
            if failed.module in self.profile.engine.preload
            else f"pxpool's engine module {failed.module!r}"
        )
        return (
            f"Engines could not start: {whose} failed to import in the engines' Python "
            f"({self.python}): {failed.error}. Install it there or remove it from `preload` "
            f"in profile {self.profile.name!r} ({self.profile.source})."
        )

    def _give_up(self, why: str) -> None:
        log.warning("pxpool: no fork server (%s); engines start as processes of their own", why)
        self.enabled = False

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()
