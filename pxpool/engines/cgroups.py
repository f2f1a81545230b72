"""Per-engine memory limits through the kernel's memory cgroups.

With ``[engine] memory_limit`` set, the local provider moves each engine, right after
its process starts (before it registers, so before any task), into a memory cgroup
of its own limited to that many bytes. An engine that allocates past it is killed by
the kernel's OOM killer: a real death, which the supervisor reports as out of memory
(it reads the ``oom_kill`` count of that engine's group) and replaces with
``restart = "on-failure"``. A cgroup limits resident memory, which is what a user
means by "512M"; the fallback where no memory cgroup is writable (and for engines
on other machines) is an address-space limit set inside the engine
(:mod:`pxpool._reliability.limits`).

Groups live at ``<memory controller>/pxpool/<runtime>-<pool>/<engine set>``: cgroup
v1 (``memory.limit_in_bytes``, ``memory.oom_control``) or v2 (``memory.max``,
``memory.events``). ``<runtime>`` is a short hash of the pool's runtime directory, so
pools of the same name under two runtime directories never share a group. A group
is removed when its engine stops, and all of a pool's groups when the pool stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .._core import runtime as _runtime
from .._core.cluster import PxCluster
from .._core.processes import launcher_processes

log = logging.getLogger("pxpool.memory")
CGROUP_MOUNT = Path("/sys/fs/cgroup")
TOP = "pxpool"
RELEASE_TRIES = 25  # x 0.2 s: an engine's nanny leaves its group a moment after it
RELEASE_INTERVAL = 0.2
_baselines: dict[Path, int] = {}  # group -> its oom_kill count when its engine joined


@dataclass(frozen=True)
class Hierarchy:
    """One mounted memory controller: where groups go and what its files are called."""

    root: Path
    version: int

    @property
    def limit_file(self) -> str:
        return "memory.limit_in_bytes" if self.version == 1 else "memory.max"

    @property
    def oom_file(self) -> str:
        return "memory.oom_control" if self.version == 1 else "memory.events"


def hierarchy(mount: Path = CGROUP_MOUNT) -> Hierarchy | None:
    """The memory controller pxpool can create groups in, or None (not mounted, not
    ours to write: an unprivileged user, a read-only /sys in a container)."""
    v1 = mount / "memory"
    if (v1 / "memory.limit_in_bytes").is_file():
        found = Hierarchy(v1, 1)
    else:
        try:
            controllers = (mount / "cgroup.controllers").read_text().split()
        except OSError:
            return None
        if "memory" not in controllers:
            return None
        found = Hierarchy(mount, 2)
    return found if os.access(found.root / "cgroup.procs", os.W_OK) else None


def _runtime_tag() -> str:
    return hashlib.sha256(str(_runtime.runtime_dir()).encode()).hexdigest()[:8]


def pool_group(pool_name: str, found: Hierarchy | None = None) -> Path | None:
    """The directory holding pool ``pool_name``'s engine groups (it may not exist)."""
    found = found or hierarchy()
    return None if found is None else found.root / TOP / f"{_runtime_tag()}-{pool_name}"


def engine_group(pool_name: str, set_id: str) -> Path | None:
    """The group engine set ``set_id`` of the pool runs in, if it has one."""
    base = pool_group(pool_name)
    group = base / set_id if base is not None else None
    return group if group is not None and group.is_dir() else None


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def confine(pool_name: str, set_id: str, pids: list[int], limit: int) -> Path | None:
    """Move ``pids`` into a new group of their own limited to ``limit`` bytes; None when
    no memory cgroup is writable (the caller then limits the address space instead)."""
    found = hierarchy()
    base = pool_group(pool_name, found)
    if found is None or base is None:
        return None
    group = base / set_id
    try:
        for level in (found.root / TOP, base):
            level.mkdir(exist_ok=True)
            if found.version == 2:  # let the next level down have a memory controller
                _write(level.parent / "cgroup.subtree_control", "+memory")
        if found.version == 2:
            _write(base / "cgroup.subtree_control", "+memory")
        if group.is_dir():
            _remove(group, found)  # the group of an engine this one replaces
        group.mkdir(exist_ok=True)
        _write(group / found.limit_file, str(limit))
        _baselines[group] = oom_kills(group)
        for pid in pids:
            _write(group / "cgroup.procs", str(pid))
    except OSError as exc:
        log.warning(
            "pxpool: cannot put engine set %s of pool %r into memory cgroup %s (%s); "
            "limiting its address space instead",
            set_id,
            pool_name,
            group,
            exc,
        )
        release_group(group)
        return None
    return group


