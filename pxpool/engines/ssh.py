"""Engines on SSH hosts: one engine set per (host, engine), so each restarts alone.

Every engine runs in the foreground of its own local ``ssh`` client: the client's
output is the engine's output, and the client exits when the engine does, so a
failed start is noticed at once and reported with what the engine printed. The
controller's connection info goes over the client's stdin (never on a command
line); the remote shell prints its pid and then ``exec``s the engine, so that pid
is the engine's and ``pool.stop()`` kills it over ssh (bounded), also when the
controller or the local client died first.

Before the first engine goes to a host, the host is probed once: one bounded ssh
call that runs the profile's python and reports ``sys.version`` and
``ipyparallel.__version__``. Unreachable hosts and failed logins raise
:class:`SSHConnectError`; a missing python or a different Python or ipyparallel
version raises :class:`RemotePythonError` with both versions.

Reaching the controller: engines connect straight to the address the controller
listens on (``[controller] ip``, 127.0.0.1 by default), which works for hosts that
are this machine. For other hosts set ``controller_ip`` to an address they can
reach (e.g. ``"0.0.0.0"`` on a trusted network); pxpool does not open SSH tunnels
for engines yet and warns when a non-local host meets a loopback controller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import signal
import socket
import sys
import time
from subprocess import PIPE, STDOUT, Popen

import ipyparallel as ipp
import psutil
from ipyparallel.cluster.launcher import EngineLauncher, LocalProcessLauncher, NotRunning
from traitlets import Bool, Float, Integer, List, Unicode

from ..errors import EngineStartError, PxpoolError
from ..profile import SSHHost
from .base import Provider
from .ssh_errors import RemotePythonError, SSHConnectError

__all__ = ["SSHProvider", "SSHEngineLauncher"]

log = logging.getLogger("pxpool.engines.ssh")
PROBE_TIMEOUT = 15.0  # connect (ConnectTimeout) + log in + start python
CONNECT_TIMEOUT = 5
REMOTE_TERM_GRACE = 3  # seconds between SIGTERM and SIGKILL on the remote host
_PID_RE = re.compile(r"__pxpool_pid=(\d+)__")
_PROBE_CODE = (
    "import json, sys\n"
    "try:\n    import ipyparallel; v = ipyparallel.__version__\n"
    "except Exception as e:\n    v = None\n"
    "print('__pxpool_probe__' + json.dumps("
    "{'python': sys.version.split()[0], 'ipyparallel': v, 'executable': sys.executable}))\n"
)
# Ends the engine (if the pid is still an engine) and waits for its nanny too: the
# nanny tells the hub the engine is gone, then exits; SIGKILL for what is left.
_KILL_SCRIPT = """p={pid}
ps -o args= -p "$p" 2>/dev/null | grep -q ipyparallel.engine || exit 0
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


