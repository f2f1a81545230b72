"""Every error pxpool raises on purpose, in one tree.

Each message says what failed, the values involved, and the next step::

    PxpoolError
    ├── ProfileError                 a profile cannot be found, read or validated
    │   ├── UnknownProfileError      no profile of that name (lists the known ones)
    │   └── ProfileValidationError   a key or value is wrong (names file, key, value)
    ├── PoolStateError               the call does not fit the pool's state (not started...)
    ├── PoolNotFoundError            no running pool of that name (for attach/stop)
    ├── PoolStartError               a pool did not come up within its timeout
    │   ├── ControllerStartError     the controller exited or never wrote its files
    │   ├── EngineStartError         engines exited or did not register in time
    │   │   ├── SSHConnectError      ssh to a host failed (host, ssh's stderr)
    │   │   ├── RemotePythonError    remote python missing or of another version
    │   │   ├── JobFailedError       a batch job ended before its engines registered
    │   │   └── EnginesMissingError  too few engines registered (pending jobs, reasons)
    │   ├── SubmitCommandNotFound    sbatch/qsub/bsub/condor_submit is not on PATH
    │   └── SubmitRejected           the batch system refused the job
    ├── EngineNotFoundError          an engine id that is not in the pool
    ├── MapError                     pool.map: f failed on an engine (names item/partition)
    ├── UnpicklableFunctionError     pool.map/apply: f cannot be sent to the engines
    ├── UnpicklableArgumentError     an argument or item cannot be sent to the engines
    ├── EngineNameError              pull of a name an engine does not have
    ├── TaskTimeout                  a task ran past its timeout=; its engine was stopped
    ├── ResultTooLarge               a result over [engine] max_result_size (not sent)
    ├── EngineDied                   the engine running a task died (says how)
    │   └── TaskLost                 ...and the task's retries are used up
    └── DebugError                   a debugger session could not open or broke
        (DebuggerQuit: `q` in a breakpoint session ended the task)

The errors of one feature live beside it (MapError in ``pxpool._data_errors``, batch
errors in ``pxpool.engines.batch_errors``, TaskTimeout in ``pxpool._fault_errors``,
ResultTooLarge in ``pxpool._reliability.result_limit``) and subclass these; ``pxpool`` exports every
public one.

Errors that carry a process's output keep it in ``.output`` and also quote its tail
in the message, so a notebook user sees the cause without opening a log file.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "PxpoolError",
    "ProfileError",
    "UnknownProfileError",
    "ProfileValidationError",
    "PoolStateError",
    "PoolNotFoundError",
    "PoolStartError",
    "ControllerStartError",
    "EngineStartError",
    "EngineNotFoundError",
]

OUTPUT_TAIL_LINES = 20


def tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of ``text``, indented for quoting in a message."""
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept)


class PxpoolError(Exception):
    """Base class: catch this to handle anything pxpool reports on purpose."""


class ProfileError(PxpoolError):
    """A profile cannot be found, parsed or validated."""


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


class PoolStateError(PxpoolError, RuntimeError):
    """The call needs a pool in another state (for example started, not stopped)."""


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


class EngineNotFoundError(PxpoolError, LookupError):
    """An engine id that the pool does not have."""

    def __init__(self, engine_id: object, known: Iterable[int]) -> None:
        self.engine_id = engine_id
        self.known = sorted(known)
        super().__init__(
            f"No engine {engine_id!r} in this pool; engines: {self.known or '(none)'}. "
            "See `pool.ids` for the current engine ids."
        )
