"""Every error pxpool raises on purpose, in one tree.

Each message says what failed, the values involved, and the next step::

    PxpoolError
    ├── ProfileError                 a profile is missing, wrong, or lacks what was asked
    │   ├── UnknownProfileError      no profile of that name (lists the known ones)
    │   └── ProfileValidationError   a key or value is wrong (names file, key, value)
    ├── InvalidArgumentError         a malformed argument (pool name, KEY=VALUE, ...)
    │   └── TargetError              an engine target text (%px --targets) that is wrong
    ├── RuntimeDirectoryError        the runtime directory belongs to another user
    ├── PoolStateError               the call does not fit the pool's state (not started...)
    │   └── NoEnginesError           work waits for an engine and none is running or starting
    ├── PoolNotFoundError            no running pool of that name (for attach/stop)
    ├── PoolStartError               a pool did not come up within its timeout
    │   ├── ControllerStartError     the controller exited or never wrote its files
    │   ├── EngineStartError         engines exited or did not register in time
    │   │   ├── EngineIdReserved     the controller still holds the id asked for
    │   │   ├── SSHConnectError*     ssh to a host failed (host, ssh's stderr)
    │   │   ├── RemotePythonError*   remote python missing or of another version
    │   │   ├── JobFailedError*      a batch job ended before its engines registered
    │   │   ├── EnginesMissingError* too few engines registered (pending jobs, reasons)
    │   │   └── PodFailedError*      an engine pod cannot run (Kubernetes' reason)
    │   ├── SubmitCommandNotFound*   sbatch/qsub/bsub/condor_submit is not on PATH
    │   ├── SubmitRejected*          the batch system refused the job
    │   └── KubernetesForbidden*     RBAC refused a Kubernetes request (quotes the Role)
    ├── EngineNotFoundError          an engine id that is not in the pool
    ├── EngineStopError              stopped engines still registered after the timeout
    ├── EnvironmentCheckError        engines did not report their environment (doctor)
    ├── MapError                     pool.map: f failed on an engine (names item/partition)
    ├── UnpicklableFunctionError     pool.map/apply: f cannot be sent to the engines
    ├── UnpicklableArgumentError     an argument or item cannot be sent to the engines
    ├── EngineNameError              pull of a name an engine does not have
    ├── TaskTimeout                  a task ran past its timeout=; its engine was stopped
    ├── ResultTooLarge+              a result over [engine] max_result_size (not sent)
    ├── TaskError+                   pool.submit: the task raised on its engine (names both)
    ├── EngineDied                   the engine running a task died (says how)
    │   └── TaskLost                 ...and the task's retries are used up
    ├── DebugError                   a debugging request cannot be served
    │   └── DebugConnectionError     the debugger connection failed, closed or timed out
    │       └── DebugAuthError       a debugger message failed authentication
    └── DebuggerQuit                 `q` in a breakpoint session ended the task

Every class is defined here but two groups: ``*`` marks the providers' errors, in
:mod:`pxpool.engines.errors`; ``+`` marks ``ResultTooLarge`` and ``TaskError``, in
:mod:`pxpool._core.client` beside the client: they are also ipyparallel ``RemoteError`` errors, and
this module imports the standard library only, so engine-side code (the debugger agent) imports it
without ipyparallel. ``pxpool`` exports every public one. Errors that carry a process's output keep
it in ``.output`` and also quote its tail in the message, so a notebook user sees the cause without
opening a log file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "PxpoolError",
    "ProfileError",
    "UnknownProfileError",
    "ProfileValidationError",
    "InvalidArgumentError",
    "TargetError",
    "RuntimeDirectoryError",
    "PoolStateError",
    "NoEnginesError",
    "PoolNotFoundError",
    "PoolStartError",
    "ControllerStartError",
    "EngineStartError",
    "EngineIdReserved",
    "EngineNotFoundError",
    "EngineStopError",
    "EnvironmentCheckError",
    "MapError",
    "UnpicklableFunctionError",
    "UnpicklableArgumentError",
    "EngineNameError",
    "TaskTimeout",
    "EngineDied",
    "TaskLost",
    "DebugError",
    "DebugConnectionError",
    "DebugAuthError",
    "DebuggerQuit",
]

OUTPUT_TAIL_LINES = 20
TARGET_FORMS = "write ids (0,2), ranges (2-4), slices (::2, -2:), negative indexes (-1) or all"


def tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of ``text``, indented for quoting in a message."""
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept)


class PxpoolError(Exception):
    """Base class: catch this to handle anything pxpool reports on purpose."""


# ------------------------------------------------------------ profiles and arguments


class ProfileError(PxpoolError):
    """A profile cannot be found, parsed or validated, or lacks what the call needs (a
    provider this version knows, ssh hosts, a batch provider for a job script)."""