class SSHEngineLauncher(LocalProcessLauncher, EngineLauncher):
    """One engine on an SSH host, in the foreground of a local ssh client."""

    ssh_argv = List(Unicode(), help="ssh, its options and the destination").tag(to_dict=True)
    host_label = Unicode(help="user@host:port, for messages").tag(to_dict=True)
    remote_script = Unicode(help="sh script that prints its pid and execs the engine")
    remote_pid = Integer(-1).tag(to_dict=True)
    remote_stopped = Bool(False).tag(to_dict=True)
    remote_stop_timeout = Float(15.0).tag(to_dict=True)

    def find_args(self) -> list[str]:
        return [*self.ssh_argv, "--", remote_command(self.remote_script)]

    def start(self, n: int = 1) -> None:
        """Like LocalProcessLauncher.start, but the connection info goes to ssh's stdin."""
        env = os.environ.copy()
        env.update(self.get_env())
        info = env.pop("IPP_CONNECTION_INFO", "")
        if not info:
            with open(self.connection_files["engine"]) as handle:
                info = handle.read()
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

    def _read_output(self) -> str:
        try:
            with open(self.output_file, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    async def wait_remote_pid(self, timeout: float) -> None:
        """Wait until the remote shell printed its pid (the engine's, after exec)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self._read_output()
            match = _PID_RE.search(text)
            if match:
                self.remote_pid = int(match.group(1))
                return
            if (
                self.process is None
                or not self.process.is_running()
                or (self.process.status() == psutil.STATUS_ZOMBIE)
            ):
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
        await self.kill_remote()
        await super().stop()  # the ssh client ends with its engine; SIGTERM if not

    def signal(self, sig: int) -> None:
        if self.state == "running" and self.process is not None:
            self.process.send_signal(sig)

    def _reconstruct_process(self, d: dict) -> None:
        """From a cluster file: the local ssh client may be gone while the remote
        engine still runs; keep the launcher so stop() can still kill it."""
        try:
            super()._reconstruct_process(d)
        except NotRunning:
            if self.remote_pid <= 0 or self.remote_stopped:
                raise
            self.process = None


def _is_local(host: str) -> bool:
    if host in ("localhost", "::1", socket.gethostname()) or host.startswith("127."):
        return True
    return False


class SSHProvider(Provider):
    name = "ssh"
    engine_launcher_class = SSHEngineLauncher

    def __init__(self, profile) -> None:  # type: ignore[no-untyped-def]
        super().__init__(profile)
        self._host_of: dict[int, int] = {}  # engine id -> index into profile.ssh.hosts
        self._probed: set[int] = set()
        self._launchers: dict[str, SSHEngineLauncher] = {}

    # ------------------------------------------------------------ hosts

    def _hosts(self) -> tuple[SSHHost, ...]:
        hosts = self.profile.ssh.hosts
        if not hosts:
            raise PxpoolError(
                f"Profile {self.profile.name!r} ({self.profile.source}) lists no SSH hosts; "
                'give them as hosts=["user@node1:22", ...] or in [ssh] hosts of your profile.'
            )
        return hosts

    def default_engine_count(self) -> int:
        return self.profile.engines or sum(h.engines for h in self._hosts())

    @staticmethod
    def label(host: SSHHost) -> str:
        user = f"{host.user}@" if host.user else ""
        return f"{user}{host.host}:{host.port}"

    def ssh_argv(self, host: SSHHost) -> list[str]:
        """ssh, the profile's options, then pxpool's defaults (ssh keeps the first
        value of an option, so the profile's own win), then the destination."""
        settings = self.profile.ssh
        argv = shlex.split(settings.command or "ssh") + list(settings.options)
        if settings.identity_file:
            argv += ["-i", os.path.expanduser(settings.identity_file), "-o", "IdentitiesOnly=yes"]
        argv += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-T"]
        if host.port != 22:
            argv += ["-p", str(host.port)]
        return [*argv, f"{host.user}@{host.host}" if host.user else host.host]

    def remote_python(self, host: SSHHost) -> str:
        return host.python or self.profile.engine.python or "python3"

    def _setup_lines(self, host: SSHHost) -> list[str]:
        """cd, prologue and activation lines, and the profile's variables."""
        lines = []
        work_dir = host.work_dir or self.profile.engine.work_dir
        if work_dir:
            quoted = (
                '"$HOME"/' + shlex.quote(work_dir[2:])
                if work_dir.startswith("~/")
                else shlex.quote(work_dir)
            )
            lines.append(f"cd {quoted} || exit 71")
        lines += [*self.profile.engine.prologue, *host.activate]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.profile.engine.env.items()]
        return lines

    def _place(self, engine_id: int, live: set[int]) -> int:
        """The host for a new engine: its old host on restart, else the first host
        below its engine count, else the least loaded relative to its count."""
        if engine_id in self._host_of:
            return self._host_of[engine_id]
        hosts = self._hosts()
        load = [0] * len(hosts)
        for other in live:
            if other in self._host_of:
                load[self._host_of[other]] += 1
        for index, host in enumerate(hosts):
            if load[index] < host.engines:
                return index
        return min(range(len(hosts)), key=lambda i: (load[i] + 1) / max(hosts[i].engines, 1))

    # ------------------------------------------------------------ probe

    async def probe(self, index: int) -> None:
        """Log in once and compare the remote Python and ipyparallel with ours."""
        host = self._hosts()[index]
        label, python = self.label(host), self.remote_python(host)
        argv = self.ssh_argv(host)
        script = "\n".join(
            [
                "echo __pxpool_connected__",
                *self._setup_lines(host),
                f"exec {shlex.join([python, '-c', _PROBE_CODE])}",
            ]
        )
        code, out, err = await run_bounded([*argv, "--", remote_command(script)], PROBE_TIMEOUT)
        if "__pxpool_connected__" not in out:
            raise SSHConnectError(
                label,
                f"{shlex.join(argv)} true",
                code,
                err,
                f"Check the host, port, user and identity_file in profile {self.profile.name!r} "
                f"({self.profile.source}); pxpool logs in with BatchMode=yes (keys, no prompts).",
            )
        found = re.search(r"__pxpool_probe__(\{.*\})", out)
        local_version = sys.version.split()[0]
        versions = {"local_version": local_version, "local_ipyparallel": ipp.__version__}
        where = f"in profile {self.profile.name!r} ({self.profile.source})"
        if found is None:
            if code == 71:
                problem = f"cannot cd to the engine work_dir there: {err.strip()}"
            elif code in (126, 127):
                problem = (
                    f"python {python!r} is missing or not executable there ({err.strip()}). "
                    f"Set python for host {host.host} {where} to a full path; non-interactive "
                    "ssh has a bare PATH."
                )
            else:
                problem = f"python {python!r} failed there (exit {code}): {err.strip()[-300:]}"
            raise RemotePythonError(label, python, problem, output=out + err, **versions)
        import json

        remote = json.loads(found.group(1))
        rv, ripp = remote["python"], remote["ipyparallel"]
        same_python = rv.split(".")[:2] == local_version.split(".")[:2]
        if ripp is None or not same_python or ripp != ipp.__version__:
            have = f"ipyparallel {ripp}" if ripp else "no importable ipyparallel"
            raise RemotePythonError(
                label,
                python,
                f"{python} ({remote['executable']}) is Python {rv} with {have}; this client runs "
                f"Python {local_version} with ipyparallel {ipp.__version__}. Engines need the same "
                f"Python (major.minor) and ipyparallel version: install ipyparallel=="
                f"{ipp.__version__} there, or point python for host {host.host} {where} at a "
                "matching environment.",
                remote_version=rv,
                remote_ipyparallel=ripp,
                **versions,
            )
        if not _is_local(host.host) and _is_local(self.profile.controller.ip):
            log.warning(
                "pxpool: engines on %s connect to the controller at %s, which only this "
                "machine can reach; set controller_ip in profile %r to an address %s reaches.",
                label,
                self.profile.controller.ip,
                self.profile.name,
                host.host,
            )

    # ------------------------------------------------------------ engines

    def _engine_script(self, host: SSHHost, engine_id: int, cluster_id: str) -> str:
        argv = [
            self.remote_python(host),
            "-m",
            "ipyparallel.engine",
            f"--IPEngine.id={engine_id}",
            f"--cluster-id={cluster_id}",  # names the pool in the remote process list
            *self.profile.engine.args,
        ]
        return "\n".join(
            [
                'IPP_CONNECTION_INFO="$(cat)" || exit 70',
                "export IPP_CONNECTION_INFO",
                'echo "__pxpool_pid=$$__"',
                *self._setup_lines(host),
                f"exec {shlex.join(argv)} </dev/null 2>&1",
            ]
        )

    async def start_engines(
        self, cluster: ipp.Cluster, engine_ids: list[int]
    ) -> dict[str, list[int]]:
        hosts = self._hosts()
        live = {i for s in cluster.engines if s.startswith("ssh-") for i in [int(s[4:])]}
        for engine_id in engine_ids:
            self._host_of[engine_id] = self._place(engine_id, live)
            live.add(engine_id)
        await asyncio.gather(
            *(self.probe(i) for i in {self._host_of[e] for e in engine_ids} - self._probed)
        )
        self._probed.update(self._host_of[e] for e in engine_ids)
        started: dict[str, list[int]] = {}
        for engine_id in engine_ids:
            host = hosts[self._host_of[engine_id]]
            set_id = f"ssh-{engine_id}"
            await cluster.start_engines(
                1,
                engine_set_id=set_id,
                ssh_argv=self.ssh_argv(host),
                host_label=self.label(host),
                remote_script=self._engine_script(host, engine_id, cluster.cluster_id),
                remote_stop_timeout=self.profile.timeouts.stop,
                stop_seconds_until_kill=REMOTE_TERM_GRACE,
            )
            self._launchers[set_id] = cluster.engines[set_id]
            started[set_id] = [engine_id]
        await asyncio.gather(
            *(self._launchers[s].wait_remote_pid(self.profile.timeouts.start) for s in started)
        )
        cluster.update_cluster_file()  # remote pids, for `pxpool stop` from elsewhere
        return started

    async def release(self, cluster: ipp.Cluster | None) -> None:
        """Kill every remote engine still known, also when the controller died."""
        launchers = dict(self._launchers)
        if cluster is not None:
            launchers.update(
                (s, e) for s, e in cluster.engines.items() if isinstance(e, SSHEngineLauncher)
            )
        await asyncio.gather(*(e.kill_remote() for e in launchers.values()))
        for launcher in launchers.values():
            if launcher.process is not None and launcher.process.is_running():
                try:
                    launcher.process.send_signal(signal.SIGTERM)
                except psutil.Error:
                    pass
        self._launchers.clear()
