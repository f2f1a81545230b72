"""PoolCluster: what ipyparallel's cluster manager loads from a pxpool cluster file.

ipyparallel's ``Cluster.from_file`` builds the class a cluster file names, so the
sidebar's list, Start and Stop reach this class through ipyparallel's own API:

- ``to_dict`` (the sidebar's model) reads pxpool's record each time it is asked:
  state ``running`` while the pool's controller runs, the engine count from its
  engine sets; a ``new:PROFILE`` entry is a stopped cluster of that profile's size;
- ``stop_cluster`` runs ``pxpool stop NAME`` (``Pool.stop_by_name``: engines, controller,
  batch jobs, shared memory, cgroups, forwards, runtime directory and this entry);
- ``start_cluster`` of a ``new:PROFILE`` entry runs ``pxpool start PROFILE``, whose pool
  gets an entry of its own;
- ``connect_client`` connects an ipyparallel Client to the pool (the sidebar's
  "insert code" button writes ``Cluster.from_file(...).connect_client_sync()``).

Start and stop run the ``pxpool`` command in a process of its own: the Jupyter server
that serves the sidebar never owns a pool's threads or processes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from typing import Any

import ipyparallel as ipp

from .._core import runtime
from ..engines import controller_alive
from ..errors import PoolStartError, PoolStateError, PxpoolError
from ..profile import load_profile
from .files import NEW_PREFIX, withdraw

__all__ = ["PoolCluster", "COMMAND_TIMEOUT"]

COMMAND_TIMEOUT = 600.0  # seconds a start or stop from the sidebar may take at most


class PoolCluster(ipp.Cluster):  # type: ignore[misc]  # ipyparallel ships no type information
    """A pxpool pool (or a profile's Start entry) as an ipyparallel Cluster."""

    def __init__(self, *, pool: str = "", pxpool_profile: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("shutdown_atexit", False)  # a stop is asked for, never implied
        kwargs.setdefault("load_profile", False)  # profile_pxpool holds no ipcluster config
        super().__init__(**kwargs)
        self.pool_name, self.pxpool_profile = pool, pxpool_profile
        self._profile_engines: int | None = None
        if pool and controller_alive(pool):  # what the manager drops once it is gone
            self.controller = _Running(pool)

    @classmethod
    def from_dict(cls, d: dict[str, Any], **kwargs: Any) -> PoolCluster:
        info = d["cluster"]
        return cls(
            pool=str(info.get("pool", "")),
            pxpool_profile=str(info.get("pxpool_profile", "")),
            profile_dir=info["profile_dir"],
            cluster_id=info["cluster_id"],
            **kwargs,
        )

    def _is_running(self) -> bool:
        return bool(self.pool_name) and controller_alive(self.pool_name)

    def engine_count(self) -> int:
        """Engines the pool's record holds now (a profile entry: the profile's size,
        read once; 0 where it means one per core, or the profile does not load)."""
        if self.pxpool_profile:
            if self._profile_engines is None:
                try:
                    self._profile_engines = int(load_profile(self.pxpool_profile).engines or 0)
                except PxpoolError:
                    self._profile_engines = 0
            return self._profile_engines
        record = runtime.read_record(self.pool_name) or {}
        return sum(len(ids) for ids in record.get("engine_sets", {}).values())

    def to_dict(self) -> dict[str, Any]:
        cls = type(self)
        cluster = {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "cluster_id": self.cluster_id,
            "profile_dir": self.profile_dir,
            "pool": self.pool_name,
            "pxpool_profile": self.pxpool_profile,
            "n": self.engine_count() if self.pxpool_profile else None,
        }
        data: dict[str, Any] = {"cluster": cluster, "engines": {"class": "pxpool", "sets": {}}}
        if self._is_running():
            data["controller"] = {"class": "pxpool", "state": {"state": "running"}}
            data["engines"]["sets"]["pool"] = {"n": self.engine_count()}
        return data

    def update_cluster_file(self) -> None:
        """The file is pxpool's to write and remove (:mod:`pxpool._jupyter.files`)."""

    async def start_cluster(self, n: int | None = None) -> PoolCluster:
        """A profile entry starts a new pool (``n`` engines, else the profile's)."""
        if not self.pxpool_profile:
            if self._is_running():
                return self
            raise PoolStateError(
                f"Pool {self.pool_name!r} has stopped and cannot be started again from here; "
                f"start a new one from its profile's entry ({NEW_PREFIX}PROFILE)."
            )
        name = f"{self.pxpool_profile}-{secrets.token_hex(3)}"
        args = ["start", self.pxpool_profile, "--name", name] + (
            [] if n is None else ["-n", str(n)]
        )
        code, output = await _pxpool(args)
        if code != 0:
            raise PoolStartError(f"`pxpool {' '.join(args)}` failed with exit code {code}", output)
        return self

    async def stop_cluster(self) -> None:
        """The pool's full teardown, as ``pxpool stop NAME``; a profile entry stays."""
        if not self.pool_name:
            return
        if runtime.read_record(self.pool_name) is None:
            withdraw(self.pool_name)  # nothing left of the pool but its entry
            return
        code, output = await _pxpool(["stop", self.pool_name])
        if code != 0:
            raise PoolStateError(
                f"`pxpool stop {self.pool_name}` failed with exit code {code}:\n{output[-2000:]}"
            )

    async def connect_client(self, **client_kwargs: Any) -> ipp.Client:
        """An ipyparallel Client of the running pool."""
        record = runtime.read_record(self.pool_name) if self.pool_name else None
        if record is None or not self._is_running():
            raise PoolStateError(
                f"Pool {self.pool_name or self.cluster_id!r} is not running; "
                "start one from a profile's entry or with `pxpool start PROFILE`."
            )
        real = ipp.Cluster.from_file(record["cluster_file"], load_profile=False, parent=None)
        return await real.connect_client(**client_kwargs)


class _Running:
    """Stands for the pool's controller in ``Cluster.controller``: ipyparallel's manager
    drops a cluster whose controller is set once it stops running."""

    state = "running"

    def __init__(self, pool: str) -> None:
        self.pool = pool

    @property
    def running(self) -> bool:
        return controller_alive(self.pool)


async def _pxpool(args: list[str]) -> tuple[int, str]:
    """Run ``pxpool ARGS`` in a process of its own: its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pxpool",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ),
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise PoolStateError(
            f"`pxpool {' '.join(args)}` did not finish within {COMMAND_TIMEOUT:g}s; "
            "see `pxpool list` and stop what is left with `pxpool stop NAME`."
        ) from None
    return int(process.returncode or 0), output.decode(errors="replace")
