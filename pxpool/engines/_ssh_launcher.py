"""The launcher behind the ssh provider: one engine in the foreground of a local
``ssh`` client, its connection info sent over stdin, killed by pid over ssh.

Kept apart from ``ssh.py`` (which decides hosts, probes and placement) because this
is the part ipyparallel's Cluster stores and rebuilds from its cluster file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import time
from subprocess import PIPE, STDOUT, Popen
from typing import Any, Protocol

import psutil
from ipyparallel.cluster.launcher import EngineLauncher, LocalProcessLauncher, NotRunning
from traitlets import Bool, Float, Integer, List, Unicode

from .._core.processes import running
from ..errors import EngineStartError
from ._ssh_tunnel import forward_options, tunnel_info

__all__ = ["SSHEngineLauncher", "run_bounded", "remote_command", "REMOTE_TERM_GRACE"]

log = logging.getLogger("pxpool.engines.ssh")
REMOTE_TERM_GRACE = 3  # seconds between SIGTERM and SIGKILL on the remote host
_PID_RE = re.compile(r"__pxpool_pid=(\d+)__")
# Ends the engine (if the pid is still an engine) and waits for its nanny too: the
# nanny tells the hub the engine is gone, then exits; SIGKILL for what is left.
_KILL_SCRIPT = """p={pid}
ps -o args= -p "$p" 2>/dev/null | grep -qE "pxpool._(entry.)?engine_main|ipyparallel.engine" || exit 0
kids=$(pgrep -P "$p" 2>/dev/null || true)
kill -TERM "$p" 2>/dev/null
alive() {{  # zombies count as gone: PID 1 in a container may never reap them
    for x in "$p" $kids; do
        s=$(ps -o stat= -p "$x" 2>/dev/null) && case "$s" in Z*) ;; *) return 0 ;; esac
    done
    return 1
}}
i=0
while alive && [ "$i" -lt {ticks} ]; do sleep 0.1; i=$((i + 1)); done
kill -KILL "$p" $kids 2>/dev/null
exit 0
"""


async def run_bounded(
    argv: list[str], timeout: float, stdin: bytes | None = None
) -> tuple[int | None, str, str]:
    """Run ``argv``; return (exit code or None on timeout, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=PIPE,
        stderr=PIPE,
        start_new_session=True,
    )
    task = asyncio.ensure_future(process.communicate(stdin))
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        process.kill()
    out, err = await task
    code = process.returncode if done else None
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def remote_command(script: str) -> str:
    """The command line ssh hands to the remote login shell, which re-parses it."""
    return shlex.join(["sh", "-c", script])


class AgentForward(Protocol):
    """A local forward to an agent on the engine's host (:class:`._ssh_reach.Forward`)."""

    local_port: int
    target: tuple[str, int]

    @property
    def alive(self) -> bool: ...

    def close(self) -> None: ...


