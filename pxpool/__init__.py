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
    "PoolNotFoundError": ".errors",
    "PoolStartError": ".errors",
    "ControllerStartError": ".errors",
    "EngineStartError": ".errors",
    "EngineNotFoundError": ".errors",
    "MapError": "._data_errors",
    "UnpicklableFunctionError": "._data_errors",
    "TaskTimeout": "._fault_errors",
    "EngineDied": "._fault_errors",
    "TaskLost": "._fault_errors",
    "ResultTooLarge": "._reliability.result_limit",
    "DebugSession": ".debug",
    "DebugError": ".debug",
    "DebugAuthError": ".debug",
    "DebuggerQuit": ".debug",
    "SubmitCommandNotFound": ".engines.batch_errors",
    "SubmitRejected": ".engines.batch_errors",
    "JobFailedError": ".engines.batch_errors",
    "EnginesMissingError": ".engines.batch_errors",
    "SSHConnectError": ".engines.ssh_errors",
    "RemotePythonError": ".engines.ssh_errors",
    "EnvironmentMismatchWarning": ".doctor",
    "UnpicklableArgumentError": "._data_errors",
    "EngineNameError": "._data_errors",
}

__all__ = ["__version__", *_EXPORTS]


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
    from ._data_errors import EngineNameError as EngineNameError
    from ._data_errors import MapError as MapError
    from ._data_errors import UnpicklableArgumentError as UnpicklableArgumentError
    from ._data_errors import UnpicklableFunctionError as UnpicklableFunctionError
    from ._fault_errors import EngineDied as EngineDied
    from ._fault_errors import TaskLost as TaskLost
    from ._fault_errors import TaskTimeout as TaskTimeout
    from ._reliability.result_limit import ResultTooLarge as ResultTooLarge
    from .debug import DebugAuthError as DebugAuthError
    from .debug import DebugError as DebugError
    from .debug import DebuggerQuit as DebuggerQuit
    from .debug import DebugSession as DebugSession
    from .doctor import EnvironmentMismatchWarning as EnvironmentMismatchWarning
    from .engines.batch_errors import EnginesMissingError as EnginesMissingError
    from .engines.batch_errors import JobFailedError as JobFailedError
    from .engines.batch_errors import SubmitCommandNotFound as SubmitCommandNotFound
    from .engines.batch_errors import SubmitRejected as SubmitRejected
    from .engines.ssh_errors import RemotePythonError as RemotePythonError
    from .engines.ssh_errors import SSHConnectError as SSHConnectError
    from .errors import ControllerStartError as ControllerStartError
    from .errors import EngineNotFoundError as EngineNotFoundError
    from .errors import EngineStartError as EngineStartError
    from .errors import PoolNotFoundError as PoolNotFoundError
    from .errors import PoolStartError as PoolStartError
    from .errors import PoolStateError as PoolStateError
    from .errors import ProfileError as ProfileError
    from .errors import ProfileValidationError as ProfileValidationError
    from .errors import PxpoolError as PxpoolError
    from .errors import UnknownProfileError as UnknownProfileError
    from .health import EngineSnapshot as EngineSnapshot
    from .magics import load_ipython_extension as load_ipython_extension
    from .magics import unload_ipython_extension as unload_ipython_extension
    from .pool import Pool as Pool
    from .pool import current as current
    from .profile import Profile as Profile
    from .profile import list_profiles as list_profiles
    from .profile import load_profile as load_profile
