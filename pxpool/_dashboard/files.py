"""The files a pool's process and the Jupyter server exchange, in the pool's directory.

``RUNTIME/NAME/dashboard/`` holds:

``state.json``
    what the page shows, written by the pool's process (atomically, 0600)
``want``
    touched by the server while a page is open: the process publishes only then
``publisher.lock``
    held (``flock``) by the one process that publishes, when several attached the pool
``requests/ID.request.json``, ``requests/ID.reply.json``
    an action the page asked for, and its outcome

Everything sits under the pool's 0700 directory, so only its owner reads or writes
here: the same trust as the pool's connection files, which already let their reader run
code on the engines.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from .._core import runtime

__all__ = [
    "dashboard_dir",
    "post_request",
    "read_reply",
    "read_state",
    "take_requests",
    "touch_want",
    "wanted",
    "write_reply",
    "write_state",
]

DIRECTORY = "dashboard"
STATE = "state.json"
WANT = "want"
LOCK = "publisher.lock"
REQUESTS = "requests"
_ID = re.compile(r"^[0-9a-f]{16}$")


def dashboard_dir(name: str, create: bool = False) -> Path | None:
    """The pool's dashboard directory; None when the pool has no directory (stopped)."""
    pool = runtime.pool_dir(name)
    if not pool.is_dir():
        return None
    path = pool / DIRECTORY
    if create:
        try:  # never parents=True: a pool directory removed by a stop stays removed
            path.mkdir(mode=0o700, exist_ok=True)
            (path / REQUESTS).mkdir(mode=0o700, exist_ok=True)
        except FileNotFoundError:
            return None
    return path


def touch_want(name: str) -> bool:
    """A page is open: ask the pool's process to publish. False: no such pool."""
    path = dashboard_dir(name, create=True)
    if path is None:
        return False
    want = path / WANT
    fd = os.open(want, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.utime(want)
    return True


def wanted(path: Path, within: float) -> bool:
    """Whether a page asked for the pool within the last ``within`` seconds."""
    try:
        return time.time() - (path / WANT).stat().st_mtime < within
    except OSError:
        return False


def write_state(path: Path, state: dict[str, Any]) -> None:
    runtime.write_private_json(path / STATE, state)


def read_state(name: str) -> dict[str, Any] | None:
    path = dashboard_dir(name)
    if path is None:
        return None
    try:
        state: dict[str, Any] = json.loads((path / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state


def post_request(name: str, request: dict[str, Any]) -> str | None:
    """Queue an action for the pool's process; its id (None: no such pool)."""
    path = dashboard_dir(name, create=True)
    if path is None:
        return None
    request_id = secrets.token_hex(8)
    runtime.write_private_json(path / REQUESTS / f"{request_id}.request.json", request)
    return request_id


def take_requests(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The actions queued, oldest first, each removed as it is taken."""
    found = []
    for item in sorted((path / REQUESTS).glob("*.request.json"), key=_mtime):
        request_id = item.name.split(".", 1)[0]
        try:
            request = json.loads(item.read_text())
            item.unlink()
        except (OSError, ValueError):
            continue
        if _ID.match(request_id) and isinstance(request, dict):
            found.append((request_id, request))
    return found


def write_reply(path: Path, request_id: str, reply: dict[str, Any]) -> None:
    runtime.write_private_json(path / REQUESTS / f"{request_id}.reply.json", reply)


def read_reply(name: str, request_id: str) -> dict[str, Any] | None:
    """The outcome of a request, once (the file is removed); None while it runs."""
    path = dashboard_dir(name)
    if path is None or not _ID.match(request_id):
        return None
    item = path / REQUESTS / f"{request_id}.reply.json"
    try:
        reply: dict[str, Any] = json.loads(item.read_text())
        item.unlink()
    except (OSError, ValueError):
        return None
    return reply


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
