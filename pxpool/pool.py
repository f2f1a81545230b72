"""Pool: every public method written out, over a :class:`PoolCore` and feature objects."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import ipyparallel as ipp

from . import data, doctor
from ._adapt.adaptive import Adaptive, AdaptMethods
from ._core import lifecycle, runtime
from ._core.core import PoolCore
from ._core.loop import SyncTwin
from ._core.state import PoolState
from ._core.stop_request import StopRequests
from ._dashboard.publisher import Dashboard, DashboardMethods
from ._data.options import MapOptions
from ._health.view import HealthView
from ._jupyter import files as sidebar
from ._logs import EngineLogs
from ._reliability.idle import IdleWatch
from ._reliability.limits import apply_engine_limits
from ._reliability.supervisor import Supervisor
from ._reliability.timeouts import DEFAULT_RETRIES as RETRIES
from ._reliability.timeouts import TaskGuard
from ._reliability.walltime import WalltimeWatch
from ._tasks.lane import Lane, PoolExecutor, TaskFuture, check_options, use_current
from .debug import Debugger, DebugMethods
from .engines import controller_alive, provider_for
from .errors import PoolStateError
from .health import EngineSnapshot
from .profile import Profile, load_profile

if TYPE_CHECKING:
    import pandas

    from .panel import Panel

__all__ = ["Pool", "current"]

_current: Pool | None = None


def current() -> Pool:
    """The pool most recently started (or attached) in this process."""
    if _current is None or not _current.state.uses_engines:
        raise PoolStateError(
            "No running pool in this process; start one with "
            "`pxpool.Pool.from_profile('local').start_sync()` or `%pool start`."
        )
    return _current


def _make_current(pool: Pool | None, *, unless: Pool | None = None) -> None:
    global _current
    use_current(current)  # joblib's backend="pxpool" runs on the current pool by default
    if unless is None or _current is unless:
        _current = pool


class Pool(DebugMethods, AdaptMethods, DashboardMethods):
    """A pool of IPython engines described by a :class:`~pxpool.profile.Profile`."""

    def __init__(
        self, profile: Profile, name: str | None = None, *, detached: bool = False
    ) -> None:
        name = runtime.check_pool_name(name or f"{profile.name}-{secrets.token_hex(3)}")
        self._core = core = PoolCore(profile, name, provider_for(profile), detached=detached)
        self._supervisor = Supervisor(core, replay_push=lambda ns, to: data.push(core, ns, to))
        self._tasks = TaskGuard(core, self._supervisor)
        self._idle = IdleWatch(core)
        self._walltime = WalltimeWatch(core)
        self._debugger = Debugger(core)
        self._health = HealthView(core, self._idle)
        self._lane = Lane(core, self._tasks, self._idle)
        self._dashboard = Dashboard(core, self)  # page and task stream: its own hooks
        self._adaptive = Adaptive(core, self._lane, self._idle)
        core.teardown_hooks.append(self._adaptive.teardown)
        self._logs = EngineLogs(core)
        core.teardown_hooks += [data.release_pool_memory, self._lane.teardown, self._logs.teardown]
        core.teardown_hooks.append(sidebar.withdraw)  # its entry in JupyterLab's sidebar
        core.stop_requests = StopRequests(core, self.stop)  # `pxpool stop NAME` from elsewhere
        for hook in (
            self._logs.engines_joined,  # first: engines keep what everything after prints
            apply_engine_limits,  # before setup replays
            self._debugger.engines_joined,  # breakpoint() and pool.debug() on engines
            self._walltime.engines_joined,  # SIGUSR1/SIGUSR2/SIGTERM: finish, leave cleanly
            self._supervisor.engines_joined,  # deaths noticed, engines replaced, setup replayed
            self._lane.engines_joined,  # the task lane's agent (pool.submit, executor, joblib)
            doctor.warn_on_version_mismatch,  # Python/package versions differ
            self._idle.engines_joined,  # core-hours; idle_timeout releases the engines
        ):
            core.add_engine_hook(hook)

    @classmethod
    def from_profile(
        cls, name: str = "local", *, pool_name: str | None = None, **overrides: Any
    ) -> Pool:
        """Load profile ``name`` with ``overrides`` (see :func:`pxpool.load_profile`)."""
        return cls(load_profile(name, **overrides), pool_name)

    def __repr__(self) -> str:
        engines = len(self._core.registered_ids())
        return f"<Pool {self.name!r} profile={self.profile.name!r} state={self.state} engines={engines}>"

    @property
    def core(self) -> PoolCore:
        """State, engine sets and the engine path features use (:mod:`pxpool._core.core`)."""
        return self._core

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def profile(self) -> Profile:
        return self._core.profile

    @property
    def detached(self) -> bool:  # True: the pool outlives this process (`pxpool start`)
        return self._core.detached

    @property
    def provider(self) -> Any:  # the pxpool.engines provider that starts the engines
        return self._core.provider

    @property
    def state(self) -> PoolState:
        """A :class:`~pxpool._core.state.PoolState`; equal to its name (``"running"``)."""
        return self._core.state

    @property
    def client(self) -> ipp.Client:
        """The ipyparallel Client (engines released after idle_timeout start again)."""
        self._idle.wake_if_released()
        return self._core.live_client()

    @property
    def ids(self) -> list[int]:
        """Registered engine ids, sorted (empty while released after idle_timeout)."""
        if self.state is PoolState.IDLE:
            return []
        self._core.running()
        return self._core.registered_ids()

    @property
    def engines(self) -> int:
        return len(self.ids)

    async def start(
        self, wait: bool = True, timeout: float | None = None, engines: int | None = None
    ) -> Pool:
        """Start the controller and engines (``wait``: until all registered)."""
        startable = self.state in (PoolState.NEW, PoolState.STOPPED, PoolState.FAILED)
        if startable and controller_alive(self.name):  # also a controller in a batch job
            raise PoolStateError(
                f"A pool named {self.name!r} is already running; "
                f"stop it with `pxpool stop {self.name}` or choose another name."
            )
        await self._core.loop.run(lifecycle.start(self._core, wait, timeout, engines))
        sidebar.publish(self.name)  # listed in ipyparallel's JupyterLab sidebar
        _make_current(self)
        return self

    async def stop(self) -> None:
        """Stop every engine and the controller; safe to call twice."""
        await self._core.loop.run(lifecycle.stop(self._core))
        self._health.close()
        _make_current(None, unless=self)

    async def scale(self, n: int) -> list[int]:
        """Grow or shrink the pool to ``n`` engines; returns the engine ids afterwards."""
        return await self._core.loop.run(lifecycle.scale(self._core, n))

    async def restart(self, engine_id: int) -> int:
        """Replace engine ``engine_id`` with a fresh process under the same id."""
        await self._core.loop.run(self._core.restart_engine(engine_id))
        return engine_id

    async def remove_engines(self, engine_ids: list[int]) -> list[int]:
        """Stop ``engine_ids`` for good (and engines sharing their job); ids left."""
        for engine_id in engine_ids:
            self._core.check_engine(engine_id)
        await self._core.loop.run(self._core.remove_engines(list(engine_ids)))
        return self._core.registered_ids()

    async def wake(self) -> None:
        """Start engines released after ``idle_timeout`` (any use of them does too)."""
        await self._idle.wake()

    def engine_deaths(self) -> dict[int, str]:
        """How each engine that died went, by id (``killed by SIGKILL``, ...)."""
        return {i: death.how for i, death in self._supervisor.deaths.items()}

    def core_hours(self) -> float:
        """Core-hours held so far: ``cores_per_engine`` x time registered, summed."""
        return self._idle.core_hours()

    def add_engine_hook(self, hook: Callable[[Pool, list[int]], None]) -> None:
        """Call ``hook(pool, engine_ids)`` whenever engines (re)join, and now."""
        self._core.add_engine_hook(lambda _core, engine_ids: hook(self, engine_ids))

    @classmethod
    def attach(cls, name: str, timeout: float = 10.0) -> Pool:
        """Connect to a running pool, for example one started by ``pxpool start``."""
        pool = cls._from_record(name)
        if not controller_alive(name):
            pool.core.loop.close()
            raise PoolStateError(
                f"Pool {name!r} is not running any more (its controller is gone); "
                f"remove what is left with `pxpool stop {name}`."
            )
        pool.core.loop.submit(lifecycle.connect(pool.core, timeout)).result()
        _make_current(pool)
        return pool

    @classmethod
    def stop_by_name(cls, name: str) -> None:
        """Stop a pool started elsewhere (or clean up after one that died); a live
        process that owns it is asked to stop it itself."""
        if lifecycle.owner_stopped_it(name):
            return
        pool = cls._from_record(name)
        try:
            pool.stop_sync()
        finally:
            pool.core.loop.close()

    @classmethod
    def _from_record(cls, name: str) -> Pool:
        record = lifecycle.read_record_or_raise(name)
        pool = cls(runtime.record_profile(record), name, detached=bool(record.get("detached")))
        pool.core.loop.submit(lifecycle.adopt_record(pool._core, record)).result()
        return pool

    def disconnect(self) -> None:
        """Close this process's connection and leave the pool running."""
        lifecycle.disconnect(self._core)
        _make_current(None, unless=self)

    start_sync = SyncTwin(start)
    stop_sync = SyncTwin(stop)
    scale_sync = SyncTwin(scale)
    restart_sync = SyncTwin(restart)
    remove_engines_sync = SyncTwin(remove_engines)
    wake_sync = SyncTwin(wake)

    def __enter__(self) -> Pool:
        if self.state is not PoolState.RUNNING:
            self.start_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_sync()

    async def __aenter__(self) -> Pool:
        if self.state is not PoolState.RUNNING:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def view(self, targets: Any = None) -> ipp.DirectView:
        """A blocking DirectView on ``targets`` (default: all engines, also later ones)."""
        with self._idle.in_use():
            return self._core.view(targets)

    def lbview(self, targets: Any = None, timeout: float | None = None) -> ipp.LoadBalancedView:
        """A blocking LoadBalancedView; ``timeout`` as in :meth:`apply`."""
        with self._idle.in_use():
            view = self._tasks.timed_lbview(targets, timeout)
        view.block = True
        return view

    def push(self, namespace: dict[str, Any], targets: Any = None) -> None:
        """Set names on the engines (all, also later ones, unless ``targets``)."""
        with self._idle.in_use():
            data.push(self._core, namespace, targets)
        if targets is None or targets == "all":
            self._supervisor.setup.record_push(namespace)

    def pull(self, names: str | list[str] | tuple[str, ...], targets: Any = None) -> Any:
        """Read names back: one value per engine, or one value for a single target."""
        with self._idle.in_use():
            return data.pull(self._core, names, targets)

    def scatter(self, name: str, values: Any, targets: Any = None) -> None:
        """Split ``values`` (list, numpy array, pandas object) into one part per engine."""
        with self._idle.in_use():
            data.scatter(self._core, name, values, targets)

    def gather(self, name: str, targets: Any = None) -> Any:
        """Join the parts of ``name`` from the engines back into one object."""
        with self._idle.in_use():
            return data.gather(self._core, name, targets)

    def map(
        self,
        f: Any,
        values: Any,
        *more: Any,
        chunksize: int | str = "auto",
        ordered: bool = True,
        progress: bool | None = None,
        timeout: float | None = None,
        retries: int = RETRIES,
    ) -> Any:
        """``f`` on every item of ``values``, load-balanced (:func:`pxpool.data.pool_map`)."""
        options = MapOptions(chunksize, ordered, progress, timeout, retries, self._lane.submit)
        with self._idle.in_use():
            return data.pool_map(self._core, self._tasks, f, values, *more, options=options)

    def apply(
        self, f: Any, *args: Any, timeout: float | None = None, retries: int = RETRIES, **kw: Any
    ) -> Any:
        """``f(*args, **kw)`` on the next free engine; its result. ``timeout``: seconds
        it may run, then :class:`~pxpool.TaskTimeout` (engine interrupted, or replaced);
        ``retries``: again if its engine dies (not if f raised), then ``TaskLost``."""
        check_options(timeout, retries)
        with self._idle.in_use():
            return self._lane.apply(f, args, kw, timeout, retries)

    def submit(
        self, f: Any, *args: Any, timeout: float | None = None, retries: int = RETRIES, **kw: Any
    ) -> TaskFuture:
        """``f(*args, **kw)`` queued on the task lane (:mod:`pxpool._tasks.lane`): a Future."""
        return self._lane.submit(f, args, kw, timeout, retries)

    def executor(self, timeout: float | None = None, retries: int = RETRIES) -> PoolExecutor:
        """A ``concurrent.futures.Executor`` on the engines (shutting it down keeps the pool)."""
        return self._lane.executor(timeout, retries)

    def register_joblib(self) -> None:
        """Make joblib's ``backend="pxpool"`` run on this pool (see :mod:`pxpool._tasks`)."""
        self._lane.register_joblib(self)

    def setup(self, code: str) -> None:
        """Run ``code`` on every engine now and on every engine that joins later."""
        self.execute(code)
        self._supervisor.setup.record_code(code)

    def execute(self, code: str, targets: Any = None) -> None:
        """Run ``code`` on the engines, as a ``%%px`` cell does."""
        with self._idle.in_use():
            self._core.view(targets).execute(code, block=True)

    def job_script(self) -> str:
        """The exact script a batch provider would submit for one job, before submitting."""
        return str(self._core.provider.job_script(pool_name=self.name))

    def record_setup_code(self, code: str) -> None:
        """Replay ``code`` on engines that join later (``%%px --setup`` ran it already)."""
        self._supervisor.setup.record_code(code)

    def logs(self, engine_id: int, tail: int = 200) -> str:
        """What engine ``engine_id`` printed (tasks, ``%%px`` cells, its process), the
        last ``tail`` lines of each source; also for a dead engine (:mod:`pxpool._logs`)."""
        return self._logs.text(engine_id, tail)

    def health(self) -> pandas.DataFrame:
        """One row per engine ever started in this pool (see :mod:`pxpool.health`)."""
        return self._health.frame()

    def health_summary(self) -> dict[str, float]:
        """Engines per state (zeros included) and ``core_hours`` used so far."""
        return self._health.summary()

    def health_snapshots(self) -> list[EngineSnapshot]:
        """The snapshots behind :meth:`health`, without building a DataFrame."""
        return self._health.snapshots()

    def memory(self) -> pandas.DataFrame:
        """RSS and PSS of the client, the controller and each engine, now."""
        return self._health.memory()

    def panel(self, refresh: float = 1.0) -> Panel:
        """A live ipywidgets panel of this pool's engines, refreshed every ``refresh`` s."""
        from .panel import Panel

        self._health.snapshots()  # agents installed before the first refresh
        return Panel(self, refresh=refresh, dashboard=self._dashboard)

    def doctor(
        self,
        packages: Sequence[str] = (),
        env: Sequence[str] = doctor.DEFAULT_ENV,
        show: bool = True,
    ) -> pandas.DataFrame:
        """Every engine compared with this client (:func:`pxpool.doctor.doctor_frame`)."""
        return doctor.doctor_frame(self._core, packages, env, show)