def confine_engine_set(cluster: PxCluster, set_id: str, limit: int | None) -> Path | None:
    """Confine the processes of a just-started local engine set; its group goes when
    the set stops."""
    launcher = cluster.engines.get(set_id)
    if not limit or launcher is None:
        return None
    pids = [process.pid for process in launcher_processes(launcher)]
    group = confine(str(cluster.cluster_id), set_id, pids, limit)
    if group is not None:
        inode = group.stat().st_ino  # a replacement's group has the same path, not inode
        launcher.on_stop(lambda _data: _release_soon(group, inode, RELEASE_TRIES))
    return group


def _release_soon(group: Path, inode: int, tries: int) -> None:
    """Remove ``group`` (if it is still the one made for that engine); while processes
    are still leaving it, try again shortly."""
    try:
        if group.stat().st_ino != inode:
            return
    except OSError:
        return  # gone already
    if release_group(group) or tries <= 0:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # the pool's stop sweeps it
    loop.call_later(RELEASE_INTERVAL, _release_soon, group, inode, tries - 1)


def release_group(group: Path, evict: bool = False) -> bool:
    """Remove ``group``; with ``evict`` first move any process still in it to the
    top of the hierarchy (the pool's stop ends those processes right after)."""
    found = hierarchy()
    if found is None or not group.is_dir():
        _baselines.pop(group, None)
        return True
    return _remove(group, found, evict)


def _remove(group: Path, found: Hierarchy, evict: bool = True) -> bool:
    try:
        if evict:
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    _write(found.root / "cgroup.procs", pid)
                except OSError:
                    pass  # it exited meanwhile
        group.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    _baselines.pop(group, None)
    return True


def release_pool(pool_name: str) -> list[Path]:
    """Remove every group of pool ``pool_name``; returns those that could not go."""
    base = pool_group(pool_name)
    if base is None or not base.is_dir():
        return []
    stuck = [g for g in base.iterdir() if g.is_dir() and not release_group(g, evict=True)]
    if not stuck:
        try:
            base.rmdir()
        except OSError:
            stuck.append(base)
    if stuck:
        log.warning("pxpool: memory cgroups of pool %r left behind: %s", pool_name, stuck)
    return stuck


def pool_groups() -> dict[str, Path]:
    """Pool name -> group directory, for every pool of this runtime directory."""
    found = hierarchy()
    top = found.root / TOP if found is not None else None
    if top is None or not top.is_dir():
        return {}
    prefix = f"{_runtime_tag()}-"
    return {p.name[len(prefix) :]: p for p in top.iterdir() if p.name.startswith(prefix)}


def own_group() -> Path | None:
    """This process's memory cgroup (engines that were not confined share it)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return CGROUP_MOUNT / "memory" / path.lstrip("/")
        if controllers == "" and (CGROUP_MOUNT / "cgroup.controllers").is_file():
            return CGROUP_MOUNT / path.lstrip("/")
    return None


def oom_kills(group: Path | None = None) -> int:
    """How many processes the OOM killer has killed in ``group`` (default: this
    process's own group), from its ``oom_kill`` line; 0 if unknown."""
    group = group if group is not None else own_group()
    if group is None:
        return 0
    for name in ("memory.oom_control", "memory.events"):
        try:
            text = (group / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return 0


def oom_kills_since_joined(group: Path) -> int:
    """OOM kills in an engine's group since that engine was put into it."""
    return oom_kills(group) - _baselines.get(group, 0)
