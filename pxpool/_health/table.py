"""A per-engine table (id, host, pid, state, tasks done) for `pxpool status` and the demo.

It asks the hub for queue counts (answered even while engines are busy) and the
engines themselves for host and pid with a short timeout, so a busy or hung engine
shows up as busy with what is known rather than blocking the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ipyparallel as ipp

WHOAMI_TIMEOUT = 2.0


def _whoami() -> tuple[str, int]:
    import os
    import socket

    return socket.gethostname(), os.getpid()


def engine_table(client: ipp.Client) -> list[dict[str, Any]]:
    ids = sorted(client.ids)
    if not ids:
        return []
    queues = client.queue_status(targets=ids)
    where: dict[int, tuple[str, int]] = {}
    replies = {i: client.direct_view(i).apply_async(_whoami) for i in ids}
    for engine_id, reply in replies.items():
        try:
            where[engine_id] = reply.get(timeout=WHOAMI_TIMEOUT)
        except Exception:
            continue
    rows = []
    for engine_id in ids:
        counts = queues.get(engine_id, {})
        pending = int(counts.get("queue", 0)) + int(counts.get("tasks", 0))
        host, pid = where.get(engine_id, ("?", -1))
        rows.append(
            {
                "engine": engine_id,
                "host": host,
                "pid": pid,
                "state": "busy" if pending or engine_id not in where else "idle",
                "tasks_done": int(counts.get("completed", 0)),
            }
        )
    return rows
