"""Reverse SSH tunnels from an engine's host to the controller.

Each engine's own ssh client opens one ``-R`` forward per controller port the
engine connects to, from a loopback port on the engine's host. The engine then
gets a connection info whose interface is ``tcp://127.0.0.1`` and whose ports are
those remote ports: ipyparallel's engine builds every channel's URL from its
connection info, so rewriting the info is all the engine needs.

Remote ports are picked at random from :data:`PORT_RANGE` (below Linux's ephemeral
range), never the controller's own ports (the "remote" host may be this machine)
nor ports another engine of the pool holds on that host. ssh runs with
``ExitOnForwardFailure=yes``, so a port taken on the host ends ssh at once with
the port in its message; the provider then retries with new ports.
"""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Iterable
from typing import Any

from ..errors import EngineStartError

__all__ = [
    "PORT_RANGE",
    "ATTEMPTS",
    "controller_ports",
    "choose_ports",
    "tunnel_info",
    "forward_options",
    "failed_forward_port",
    "is_local_host",
]

PORT_RANGE = (20000, 32000)  # [low, high): below the ephemeral ports of Linux (32768+)
ATTEMPTS = 3  # ssh starts per engine before a taken port is an error
LOOPBACK = "127.0.0.1"
_FAILED = re.compile(r"remote port forwarding failed for listen port (\d+)")


def controller_ports(info: dict[str, Any]) -> list[int]:
    """Every port in an engine connection info, in file order (broadcast is a list).

    Any integer field is a channel port (registration, control, mux, task, iopub,
    hb_ping, hb_pong, broadcast...), so channels a later ipyparallel adds are
    tunnelled too."""
    ports: list[int] = []
    for value in info.values():
        values = value if isinstance(value, list) else [value]
        ports += [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return list(dict.fromkeys(ports))


def is_local_host(host: str) -> bool:
    """Whether ``host`` names this machine (then its loopback is ours too)."""
    return host in ("localhost", "::1", socket.gethostname()) or host.startswith("127.")


def _free_here(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def choose_ports(count: int, avoid: Iterable[int], host_is_here: bool) -> list[int]:
    """``count`` distinct ports from :data:`PORT_RANGE`, none in ``avoid``; when the
    engine's host is this machine, only ports free here right now."""
    low, high = PORT_RANGE
    taken = set(avoid)
    avoided = len(taken)
    chosen: list[int] = []
    candidates = random.sample(range(low, high), min(high - low, count * 20 + len(taken)))
    for port in candidates:
        if port in taken or (host_is_here and not _free_here(port)):
            continue
        chosen.append(port)
        taken.add(port)
        if len(chosen) == count:
            return chosen
    raise EngineStartError(
        f"No {count} free ports for an engine's SSH tunnel in {low}-{high - 1} "
        f"({high - low} ports; {avoided} in use by this pool or found taken). "
        "Stop other pools on that host, or "
        "set tunnel = false in [ssh] of the profile and a controller_ip the host reaches."
    )


def controller_host(info: dict[str, Any]) -> str:
    """Where the ssh client on this machine reaches the controller."""
    host = str(info.get("interface", "")).split("://", 1)[-1]
    return LOOPBACK if host in ("", "*", "0.0.0.0") else host


def tunnel_info(info: dict[str, Any], forwards: list[tuple[int, int]]) -> dict[str, Any]:
    """The connection info an engine behind the tunnel uses: loopback, remote ports."""
    remote_of = {controller: remote for remote, controller in forwards}

    def swap(value: Any) -> Any:
        if isinstance(value, list):
            return [swap(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool):
            return remote_of[value]
        return value

    tunnelled = {key: swap(value) for key, value in info.items()}
    tunnelled["interface"] = f"tcp://{LOOPBACK}"
    tunnelled["ssh"] = ""  # the tunnel is ours; the engine must not open its own
    return tunnelled


def forward_options(info: dict[str, Any], forwards: list[tuple[int, int]]) -> list[str]:
    """ssh options that open the forwards and end ssh if any of them cannot."""
    host = controller_host(info)
    options = ["-o", "ExitOnForwardFailure=yes"]
    for remote, controller in forwards:
        options += ["-R", f"{LOOPBACK}:{remote}:{host}:{controller}"]
    return options


def failed_forward_port(output: str) -> int | None:
    """The remote port ssh could not listen on, from its output; None if none failed."""
    found = _FAILED.search(output)
    return int(found.group(1)) if found else None
