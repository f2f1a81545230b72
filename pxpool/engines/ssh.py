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

Reaching the controller: with ``[ssh] tunnel = true`` (the default) the controller
keeps listening on loopback and each engine's own ssh client opens reverse forwards
(``-R``) from loopback ports on the engine's host to every controller port; the
engine is told ``tcp://127.0.0.1`` and those ports (see :mod:`._ssh_tunnel`). Each
client has its own ports, so one engine restarts alone; a port already taken on the
host ends ssh at once (``ExitOnForwardFailure``) and the engine is started again on
new ports, at most ``_ssh_tunnel.ATTEMPTS`` times, then :class:`SSHConnectError`
names the port. pxpool's health agent and debugger then listen on the engine host's
loopback; for a host that is not this machine the client reaches each of them through
a local forward (``ssh -N -L``) with the same ssh options (see :mod:`._ssh_reach`),
closed when the engine stops or is replaced and when the pool stops.

With ``tunnel = false`` engines connect straight to ``[controller] ip`` (127.0.0.1
by default), which works for hosts that are this machine; for other hosts set
``controller_ip`` to an address they reach (e.g. ``"0.0.0.0"`` on a trusted
network). pxpool warns when a non-local host meets a loopback controller without
tunnels.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import signal
import sys
import time
from typing import Any

import ipyparallel as ipp
import psutil

from .._core.cluster import PxCluster
from .._core.hold import STARTUP_ARG
from ..errors import EngineStartError, ProfileError
from ..profile import Profile, SSHHost
from . import _ssh_fork, _ssh_tunnel
from ._ssh_launcher import REMOTE_TERM_GRACE, SSHEngineLauncher, remote_command, run_bounded
from ._ssh_tunnel import choose_ports, controller_ports, failed_forward_port, is_local_host
from .base import ENGINE_MODULE, Provider
from .errors import RemotePythonError, SSHConnectError

__all__ = ["SSHProvider", "SSHEngineLauncher"]

log = logging.getLogger("pxpool.engines.ssh")
PROBE_TIMEOUT = 15.0  # connect (ConnectTimeout) + log in + start python
CONNECT_TIMEOUT = 5
_PROBE_CODE = (
    "import json, sys\n"
    "try:\n    import ipyparallel; v = ipyparallel.__version__\n"
    "except Exception as e:\n    v = None\n"
    "import importlib.util\n"
    "try:\n    px = importlib.util.find_spec('pxpool._entry.engine_main') is not None\n"
    "    fork = importlib.util.find_spec('pxpool._entry.forkserver.stand_in') is not None\n"
    "except Exception:\n    px = fork = False\n"
    "print('__pxpool_probe__' + json.dumps("
    "{'python': sys.version.split()[0], 'ipyparallel': v, 'pxpool': px, 'fork': fork, "
    "'executable': sys.executable}))\n"
)


