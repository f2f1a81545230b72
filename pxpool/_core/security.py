"""What keeps a pool private: signed messages always, CurveZMQ encryption on request.

ipyparallel signs every message with HMAC-SHA256 under a random per-pool key, and
refuses unsigned or wrongly signed ones. Turning on its CurveZMQ encryption
(``enable_curve``) also turns that key off ("redundant, CurveZMQ protects against
replays"); pxpool keeps it, because its own channels (the remote debugger) and any
code that trusts the connection file's key rely on signatures. The key goes into the
controller's config file in the pool's private directory (mode 0600), never on a
command line where ``ps`` would show it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ..profile import ControllerSettings

CONFIG_FILE = "ipcontroller_config.py"


def prepare_profile_dir(directory: Path, settings: ControllerSettings) -> None:
    """Write the controller's config: encryption and the key together, so the key is
    in place when ipyparallel decides whether to drop it (a command-line
    ``enable_curve`` is applied before config files are read, and drops it)."""
    if not settings.encrypt:
        return
    key = secrets.token_hex(32)
    path = directory / CONFIG_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"c.Session.key = b{key!r}\nc.IPController.enable_curve = True\n")