class SSHEngineLauncher(LocalProcessLauncher, EngineLauncher):  # type: ignore[misc]  # untyped bases
    """One engine on an SSH host, in the foreground of a local ssh client."""

    ssh_argv = List(Unicode(), help="ssh, its options and the destination").tag(to_dict=True)
    host_label = Unicode(help="user@host:port, for messages").tag(to_dict=True)
    remote_script = Unicode(help="sh script that prints its pid and execs the engine")
    remote_pid = Integer(-1).tag(to_dict=True)
    remote_stopped = Bool(False).tag(to_dict=True)
    remote_stop_timeout = Float(15.0).tag(to_dict=True)
    tunnel_forwards = List(
        List(Integer()), help="[remote port, controller port] pairs: reverse tunnels this ssh opens"
    ).tag(to_dict=True)
    _forward_options: list[str] = []
    # attributes of ipyparallel's LocalProcessLauncher (untyped) that this class sets
    process: psutil.Process | None
    _output: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.agent_forwards: list[AgentForward] = []  # forwards to agents on this engine

    def close_agent_forwards(self) -> None:
        """Close the local forwards to this engine's agents (it stopped or is replaced)."""
        forwards, self.agent_forwards = self.agent_forwards, []
        for forward in forwards:
            forward.close()

    def notify_stop(self, data: Any) -> Any:
        self.close_agent_forwards()  # the engine (its ssh client) is gone
        return super().notify_stop(data)

    def find_args(self) -> list[str]:
        *options, destination = self.ssh_argv
        return [
            *options,
            *self._forward_options,
            destination,
            "--",
            remote_command(self.remote_script),
        ]

    def start(self, n: int = 1) -> None:
        """Like LocalProcessLauncher.start, but the connection info goes to ssh's stdin,
        rewritten to the tunnel's remote ports when there are forwards."""
        env = os.environ.copy()
        env.update(self.get_env())
        info = env.pop("IPP_CONNECTION_INFO", "")
        if not info:
            with open(self.connection_files["engine"]) as handle:
                info = handle.read()
        if self.tunnel_forwards:
            forwards = [(int(r), int(c)) for r, c in self.tunnel_forwards]
            self._forward_options = forward_options(json.loads(info), forwards)
            info = json.dumps(tunnel_info(json.loads(info), forwards))
        try:  # a set started again appends to the same file: read only this run's part
            self._output_start = os.path.getsize(self.output_file)
        except OSError:
            self._output_start = 0
        with open(self.output_file, "ab") as out:
            proc = self._popen_process = Popen(
                self.args,
                stdout=out.fileno(),
                stderr=STDOUT,
                stdin=PIPE,
                env=env,
                cwd=self.work_dir,
                start_new_session=True,
            )
        assert proc.stdin is not None
        try:
            proc.stdin.write(info.encode())  # a few hundred bytes: fits the pipe buffer
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ssh exited already; the wait below reports its output
        self.pid = proc.pid
        self.process = psutil.Process(proc.pid)
        self.notify_start(proc.pid)
        self._start_waiting()

    _output_start = 0

    def output_since_start(self) -> str:
        """What ssh and the engine printed since this launcher's start()."""
        if self._output is not None:  # ipyparallel read the file, then removed it
            return str(self._output)
        try:
            with open(self.output_file, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(self._output_start if self._output_start <= size else 0)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    async def wait_remote_pid(self, timeout: float) -> None:
        """Wait until the remote shell printed its pid (the engine's, after exec)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.output_since_start()
            match = _PID_RE.search(text)
            if match:
                self.remote_pid = int(match.group(1))
                return
            if self.process is None or not running(self.process):  # a reaped ssh: ended too
                raise EngineStartError(
                    f"ssh to {self.host_label} exited before the engine started "
                    f"(`{shlex.join(self.ssh_argv)} ...`); its output is below.",
                    text,
                )
            if time.monotonic() > deadline:
                raise EngineStartError(
                    f"The shell on {self.host_label} did not start the engine within "
                    f"{timeout:g}s; check the host's load and the profile's prologue/activate lines.",
                    text,
                )
            await asyncio.sleep(0.02)

    async def kill_remote(self) -> None:
        """Kill the remote engine by pid over ssh, bounded; a no-op once done."""
        if self.remote_pid <= 0 or self.remote_stopped:
            return
        script = _KILL_SCRIPT.format(pid=self.remote_pid, ticks=REMOTE_TERM_GRACE * 10)
        argv = [*self.ssh_argv, "--", remote_command(script)]
        code, out, err = await run_bounded(argv, self.remote_stop_timeout)
        if code == 0:
            self.remote_stopped = True
            return
        log.warning(
            "pxpool: could not stop engine pid %s on %s (ssh %s): %s; kill it by hand: "
            "`%s kill %s`",
            self.remote_pid,
            self.host_label,
            "timed out" if code is None else f"exited with {code}",
            (err or out).strip()[-500:],
            shlex.join(self.ssh_argv),
            self.remote_pid,
        )

    async def stop(self) -> None:
        self.close_agent_forwards()
        await self.kill_remote()
        await super().stop()  # the ssh client ends with its engine; SIGTERM if not

    def signal(self, sig: int) -> None:
        if self.state == "running" and self.process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):  # ended meanwhile: nothing to signal
                self.process.send_signal(sig)

    def _reconstruct_process(self, d: dict[str, Any]) -> None:
        """From a cluster file: the local ssh client may be gone while the remote
        engine still runs; keep the launcher so stop() can still kill it."""
        try:
            super()._reconstruct_process(d)
        except NotRunning:
            if self.remote_pid <= 0 or self.remote_stopped:
                raise
            self.process = None
