"""Engine-side networking shared by pxpool's agents on engines (debugger, health)."""

from __future__ import annotations

import socket


def local_address(controller_ip: str) -> str:
    """The address this host uses to reach the controller: the engines' interface, so
    an agent's socket is reachable exactly where the engine's own sockets are."""
    if controller_ip.startswith("127.") or controller_ip == "localhost":
        return controller_ip
    if controller_ip in ("*", "0.0.0.0", ""):
        return socket.gethostbyname(socket.gethostname())
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((controller_ip, 9))  # no packet is sent for UDP connect
        return str(probe.getsockname()[0])
    finally:
        probe.close()
