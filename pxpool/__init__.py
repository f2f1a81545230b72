"""pxpool: a Jupyter-first pool of parallel IPython engines.

Start a pool from a profile, run work on its engines, stop it::

    import pxpool
    with pxpool.Pool.from_profile("local", engines=4) as pool:
        pool.push({"scale": 2})
        print(pool.apply(lambda x: x * scale, 21))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._tasks import joblib_hook as _joblib_hook
from ._version import __version__

# Names are imported on first use: engines import pxpool's small engine-side modules
# (the debugger and health agents, map runners), and importing the client side with
# them (pandas, the magics, the pool) would add ~0.3 s to every engine's first task.
_EXPORTS = {
    "load_ipython_extension": ".magics",
    "unload_ipython_extension": ".magics",
    "Pool": ".pool",
    "current": ".pool",
    "Profile": ".profile",
    "load_profile": ".profile",
    "list_profiles": ".profile",
    "EngineSnapshot": ".health",
    "PxpoolError": ".errors",
    "ProfileError": ".errors",
    "UnknownProfileError": ".errors",
    "ProfileValidationError": ".errors",
    "PoolStateError": ".errors",
    "NoEnginesError": ".errors",
    "PoolNotFoundError": ".errors",
    "PoolStartError": ".errors",
    "ControllerStartError": ".errors",
    "EngineStartError": ".errors",
    "EngineNotFoundError": ".errors",
    "MapError": ".errors",
    "UnpicklableFunctionError": ".errors",
    "TaskTimeout": ".errors",
    "EngineDied": ".errors",
    "TaskLost": ".errors",
    "ResultTooLarge": "._core.client",
    "TaskError": "._core.client",
    "TaskFuture": "._tasks.future",
    "as_completed": "._tasks.future",
    "wait": "._tasks.future",
    "DebugSession": ".debug",
    "DebugError": ".errors",
    "DebugAuthError": ".errors",
    "DebuggerQuit": ".errors",
    "SubmitCommandNotFound": ".engines.errors",
    "SubmitRejected": ".engines.errors",
    "JobFailedError": ".engines.errors",
    "EnginesMissingError": ".engines.errors",
    "SSHConnectError": ".engines.errors",
    "RemotePythonError": ".engines.errors",
    "EnvironmentMismatchWarning": ".doctor",
    "UnpicklableArgumentError": ".errors",
    "EngineNameError": ".errors",
}

__all__ = ["__version__", *_EXPORTS]

# joblib's backend="pxpool": registered now if joblib is loaded, else when it is imported
# (a finder on sys.meta_path; joblib itself is not imported here)
_joblib_hook.register_when_imported()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pxpool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from concurrent.futures import as_completed as as_completed
    from concurrent.futures import wait as wait

    from ._core.client import ResultTooLarge as ResultTooLarge
    from ._core.client import TaskError as TaskError
    from ._tasks.future import TaskFuture as TaskFuture
    from .debug import DebugSession as DebugSession
    from .doctor import EnvironmentMismatchWarning as EnvironmentMismatchWarning
    from .engines.errors import EnginesMissingError as EnginesMissingError
    from .engines.errors import JobFailedError as JobFailedError
    from .engines.errors import RemotePythonError as RemotePythonError
    from .engines.errors import SSHConnectError as SSHConnectError
    from .engines.errors import SubmitCommandNotFound as SubmitCommandNotFound
    from .engines.errors import SubmitRejected as SubmitRejected
    from .errors import ControllerStartError as ControllerStartError
    from .errors import DebugAuthError as DebugAuthError
    from .errors import DebugError as DebugError
    from .errors import DebuggerQuit as DebuggerQuit
    from .errors import EngineDied as EngineDied
    from .errors import EngineNameError as EngineNameError
    from .errors import EngineNotFoundError as EngineNotFoundError
    from .errors import EngineStartError as EngineStartError
    from .errors import MapError as MapError
    from .errors import NoEnginesError as NoEnginesError
    from .errors import PoolNotFoundError as PoolNotFoundError
    from .errors import PoolStartError as PoolStartError
    from .errors import PoolStateError as PoolStateError
    from .errors import ProfileError as ProfileError
    from .errors import ProfileValidationError as ProfileValidationError
    from .errors import PxpoolError as PxpoolError
    from .errors import TaskLost as TaskLost
    from .errors import TaskTimeout as TaskTimeout
    from .errors import UnknownProfileError as UnknownProfileError
    from .errors import UnpicklableArgumentError as UnpicklableArgumentError
    from .errors import UnpicklableFunctionError as UnpicklableFunctionError
    from .health import EngineSnapshot as EngineSnapshot
    from .magics import load_ipython_extension as load_ipython_extension
    from .magics import unload_ipython_extension as unload_ipython_extension
    from .pool import Pool as Pool
    from .pool import current as current
    from .profile import Profile as Profile
    from .profile import list_profiles as list_profiles
    from .profile import load_profile as load_profile
