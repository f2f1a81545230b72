"""pxpool: a Jupyter-first pool of parallel IPython engines.

Start a pool from a profile, run work on its engines, stop it::

    import pxpool
    with pxpool.Pool.from_profile("local", engines=4) as pool:
        pool.push({"scale": 2})
        print(pool.apply(lambda x: x * scale, 21))
"""

from __future__ import annotations

from ._data_errors import (
    EngineNameError,
    MapError,
    UnpicklableArgumentError,
    UnpicklableFunctionError,
)
from ._fault_errors import EngineDied, TaskLost, TaskTimeout
from ._result_limit import ResultTooLarge
from ._version import __version__
from .debug import DebugAuthError, DebugError, DebuggerQuit, DebugSession
from .doctor import EnvironmentMismatchWarning
from .engines.batch_errors import (
    EnginesMissingError,
    JobFailedError,
    SubmitCommandNotFound,
    SubmitRejected,
)
from .engines.ssh_errors import RemotePythonError, SSHConnectError
from .errors import (
    ControllerStartError,
    EngineNotFoundError,
    EngineStartError,
    PoolNotFoundError,
    PoolStartError,
    PoolStateError,
    ProfileError,
    ProfileValidationError,
    PxpoolError,
    UnknownProfileError,
)
from .health import EngineSnapshot
from .magics import load_ipython_extension, unload_ipython_extension
from .pool import Pool, current
from .profile import Profile, list_profiles, load_profile

__all__ = [
    "__version__",
    "load_ipython_extension",
    "unload_ipython_extension",
    "Pool",
    "current",
    "Profile",
    "load_profile",
    "list_profiles",
    "EngineSnapshot",
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
    "MapError",
    "UnpicklableFunctionError",
    "TaskTimeout",
    "EngineDied",
    "TaskLost",
    "ResultTooLarge",
    "DebugSession",
    "DebugError",
    "DebugAuthError",
    "DebuggerQuit",
    "SubmitCommandNotFound",
    "SubmitRejected",
    "JobFailedError",
    "EnginesMissingError",
    "SSHConnectError",
    "RemotePythonError",
    "EnvironmentMismatchWarning",
    "UnpicklableArgumentError",
    "EngineNameError",
]
