"""Which engines run on this host: they can share memory with the client.

Each engine reports its hostname once (:func:`pxpool._data.agent.engine_host`); the
answer is cached by the engine's uuid, so a restarted engine, which registers under a
new uuid, is asked again.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from . import agent

if TYPE_CHECKING:
    from .._core.core import PoolCore

__all__ = ["local_engines"]

HOST_TIMEOUT = 30.0  # seconds for engines to report their hostname
_hosts: dict[str, str] = {}  # engine uuid -> hostname


def local_engines(pool: PoolCore, ids: list[int]) -> set[int]:
    """The engines among ``ids`` that run on this host (their reported hostname is ours)."""
    known = pool.engine_uuids()
    uuids = {i: str(known.get(i)) for i in ids}
    missing = [i for i in ids if uuids[i] not in _hosts]
    if missing:
        replies = pool.live_client().direct_view(missing).apply_async(agent.engine_host)
        for engine_id, host in zip(missing, replies.get(timeout=HOST_TIMEOUT), strict=True):
            _hosts[uuids[engine_id]] = host
    here = socket.gethostname()
    return {i for i in ids if _hosts[uuids[i]] == here}
