"""Bounded waits for a pool coming up, turning early exits into errors with output.

ipyparallel waits for the controller's files and for engine registrations, but an
engine that exits while being waited for only shows up in a log, so the caller
waits out the whole timeout. These waits watch the processes too and fail as soon
as one exits, quoting what it printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import ipyparallel as ipp
from traitlets.config import Config

from ..errors import ControllerStartError, EngineIdReserved, EngineStartError
from ..profile import ControllerSettings, Profile

POLL_INTERVAL = 0.02
# an engine that dies while registering reserves its requested id this long
REGISTRATION_HOLD_SECONDS = 30


def controller_args(settings: ControllerSettings) -> list[str]:
    """ipcontroller arguments for a profile's controller settings: the pool's defaults
    for a fast, small controller, then the profile's own ``args`` (which win)."""
    args = [
        f"--ip={settings.ip}",
        f"--HeartMonitor.period={settings.heartbeat_ms}",
        # drop an engine after ~5 s of silence, not after 10 beats: with a 100 ms
        # beat, 1 s of a loaded machine would unregister healthy engines
        f"--HeartMonitor.max_heartmonitor_misses={max(10, 5000 // settings.heartbeat_ms)}",
        # an engine that dies while registering reserves its id this long (default 30 s)
        f"--IPController.registration_timeout={REGISTRATION_HOLD_SECONDS}",
        # schedulers as threads: one process to start instead of nine (~0.5 s sooner)
        "--IPController.use_threads=True",
        # the hub keeps task buffers for client.get_result(); 64 MB, not 1 GB, so big
        # pushes and maps do not stay resident in the controller
        "--DictDB.size_limit=67108864",
    ]
    if settings.port:
        # ipyparallel binds at least 14 sockets; a fixed range keeps them predictable
        args.append(f"--IPController.ports={settings.port}-{settings.port + 31}")
    # a trait given twice is an error: the profile's own args replace these defaults
    given = {arg.split("=", 1)[0] for arg in settings.args}
    return [a for a in args if a.split("=", 1)[0] not in given] + list(settings.args)


def engine_file(cluster: ipp.Cluster) -> str:
    """Where engines that start before the controller is listening find its address.

    ipyparallel's controller writes ``ipcontroller-*-engine.json`` in place, so an
    engine polling for it can read it half written; pxpool publishes a copy with an
    atomic rename once the controller's own file is complete."""
    return os.path.join(cluster.profile_dir, "security", f"pxpool-{cluster.cluster_id}-engine.json")


def publish_engine_file(cluster: ipp.Cluster, info: dict[str, Any]) -> None:
    path = engine_file(cluster)
    partial = f"{path}.partial"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(info, file)
    os.replace(partial, path)


def _launcher_exited(launcher: object) -> bool:
    if getattr(launcher, "state", None) == "after":
        return True
    poll = getattr(launcher, "poll", None)
    children = getattr(launcher, "launchers", None)
    if children is not None:  # an engine set: exited when all its processes exited
        return bool(children) is False or all(_launcher_exited(c) for c in list(children.values()))
    if poll is not None and getattr(launcher, "process", None) is not None:
        try:
            return poll() is not None
        except Exception:
            return True
    return False


