"""Local process bookkeeping: ipyparallel stops the processes it started, but an
engine's nanny (its child) exits a little later on its own; a pool's stop waits for
the whole tree so nothing outlives ``pool.stop()``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import ipyparallel as ipp
import psutil


def launcher_processes(launcher: object) -> Iterable[psutil.Process]:
    """The local processes an ipyparallel launcher started (an engine set's launchers'
    too), without their descendants."""
    process = getattr(launcher, "process", None)
    if isinstance(process, psutil.Process):
        yield process
    for child in list(getattr(launcher, "launchers", {}).values()):
        yield from launcher_processes(child)


def local_process_tree_of(launcher: object) -> list[psutil.Process]:
    """One launcher's local processes with their descendants."""
    return [p for root in launcher_processes(launcher) for p in _tree(root)]


def local_process_tree(cluster: ipp.Cluster, part: str = "all") -> list[psutil.Process]:
    """Local processes of the controller and/or engines (``part``), with descendants."""
    roots = list(launcher_processes(cluster.controller)) if part in ("all", "controller") else []
    if part in ("all", "engines"):
        for engine_set in list(cluster.engines.values()):
            roots.extend(launcher_processes(engine_set))
    return [p for tree in map(_tree, roots) for p in tree]


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


async def reap(processes: list[psutil.Process], timeout: float, terminate: bool = False) -> None:
    """Wait up to ``timeout`` for ``processes`` to exit (after SIGTERM if ``terminate``);
    SIGKILL what is left."""
    alive = list({p.pid: p for p in processes if running(p)}.values())
    if terminate:
        for process in alive:
            try:
                process.terminate()
            except psutil.Error:
                pass
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if running(p)]
        if alive:
            await asyncio.sleep(0.05)
    for process in alive:
        try:
            process.kill()
            process.wait(timeout=2)
        except psutil.Error:
            pass


def running(process: psutil.Process) -> bool:
    """Alive and not a zombie; a process reaped meanwhile (or unreadable) is not."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def processes_of_pool(profile_dir: str) -> list[psutil.Process]:
    """Every local process started for the pool whose ipyparallel profile dir this is.

    ipyparallel passes ``IPP_PROFILE_DIR`` to the controller and engines, and their
    schedulers and nannies inherit it, so it finds what outlived a killed parent
    (a controller's scheduler processes, say) where a process tree no longer can.
    """
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("IPP_PROFILE_DIR") == profile_dir:
                found.append(process)
        except psutil.Error:
            continue
    return found