class SSHProvider(Provider):
    name = "ssh"
    engine_launcher_class = SSHEngineLauncher

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self._host_of: dict[int, int] = {}  # engine id -> index into profile.ssh.hosts
        self._probed: set[int] = set()
        self._launchers: dict[str, SSHEngineLauncher] = {}
        self._forking: dict[int, bool] = {}  # host index -> engines fork from a server there

    # ------------------------------------------------------------ hosts

    def _hosts(self) -> tuple[SSHHost, ...]:
        hosts = self.profile.ssh.hosts
        if not hosts:
            raise ProfileError(
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
        if found is None:
            raise self._python_failed(host, code, out, err)
        remote = json.loads(found.group(1))
        self._check_remote(host, remote)
        self._forking[index] = bool(remote.get("fork")) and self.profile.engine.fork_server
        if not self.profile.ssh.tunnel:
            self._warn_unreachable_controller(host)

    def _local_versions(self) -> dict[str, str]:
        return {"local_version": sys.version.split()[0], "local_ipyparallel": ipp.__version__}

    def _where(self) -> str:
        return f"in profile {self.profile.name!r} ({self.profile.source})"

    def _python_failed(
        self, host: SSHHost, code: int | None, out: str, err: str
    ) -> RemotePythonError:
        """The probe logged in but its python printed no versions: why, as an error."""
        python = self.remote_python(host)
        if code == 71:
            problem = f"cannot cd to the engine work_dir there: {err.strip()}"
        elif code in (126, 127):
            problem = (
                f"python {python!r} is missing or not executable there ({err.strip()}). "
                f"Set python for host {host.host} {self._where()} to a full path; "
                "non-interactive ssh has a bare PATH."
            )
        else:
            problem = f"python {python!r} failed there (exit {code}): {err.strip()[-300:]}"
        return RemotePythonError(
            self.label(host), python, problem, output=out + err, **self._local_versions()
        )

    def _check_remote(self, host: SSHHost, remote: dict[str, Any]) -> None:
        """Raise RemotePythonError unless the remote python matches ours (major.minor and
        ipyparallel version) and can import pxpool."""
        label, python = self.label(host), self.remote_python(host)
        local_version = sys.version.split()[0]
        rv, ripp = remote["python"], remote["ipyparallel"]
        same_python = rv.split(".")[:2] == local_version.split(".")[:2]
        found = {"remote_version": rv, "remote_ipyparallel": ripp, **self._local_versions()}
        if ripp is None or not same_python or ripp != ipp.__version__:
            have = f"ipyparallel {ripp}" if ripp else "no importable ipyparallel"
            raise RemotePythonError(
                label,
                python,
                f"{python} ({remote['executable']}) is Python {rv} with {have}; this client runs "
                f"Python {local_version} with ipyparallel {ipp.__version__}. Engines need the same "
                f"Python (major.minor) and ipyparallel version: install ipyparallel=="
                f"{ipp.__version__} there, or point python for host {host.host} {self._where()} "
                "at a matching environment.",
                **found,
            )
        if not remote.get("pxpool", True):
            raise RemotePythonError(
                label,
                python,
                f"{python} ({remote['executable']}) cannot import pxpool, which runs each "
                f"engine ({ENGINE_MODULE}) and its health agent: install pxpool there, or "
                f"point python for host {host.host} {self._where()} at an environment that has it.",
                **found,
            )

    def _warn_unreachable_controller(self, host: SSHHost) -> None:
        """Without tunnels, engines on another host cannot reach a loopback controller."""
        if not is_local_host(host.host) and is_local_host(self.profile.controller.ip):
            log.warning(
                "pxpool: engines on %s connect to the controller at %s, which only this "
                "machine can reach; set tunnel = true, or controller_ip in profile %r to an "
                "address %s reaches.",
                self.label(host),
                self.profile.controller.ip,
                self.profile.name,
                host.host,
            )

    # ------------------------------------------------------------ engines

    def _engine_script(self, host: SSHHost, engine_id: int, cluster_id: str) -> str:
        forking = self._forking.get(self._host_of.get(engine_id, -1), False)
        argv = [
            *_ssh_fork.engine_command(self.remote_python(host), self.profile, cluster_id, forking),
            f"--IPEngine.id={engine_id}",
            f"--cluster-id={cluster_id}",  # names the pool in the remote process list
            *([STARTUP_ARG] if self.hold_engines else []),  # joins a running pool: held
            *self.profile.engine.args,
        ]
        return "\n".join(
            [
                'IPP_CONNECTION_INFO="$(cat)" && [ -n "$IPP_CONNECTION_INFO" ] || exit 70',
                "export IPP_CONNECTION_INFO",
                'echo "__pxpool_pid=$$__"',
                *self._setup_lines(host),
                f"exec {shlex.join(argv)} </dev/null 2>&1",
            ]
        )

    async def start_engines(
        self, cluster: PxCluster, engine_ids: list[int]
    ) -> dict[str, list[int]]:
        live = {i for s in cluster.engines if s.startswith("ssh-") for i in [int(s[4:])]}
        for engine_id in engine_ids:
            self._host_of[engine_id] = self._place(engine_id, live)
            live.add(engine_id)
        await asyncio.gather(
            *(self.probe(i) for i in {self._host_of[e] for e in engine_ids} - self._probed)
        )
        self._probed.update(self._host_of[e] for e in engine_ids)
        # all engines start side by side; none is left starting when one fails
        results = await asyncio.gather(
            *(self._start_engine(cluster, e) for e in engine_ids), return_exceptions=True
        )
        cluster.update_cluster_file()  # remote pids, for `pxpool stop` from elsewhere
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return {f"ssh-{e}": [e] for e in engine_ids}

    async def _start_engine(self, cluster: PxCluster, engine_id: int) -> None:
        """Start one engine; with tunnels, again on new ports while one is taken."""
        host = self._hosts()[self._host_of[engine_id]]
        set_id = f"ssh-{engine_id}"
        taken: set[int] = set()
        output = ""
        for _attempt in range(_ssh_tunnel.ATTEMPTS if self.profile.ssh.tunnel else 1):
            forwards = self._plan_forwards(cluster, host, set_id, taken)
            await cluster.start_engines(
                1,
                engine_set_id=set_id,
                ssh_argv=self.ssh_argv(host),
                host_label=self.label(host),
                remote_script=self._engine_script(host, engine_id, cluster.cluster_id),
                remote_stop_timeout=self.profile.timeouts.stop,
                stop_seconds_until_kill=REMOTE_TERM_GRACE,
                tunnel_forwards=[list(pair) for pair in forwards],
            )
            launcher = self._launchers[set_id] = cluster.engines[set_id]
            try:
                await launcher.wait_remote_pid(self.profile.timeouts.start)
                return
            except EngineStartError:
                output = launcher.output_since_start()
                port = failed_forward_port(output) if forwards else None
                if port is None:
                    raise
                log.info("pxpool: port %s taken on %s; new ports for %s", port, host.host, set_id)
                taken.add(port)
                await self._discard(cluster, set_id, launcher)
        low, high = _ssh_tunnel.PORT_RANGE
        raise SSHConnectError(
            self.label(host),
            shlex.join(launcher.args[:-2]),
            255,
            output,
            f"sshd on {host.host} did not open remote port {port} for the tunnel to the "
            f"controller, nor other ports on {_ssh_tunnel.ATTEMPTS} tries from {low}-"
            f"{high - 1}: they are taken there, or its sshd does not allow TCP forwarding "
            f"(AllowTcpForwarding). Free ports in that range on {host.host}, or set tunnel = "
            f"false in [ssh] of profile {self.profile.name!r} ({self.profile.source}) and a "
            "controller_ip the host reaches.",
        )

    def _plan_forwards(
        self, cluster: PxCluster, host: SSHHost, set_id: str, taken: set[int]
    ) -> list[tuple[int, int]]:
        """[(remote port, controller port)] for one engine's ssh; [] without tunnels."""
        if not self.profile.ssh.tunnel:
            return []
        security = os.path.join(cluster.profile_dir, "security")
        with open(os.path.join(security, f"ipcontroller-{cluster.cluster_id}-engine.json")) as f:
            ports = controller_ports(json.loads(f.read()))
        label = self.label(host)
        in_use = {  # held by the pool's other engines on this host
            remote
            for other, launcher in cluster.engines.items()
            if other != set_id
            and isinstance(launcher, SSHEngineLauncher)
            and launcher.host_label == label
            and launcher.state != "after"  # starting ones too
            for remote, _ in launcher.tunnel_forwards
        }
        remote = choose_ports(len(ports), taken | in_use | set(ports), is_local_host(host.host))
        return list(zip(remote, ports, strict=True))

    async def _discard(self, cluster: PxCluster, set_id: str, launcher: SSHEngineLauncher) -> None:
        """Forget a launcher whose ssh failed on purpose-known grounds (no death report)."""
        expect_exit = getattr(cluster, "expect_exit", None)
        if expect_exit is not None:
            expect_exit(set_id)
        deadline = time.monotonic() + 5.0
        while launcher.state == "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # ssh exited; its stop report comes on the loop
        if cluster.engines.get(set_id) is launcher:
            cluster.engines.pop(set_id)
        self._launchers.pop(set_id, None)

    async def release(self, cluster: PxCluster | None) -> None:
        """Kill every remote engine still known, also when the controller died."""
        launchers = dict(self._launchers)
        if cluster is not None:
            launchers.update(
                (s, e) for s, e in cluster.engines.items() if isinstance(e, SSHEngineLauncher)
            )
        for launcher in launchers.values():
            launcher.close_agent_forwards()
        await asyncio.gather(*(e.kill_remote() for e in launchers.values()))
        for launcher in launchers.values():
            if launcher.process is not None and launcher.process.is_running():
                try:
                    launcher.process.send_signal(signal.SIGTERM)
                except psutil.Error:
                    pass
        self._launchers.clear()
        hosts = [self._hosts()[i] for i, on in self._forking.items() if on]
        if hosts and cluster is not None:
            servers = [(self.ssh_argv(h), self.remote_python(h)) for h in hosts]
            await _ssh_fork.stop_servers(servers, str(cluster.cluster_id))
