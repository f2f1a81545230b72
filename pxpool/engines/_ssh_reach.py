"""Local SSH forwards to the agents on tunnelled SSH engines.

With ``[ssh] tunnel = true`` an engine reaches the controller through its ssh
client's reverse forwards, and pxpool's agents on it (health reports, debugger)
listen on its host's loopback (:func:`pxpool._entry.net.local_address`). When that
host is another machine the client reaches an agent through one more ssh per agent:
``ssh -N -o ExitOnForwardFailure=yes -L 127.0.0.1:LOCAL:ADDRESS:PORT host``, run
with the engine's own ssh argv (the profile's command, options, identity, user and
port), and connects to ``127.0.0.1:LOCAL``. :func:`reach` is the identity for every
other engine, so the agents' client code does not ask which case it is in.

A forward belongs to the engine's launcher: it is closed when that engine stops,
dies or is replaced, and when the pool stops. Forwards carry the pool's
``IPP_PROFILE_DIR`` in their environment, so the pool's final sweep (also from
``pxpool stop`` in another process) finds any that outlived their owner, and the
process that opened them closes what is left when it exits.
"""

from __future__ import annotations

import atexit
import os
import shlex
import socket
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import psutil

from ._ssh_launcher import SSHEngineLauncher
from ._ssh_tunnel import LOOPBACK, is_local_host
from .errors import SSHConnectError

if TYPE_CHECKING:
    from .._core.cluster import PxCluster
    from .._core.core import PoolCore

__all__ = ["reach", "reach_url", "Forward", "open_forward"]

OPEN_TIMEOUT = 15.0  # ssh connects (ConnectTimeout), logs in and listens
CLOSE_TIMEOUT = 2.0
ATTEMPTS = 3  # local ports tried when the one picked was taken meanwhile
_LOCK = threading.Lock()
_OPEN: set[Forward] = set()  # every forward this process opened and did not close


class Forward:
    """One ``ssh -N -L`` process: ``127.0.0.1:local_port`` here -> ``target`` there."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        local_port: int,
        target: tuple[str, int],
        log_path: str,
    ) -> None:
        self.process = process
        self.local_port = local_port
        self.target = target
        self.log_path = log_path  # ssh's output

    def __repr__(self) -> str:
        return f"<Forward 127.0.0.1:{self.local_port} -> {self.target} pid={self.process.pid}>"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """End the ssh process (SIGTERM, then SIGKILL), bounded."""
        with _LOCK:
            _OPEN.discard(self)
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            try:
                self.process.wait(CLOSE_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.remove(self.log_path)
        except OSError:
            pass


def reach(core: PoolCore, engine_id: int, address: tuple[str, int]) -> tuple[str, int]:
    """Where this process connects to an agent of ``engine_id`` listening at
    ``address`` on the engine's host: ``address`` itself, or the local end of a
    forward to it (opened on first use) for a tunnelled engine on another host."""
    cluster = core.cluster
    launcher = None if cluster is None else _tunnelled_launcher(cluster, core, engine_id)
    if cluster is None or launcher is None:
        return address
    with _LOCK:
        for known in launcher.agent_forwards:
            if known.target == address and known.alive:
                return (LOOPBACK, known.local_port)
    profile_dir = str(cluster.profile_dir)
    forward = open_forward(
        list(launcher.ssh_argv),
        address,
        launcher.host_label,
        {"IPP_PROFILE_DIR": profile_dir},
        os.path.join(profile_dir, "log"),
    )
    with _LOCK:
        launcher.agent_forwards.append(forward)
    if launcher.state == "after":  # the engine stopped meanwhile: its forwards are closed
        forward.close()
    return (LOOPBACK, forward.local_port)


def reach_url(core: PoolCore, engine_id: int, url: str) -> str:
    """:func:`reach` for a zmq URL such as ``tcp://127.0.0.1:4321``."""
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    local_host, local_port = reach(core, engine_id, (host, int(port)))
    return f"{scheme}://{local_host}:{local_port}"


def _tunnelled_launcher(
    cluster: PxCluster, core: PoolCore, engine_id: int
) -> SSHEngineLauncher | None:
    """The SSH launcher of ``engine_id`` when its agents need a forward, else None."""
    for set_id, ids in list(core.engine_sets.items()):
        if engine_id in ids:
            launcher = cluster.engines.get(set_id)
            break
    else:
        return None
    if not isinstance(launcher, SSHEngineLauncher) or not launcher.tunnel_forwards:
        return None
    host = launcher.host_label.rpartition(":")[0].rpartition("@")[2]
    return None if is_local_host(host) else launcher


def _free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _listening(pid: int, port: int) -> bool:
    try:
        connections = psutil.Process(pid).net_connections("tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def open_forward(
    ssh_argv: list[str],
    target: tuple[str, int],
    label: str,
    env: dict[str, str],
    log_dir: str,
    timeout: float = OPEN_TIMEOUT,
) -> Forward:
    """Start ``ssh -N -L`` to ``target`` on the host of ``ssh_argv`` (whose last item
    is the destination) and wait, bounded, until it listens here."""
    *options, destination = ssh_argv
    os.makedirs(log_dir, exist_ok=True)
    output = ""
    for _attempt in range(ATTEMPTS):
        local = _free_local_port()
        spec = f"{LOOPBACK}:{local}:{target[0]}:{target[1]}"
        argv = [*options, "-N", "-o", "ExitOnForwardFailure=yes", "-L", spec, destination]
        log_path = os.path.join(log_dir, f"forward-{local}.log")
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
            )
        forward = Forward(process, local, target, log_path)
        with _LOCK:
            _OPEN.add(forward)
        deadline = time.monotonic() + timeout
        while forward.alive and not _listening(process.pid, local):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if forward.alive and _listening(process.pid, local):
            return forward
        timed_out = forward.alive
        with open(log_path, errors="replace") as handle:
            output = handle.read()
        forward.close()
        if timed_out or "local forwarding" not in output and "already in use" not in output:
            raise SSHConnectError(
                label,
                shlex.join(argv),
                None if timed_out else process.returncode,
                output,
                f"pxpool forwards a local port to the agent at {target[0]}:{target[1]} on the "
                f"engine's host (health reports, debugger); the engine itself runs. Check that "
                f"the host's sshd allows TCP forwarding (AllowTcpForwarding), or set tunnel = "
                "false in [ssh] of the profile and a controller_ip the host reaches.",
            )
    raise SSHConnectError(
        label,
        shlex.join(argv),
        process.returncode,
        output,
        f"No free local port for a forward to {target[0]}:{target[1]} after {ATTEMPTS} tries.",
    )


@atexit.register
def _close_all() -> None:
    """Forwards serve only this process: none outlives it."""
    with _LOCK:
        forwards = list(_OPEN)
    for forward in forwards:
        forward.close()
