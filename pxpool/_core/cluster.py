"""ipyparallel's Cluster with the changes pxpool needs from it.

- ``Cluster.write_cluster_file`` writes with the process umask (often 0644); the file
  names every process of the pool, so pxpool writes it owner-only like the
  connection files beside it.
- The Cluster logs when an engine set stops but cannot tell a stop it was asked for
  from a death. pxpool's supervisor needs that difference: engine sets stopped through
  ``stop_engines`` (or announced with ``expect_exit``) are expected; any other stop
  calls the death listeners with the set id and ipyparallel's stop data
  (``exit_code``: negative for a signal).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import ipyparallel as ipp

log = logging.getLogger("pxpool.cluster")
DeathListener = Callable[[str, dict[str, Any]], None]


class PxCluster(ipp.Cluster):  # type: ignore[misc]  # ipyparallel ships no type information
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # every construction path (PxCluster(...), from_file, from_dict) comes here
        self._pxpool_expected: set[str] = set()  # engine sets whose next stop is asked for
        self._pxpool_death_listeners: list[DeathListener] = []

    def to_dict(self) -> dict[str, Any]:
        """ipyparallel names a launcher class that has no entry point ``module:Class``,
        which its own loader cannot import back (``pxpool stop NAME`` and
        ``Pool.attach`` failed with a TraitError for every pxpool launcher); write the
        dotted path instead."""
        data: dict[str, Any] = super().to_dict()
        for part, cls in (
            ("engines", self.engine_launcher_class),
            ("controller", self.controller_launcher_class),
        ):
            entry = data.get(part)
            if isinstance(entry, dict) and ":" in str(entry.get("class", "")):
                entry["class"] = f"{cls.__module__}.{cls.__qualname__}"
        return data

    def write_cluster_file(self) -> None:
        os.makedirs(os.path.dirname(self.cluster_file), mode=0o700, exist_ok=True)
        fd = os.open(self.cluster_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.to_dict(), handle)

    async def connect_client(self, **client_kwargs: Any) -> ipp.Client:
        """ipyparallel's ``connect_client``, with a Client whose send errors name the
        argument that cannot be pickled (see :mod:`pxpool._core.client`)."""
        from .client import PxClient

        info = self.controller.get_connection_info()
        if inspect.isawaitable(info):
            info = await info
        return PxClient(
            info["client"],
            cluster=self,
            profile_dir=self.profile_dir,
            cluster_id=self.cluster_id,
            **client_kwargs,
        )

    # ---------------------------------------------------------- deaths vs stops

    def add_death_listener(self, listener: DeathListener) -> None:
        """Call ``listener(engine_set_id, stop_data)`` when an engine set stops unasked."""
        if listener not in self._pxpool_death_listeners:
            self._pxpool_death_listeners.append(listener)

    def expect_exit(self, engine_set_id: str) -> None:
        """The next stop of this set is on purpose (pxpool is about to kill it)."""
        self._pxpool_expected.add(engine_set_id)

    async def start_engines(self, n: Any = None, engine_set_id: Any = None, **kwargs: Any) -> Any:
        set_id = await super().start_engines(n, engine_set_id, **kwargs)
        self._pxpool_expected.discard(set_id)
        launcher = self.engines.get(set_id)
        if launcher is not None:
            launcher.on_stop(partial(self._set_stopped, set_id, launcher))
        return set_id

    async def stop_engines(self, engine_set_id: Any = None) -> None:
        for set_id in [engine_set_id] if engine_set_id is not None else list(self.engines):
            self.expect_exit(set_id)
        await super().stop_engines(engine_set_id)

    def _set_stopped(self, set_id: str, launcher: Any, stop_data: Any = None) -> None:
        if set_id in self._pxpool_expected or self.engines.get(set_id) is not launcher:
            return  # stopped on purpose, or an older launcher of a set started again
        for listener in list(self._pxpool_death_listeners):
            try:
                listener(set_id, dict(stop_data or {}))
            except Exception:
                log.exception("pxpool: death listener %r failed for %s", listener, set_id)