class UnknownProfileError(ProfileError, LookupError):
    """No built-in or user profile has the requested name."""

    def __init__(self, name: str, known: Iterable[str], searched: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        self.searched = list(searched)
        where = ", ".join(self.searched)
        super().__init__(
            f"Unknown profile {name!r}; known: {', '.join(self.known) or '(none)'}. "
            f"Searched: {where}. Create {name}.toml in one of those folders, "
            "or run `pxpool profiles` to see where each profile comes from."
        )


class ProfileValidationError(ProfileError, ValueError):
    """A profile key or value is wrong; the message names the source, key and value."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        super().__init__(f"{source}: {key}: {message}")


class InvalidArgumentError(PxpoolError):
    """An argument that cannot be read: a pool name, a ``KEY=VALUE`` setting, a command
    missing which pool it is for."""


class TargetError(InvalidArgumentError, ValueError):
    """An engine target text that cannot be read or names engines the pool lacks."""

    def __init__(self, text: str, item: str, problem: str, ids: list[int]) -> None:
        self.text = text
        self.item = item
        self.ids = list(ids)
        where = f"target {item!r}" if item == text.strip() else f"target {item!r} in {text!r}"
        super().__init__(f"Bad engine {where}: {problem}; {TARGET_FORMS}. Engines: {self.ids}.")


class RuntimeDirectoryError(PxpoolError):
    """The runtime directory (pool records, connection files) is not the user's own."""


# ------------------------------------------------------------ pools and engines


class PoolStateError(PxpoolError, RuntimeError):
    """The call needs a pool in another state (for example started, not stopped)."""


class NoEnginesError(PoolStateError):
    """Work waits for an engine, and the pool has none running and none on its way: every
    engine died or was stopped, and no restart or scale is starting another."""

    def __init__(self, pool: str, waited: float, work: str) -> None:
        self.pool = pool
        self.waited = waited
        super().__init__(
            f"{work} cannot run: pool {pool!r} has no engines, and none has been starting "
            f"for {waited:g}s (they died or were stopped; `pool.health()` says how). Add "
            'engines with `pool.scale_sync(N)`, or set `restart = "on-failure"` in the '
            "profile so pxpool replaces engines that die."
        )


class PoolNotFoundError(PxpoolError, LookupError):
    """No running pool has the requested name."""

    def __init__(self, name: str, running: Iterable[str]) -> None:
        self.name = name
        self.running = sorted(running)
        super().__init__(
            f"No running pool named {name!r}; running: {', '.join(self.running) or '(none)'}. "
            "Start one with `pxpool start PROFILE --name NAME` or `pxpool.Pool.from_profile(...)`."
        )


class PoolStartError(PxpoolError, RuntimeError):
    """A pool did not come up; ``.output`` holds what the failing process printed."""

    def __init__(self, message: str, output: str = "") -> None:
        self.output = output
        if output.strip():
            message = f"{message}\n  Last output:\n{tail(output)}"
        super().__init__(message)


class ControllerStartError(PoolStartError):
    """The controller exited early or did not publish its connection files in time."""


class EngineStartError(PoolStartError):
    """Engines exited before registering, or fewer registered than asked in time."""


class EngineIdReserved(EngineStartError):
    """An engine registered under a new id: the controller still reserves the requested
    one for an engine that died while registering (``registration_timeout``)."""


class EngineNotFoundError(PxpoolError, LookupError):
    """An engine id that the pool does not have."""

    def __init__(self, engine_id: object, known: Iterable[int]) -> None:
        self.engine_id = engine_id
        self.known = sorted(known)
        super().__init__(
            f"No engine {engine_id!r} in this pool; engines: {self.known or '(none)'}. "
            "See `pool.ids` for the current engine ids."
        )


class EngineStopError(PxpoolError):
    """Engines that were stopped are still registered with the controller after the
    timeout, so they cannot be removed from the pool's record yet."""


class EnvironmentCheckError(PxpoolError):
    """Engines did not report their environment in time, or the check failed on them."""


# ------------------------------------------------------------ map and data


class MapError(PxpoolError, RuntimeError):
    """``f`` failed on an engine; ``__cause__`` is the engine's error with its traceback.

    ``engine_id`` is the engine that ran the failing chunk, ``index`` the position of
    the failing item (for numpy and pandas input, the first row of the failing
    partition) or ``None`` when the engine died before reporting it, and
    ``chunk`` the ``(start, stop)`` positions of the chunk that engine was running.
    """

    def __init__(
        self,
        function: str,
        engine_id: int | None,
        index: int | None,
        chunk: tuple[int, int],
        what: str,
        partition: bool = False,
        hint: str | None = None,
    ) -> None:
        self.function = function
        self.engine_id = engine_id
        self.index = index
        self.chunk = chunk
        start, stop = chunk
        if partition:
            where = f"the partition of rows {start}..{stop - 1} (positions)"
            retry = f"run `{function}(data.iloc[{start}:{stop}])` (or `data[{start}:{stop}]`) here"
        elif index is not None:
            where = f"item {index}"
            retry = f"run `{function}(values[{index}])` here"
        else:
            where = f"one of items {start}..{stop - 1}"
            retry = f"run `{function}` here on items {start}..{stop - 1}"
        engine = f"engine {engine_id}" if engine_id is not None else "an engine"
        advice = hint or (
            f"The engine's traceback is in this error's __cause__; {retry} to reproduce it."
        )
        super().__init__(
            f"pool.map: {function} failed on {engine} for {where}: {what.rstrip('.')}. {advice}"
        )


class UnpicklableFunctionError(PxpoolError, TypeError):
    """The mapped function cannot be serialized for the engines."""

    def __init__(
        self, function: str, reason: str, caller: str = "pool.map", *, cloudpickled: bool = False
    ) -> None:
        self.function = function
        advice = (
            "It was sent with cloudpickle, by value with the globals it uses: avoid capturing "
            "locks, sockets, open files or clients in it or in those globals."
            if cloudpickled
            else "Define it at module level in an importable module (engines import it by "
            "name), avoid capturing locks, sockets or open files in it, or switch to "
            "cloudpickle with `pool.view().use_cloudpickle()`."
        )
        super().__init__(
            f"{caller} cannot send function {function!r} to the engines: {reason}. {advice}"
        )


class UnpicklableArgumentError(PxpoolError, TypeError):
    """An argument of a task (or an item of ``pool.map``) cannot be serialized.

    ``what`` names the argument (``"argument 1"``, ``"keyword 'x'"``, ``"item 7"``),
    ``function`` the function it was for.
    """

    def __init__(self, function: str, what: str, value: Any, reason: str) -> None:
        self.function = function
        self.what = what
        super().__init__(
            f"cannot send {what} of {function} (a {type(value).__name__}) to the engines: "
            f"{reason}. Send what it holds instead (data, a path, parameters) and create "
            "locks, sockets, open files or connections on the engine."
        )


class EngineNameError(PxpoolError, NameError):
    """``pool.pull`` asked for names that some engines do not define."""

    def __init__(self, names: list[str], engines: list[int]) -> None:
        self.names = names
        self.engines = engines
        shown = ", ".join(repr(n) for n in names)
        super().__init__(
            f"pool.pull: {shown} not defined on engine(s) {engines}. Set it first with "
            "`pool.push({...})` or `pool.execute(...)`, or check the spelling "
            "(`pool.view().apply_sync(dir)` lists the names on each engine)."
        )


# ------------------------------------------------------------ faults under a task


class TaskTimeout(PxpoolError, TimeoutError):
    """A task ran longer than its ``timeout``; ``action`` says what was done to its
    engine: ``"interrupted"`` (SIGINT ended the task) or ``"replaced"`` (the engine
    did not yield, so it was killed and a new one started under the same id)."""

    def __init__(self, task: str, engine_id: int | None, timeout: float, action: str) -> None:
        self.task = task
        self.engine_id = engine_id
        self.timeout = timeout
        self.action = action
        done = (
            "it was interrupted with SIGINT"
            if action == "interrupted"
            else "it did not yield to SIGINT, so it was killed and replaced under the same id"
        )
        super().__init__(
            f"{task} ran longer than timeout={timeout:g}s on engine {engine_id}; {done}. "
            "Raise the timeout, or cut the work into smaller pieces (pool.map chunks)."
        )


class EngineDied(PxpoolError, RuntimeError):
    """The engine running ``task`` died; ``how`` is e.g. ``"killed by SIGKILL"``."""

    def __init__(self, task: str, engine_id: int | None, how: str, retried: int = 0) -> None:
        self.task = task
        self.engine_id = engine_id
        self.how = how
        self.retried = retried
        tries = (
            f" after {retried} retr{'y' if retried == 1 else 'ies'} on other engines"
            if retried
            else ""
        )
        engine = (
            "an engine that was joining the pool" if engine_id is None else f"engine {engine_id}"
        )
        super().__init__(
            f"{task} was lost{tries}: {engine} died while running it ({how}). "
            "See `pool.health()` for the engine's history; pass retries=N to retry on "
            'other engines, or restart = "on-failure" in the profile to replace engines.'
        )


class TaskLost(EngineDied):
    """A load-balanced task or map chunk whose retries are used up."""


# ------------------------------------------------------------ debugging


class DebugError(PxpoolError, RuntimeError):
    """A debugging request cannot be served (nothing to debug, no debugger on the engine)."""


class DebugConnectionError(DebugError, ConnectionError):
    """The debugger connection could not be made, closed, or timed out."""


class DebugAuthError(DebugConnectionError):
    """A message failed authentication (no signature, wrong key, replayed or reordered),
    or the engine refused this connection for that reason."""


class DebuggerQuit(PxpoolError, RuntimeError):
    """Raised in a task on the engine when the user quits (``q``) a breakpoint session.

    The task ends with this error; the engine itself keeps running and takes new tasks.
    """
