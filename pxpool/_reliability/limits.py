"""The engine hook that applies a profile's per-engine limits inside each engine.

- ``[engine] max_result_size``: results larger than it are refused on the engine
  (:mod:`pxpool._reliability.result_limit`).
- ``[engine] memory_limit`` on engines that no memory cgroup confines (no writable
  cgroup here, or engines on other machines): an address-space limit
  (``RLIMIT_AS``) set with :mod:`resource` inside the engine. Past it an allocation
  fails with ``MemoryError`` instead of the kernel killing the engine, so the engine
  stays usable and the error's message names the limit. The address space counts
  every mapping (thread stacks, allocator arenas), not only memory in use: give it
  more room than the resident size the work needs.
- Under either memory limit, engines give freed memory back at once rather than keep it
  for reuse while busy (:mod:`pxpool._entry.heap`): kept memory would count against it.

One apply per engine when it joins (start, scale, restart, replacement), before the
hooks added later (health, user hooks) run.
"""

from __future__ import annotations

import resource
from typing import TYPE_CHECKING, Any

from .._entry import heap
from ..engines import cgroups as _memory_limit
from . import result_limit

if TYPE_CHECKING:
    from .._core.core import PoolCore

INSTALL_TIMEOUT = 30.0  # seconds for an engine to apply its limits
_memory: tuple[int, str] | None = None  # on an engine: (bytes, how the profile says it)
MEMORY_MARK = "_pxpool_memory"  # attribute of the kernel's do_apply once it names the limit


def named_memory_error(engine_id: int, evalue: str) -> str:
    """A MemoryError's message on an engine, naming the address-space limit in force
    (unchanged where none is). The task lane's agent uses it too."""
    if _memory is None:
        return evalue
    limit, described = _memory
    said = f"{evalue}; " if evalue else ""
    return (
        f"{said}engine {engine_id} reached its address-space limit of "
        f"{result_limit.human_size(limit)} ({limit} bytes) set by {described}. "
        "Use less memory per task, or raise memory_limit in the profile."
    )


def _named_memory_errors(kernel: Any) -> None:
    """A task's MemoryError under an address-space limit says which limit it hit."""
    original = kernel.do_apply
    if getattr(original, MEMORY_MARK, False):
        return

    def do_apply(*args: Any) -> Any:
        reply, buffers = original(*args)
        if reply.get("ename") == "MemoryError":
            reply["evalue"] = named_memory_error(kernel.engine_id, reply.get("evalue") or "")
        return reply, buffers

    setattr(do_apply, MEMORY_MARK, True)
    kernel.do_apply = do_apply


def install(
    memory: tuple[int, str] | None, result: tuple[int, str], limited: bool = False
) -> dict[str, Any]:
    """On an engine: apply the limits (idempotent); returns what is in force.
    ``limited``: a memory limit applies (here or by a cgroup), so freed memory is not
    kept for reuse (:mod:`pxpool._entry.heap`)."""
    global _memory
    from IPython.core.getipython import get_ipython

    if limited:
        heap.give_back_freed_memory()
    if memory is not None:
        limit = memory[0]
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        _memory = (limit, memory[1])
        _named_memory_errors(get_ipython().kernel)
    result_limit.limit_results(*result)
    return {
        "address_space": resource.getrlimit(resource.RLIMIT_AS)[0],
        "max_result": result[0],
    }


def apply_engine_limits(pool: PoolCore, engine_ids: list[int]) -> None:
    """Engine hook: limit results, and memory where no cgroup does (one apply each)."""
    engine = pool.profile.engine
    where = f"in profile {pool.profile.name!r}"
    result = (
        engine.max_result_bytes,
        f"[engine] max_result_size = {engine.max_result_size!r} {where}",
    )
    memory = None
    if engine.memory_limit_bytes:
        memory = (
            engine.memory_limit_bytes,
            f"[engine] memory_limit = {engine.memory_limit!r} {where}",
        )
    if memory is None and not engine.max_result_bytes:
        return  # nothing to limit
    sets = {i: s for s, ids in pool.engine_sets.items() for i in ids}
    pending = {}
    for engine_id in engine_ids:
        set_id = sets.get(engine_id)
        confined = set_id is not None and _memory_limit.engine_group(pool.name, set_id)
        pending[engine_id] = pool.live_client()[engine_id].apply_async(
            install, None if confined else memory, result, memory is not None
        )
    for result_of_engine in pending.values():
        result_of_engine.get(timeout=INSTALL_TIMEOUT)