class StartupWatch:
    """Waits that give up at one shared deadline (the profile's start timeout)."""

    def __init__(self, cluster: ipp.Cluster, profile: Profile, timeout: float) -> None:
        self.cluster = cluster
        self.profile = profile
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def _left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def _controller_output(self) -> str:
        controller = self.cluster.controller
        return controller.get_output() if controller is not None else ""

    async def launch_controller(self) -> None:
        """Run the controller's process without waiting for it to listen."""
        try:
            await self.cluster.start_controller()
        except OSError as exc:
            raise ControllerStartError(f"Could not run the controller: {exc}") from exc

    async def controller_started(self) -> None:
        """Run the controller (unless :meth:`launch_controller` did) and wait until it
        wrote its connection files; then publish the engines' copy of them."""
        if self.cluster.controller is None:
            await self.launch_controller()
        controller = self.cluster.controller
        try:
            info = await controller.get_connection_info(timeout=self._left())
        except RuntimeError as exc:  # the controller exited
            raise ControllerStartError(
                f"The controller of pool {self.cluster.cluster_id!r} exited while starting ({exc}). "
                "If it says 'Address already in use', choose another controller port in the profile.",
                self._controller_output(),
            ) from None
        except TimeoutError:
            raise ControllerStartError(
                f"The controller of pool {self.cluster.cluster_id!r} did not write its connection "
                f"files within {self.timeout:g}s; raise timeouts.start in profile "
                f"{self.profile.name!r} if the machine is slow.",
                self._controller_output(),
            ) from None
        publish_engine_file(self.cluster, info["engine"])

    async def engines_registered(
        self,
        client: ipp.Client,
        engine_ids: list[int],
        engine_sets: dict[str, list[int]],
        known_ids: set[int] | None = None,
    ) -> None:
        """Wait until every id in ``engine_ids`` is registered with the hub.

        With ``known_ids`` (every id the pool owns), an engine that registered under
        an id the pool never asked for is reported at once: the hub hands out a new
        id while the requested one is still reserved for an engine that died while
        registering (for ``registration_timeout`` seconds)."""
        wanted = set(engine_ids)
        watched = {s: ids for s, ids in engine_sets.items() if wanted & set(ids)}
        while not wanted <= set(client.ids):
            if known_ids:
                _check_strays(wanted, set(client.ids), known_ids)
            self._check_controller()
            for set_id, ids in watched.items():
                self._check_engine_set(set_id, ids, set(client.ids))
            if time.monotonic() > self.deadline:
                raise self._timed_out(wanted & set(client.ids), wanted, watched)
            await asyncio.sleep(POLL_INTERVAL)

    def _check_controller(self) -> None:
        controller = self.cluster.controller
        if controller is not None and _launcher_exited(controller):
            raise ControllerStartError(
                "The controller exited while engines were registering.",
                self._controller_output(),
            )

    def _check_engine_set(self, set_id: str, ids: list[int], registered: set[int]) -> None:
        """Fail if the launcher of engine set ``set_id`` exited with engines missing."""
        launcher = self.cluster.engines.get(set_id)
        if launcher is not None and not _launcher_exited(launcher):
            return
        missing = sorted(set(ids) - registered)
        if not missing:
            return
        # a launcher that knows more (a batch job's id and final state) says it
        if (explain := getattr(launcher, "exit_error", None)) is not None:
            raise explain(missing)
        output = launcher.get_output() if launcher is not None else ""
        raise EngineStartError(
            f"Engine(s) {missing} of pool {self.cluster.cluster_id!r} exited before "
            f"registering. Check the engine's python and environment in profile "
            f"{self.profile.name!r} ({self.profile.source}).",
            output,
        )

    def _timed_out(
        self, registered: set[int], wanted: set[int], watched: dict[str, list[int]]
    ) -> Exception:
        """The error for engines still missing at the deadline."""
        launchers = [self.cluster.engines.get(s) for s in watched]
        explain = getattr(launchers[0], "missing_error", None) if launchers else None
        if explain is not None:  # batch jobs: which are still pending, and why
            error: Exception = explain(launchers, sorted(registered), sorted(wanted), self.timeout)
            return error
        outputs = "\n".join(
            launcher.get_output()
            for s in watched
            if (launcher := self.cluster.engines.get(s)) is not None
        )
        return EngineStartError(
            f"{len(registered)} of {len(wanted)} engines registered within {self.timeout:g}s; "
            f"missing: {sorted(wanted - registered)}. Raise timeouts.start in profile "
            f"{self.profile.name!r} or look at the engines' output below.",
            outputs,
        )


def _check_strays(wanted: set[int], registered: set[int], known_ids: set[int]) -> None:
    """Fail if engines registered under ids the pool never asked for (see
    :class:`EngineIdReserved`)."""
    strays = registered - wanted - known_ids
    if strays:
        raise EngineIdReserved(
            f"Engines asking for ids {sorted(wanted - registered)} registered as "
            f"{sorted(strays)}: the controller still reserves the requested ids for "
            "engines that died while registering. Try again in a few seconds."
        )


def controller_launcher(provider: Any) -> dict[str, Any]:
    """ipyparallel's local controller, started through :mod:`pxpool._entry.controller_main`,
    unless the provider runs it elsewhere (a job)."""
    launcher = provider.controller_launcher_class()
    if launcher is not None:
        return {"controller_launcher_class": launcher}
    command = [sys.executable, "-m", "pxpool._entry.controller_main"]
    return {"config": Config({"LocalControllerLauncher": {"controller_cmd": command}})}
