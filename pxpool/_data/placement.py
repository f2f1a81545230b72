"""Which engines share memory with the client: only those may take shared-memory paths.

Each engine reports once which shared memory it sees (:func:`pxpool._data.agent.engine_shm`:
the kernel's boot id and the device of its ``/dev/shm``), and it is compared with the
client's own. A host name would not do: hosts with a ``/dev/shm`` of their own (a
container, a network namespace with its own mounts) can carry the client's host name, and
different machines can share a name. The answer is cached by the engine's uuid, so a
restarted engine, which registers under a new uuid, is asked again.

Those engines may also read the client's arrays directly (:mod:`pxpool._data.direct`),
which each of them is asked once as well (:func:`readers`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import agent, direct, shm

if TYPE_CHECKING:
    from .._core.core import PoolCore

__all__ = ["local_engines", "readers"]

SHM_TIMEOUT = 30.0  # seconds for engines to report their shared memory
_seen: dict[str, Any] = {}  # engine uuid -> the shared memory it sees
_reads: dict[str, Any] = {}  # engine uuid -> whether it reads this process's memory


def local_engines(pool: PoolCore, ids: list[int]) -> set[int]:
    """The engines among ``ids`` that see the client's shared memory."""
    here = shm.identity()
    if not here:
        return set()
    seen = _asked_once(pool, ids, _seen, agent.engine_shm)
    return {i for i in ids if seen[i] == here}


def readers(pool: PoolCore, ids: list[int]) -> set[int]:
    """The engines among ``ids`` (which share memory with the client) that read the
    client's memory too (:func:`pxpool._data.direct.reads`)."""
    if not direct.available():
        return set()
    reads = _asked_once(pool, ids, _reads, agent.engine_reads, *direct.marker())
    return {i for i in ids if reads[i] is True}


def _asked_once(
    pool: PoolCore,
    ids: list[int],
    answers: dict[str, Any],
    question: Callable[..., Any],
    *args: Any,
) -> dict[int, Any]:
    """Each engine's answer to ``question(*args)``, asked only of engines whose uuid has
    no answer in ``answers`` yet (a replaced engine has a new uuid)."""
    known = pool.engine_uuids()
    uuids = {i: str(known.get(i)) for i in ids}
    missing = [i for i in ids if uuids[i] not in answers]
    if missing:
        replies = pool.live_client().direct_view(missing).apply_async(question, *args)
        for engine_id, answer in zip(missing, replies.get(timeout=SHM_TIMEOUT), strict=True):
            answers[uuids[engine_id]] = answer
    return {i: answers[uuids[i]] for i in ids}
