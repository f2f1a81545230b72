"""The public names are a contract: adding one is a decision, removing one breaks users."""

from __future__ import annotations

import inspect

import pxpool
import pxpool.errors

EXPECTED_PUBLIC_NAMES = {
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
    "NoEnginesError",
    "PoolNotFoundError",
    "PoolStartError",
    "ControllerStartError",
    "EngineStartError",
    "EngineNotFoundError",
    "MapError",
    "UnpicklableFunctionError",
    "SubmitCommandNotFound",
    "SubmitRejected",
    "JobFailedError",
    "EnginesMissingError",
    "SSHConnectError",
    "RemotePythonError",
    "EnvironmentMismatchWarning",
    "UnpicklableArgumentError",
    "EngineNameError",
    "TaskTimeout",
    "EngineDied",
    "TaskLost",
    "ResultTooLarge",
    "TaskError",
    "TaskFuture",
    "as_completed",
    "wait",
    "DebugSession",
    "DebugError",
    "DebugAuthError",
    "DebuggerQuit",
}

POOL_API = {
    "from_profile",
    "attach",
    "start",
    "start_sync",
    "stop",
    "stop_sync",
    "scale",
    "scale_sync",
    "restart",
    "restart_sync",
    "client",
    "view",
    "lbview",
    "ids",
    "engines",
    "push",
    "pull",
    "apply",
    "execute",
    "map",
    "scatter",
    "gather",
    "disconnect",
    "doctor",
    "health",
    "health_summary",
    "health_snapshots",
    "core_hours",
    "wake",
    "panel",
    "setup",
    "debug",
    "submit",
    "executor",
    "register_joblib",
    "adapt",
    "adapt_decisions",
    "dashboard_url",
    "task_events",
    "logs",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(pxpool.__all__) == EXPECTED_PUBLIC_NAMES
    for name in pxpool.__all__:
        assert hasattr(pxpool, name), name


def test_pool_offers_the_documented_methods() -> None:
    missing = {
        name for name in POOL_API if not hasattr(pxpool.Pool, name) and not name.endswith("_sync")
    }
    assert not missing
    pool_dir = set(dir(pxpool.Pool.__new__(pxpool.Pool)))
    assert {"start_sync", "stop_sync", "scale_sync", "restart_sync"} <= pool_dir


def test_coroutine_methods_are_async_like_ipyparallel() -> None:
    for name in ("start", "stop", "scale", "restart"):
        assert inspect.iscoroutinefunction(getattr(pxpool.Pool, name)), name


def test_every_public_error_is_a_pxpool_error_with_a_docstring() -> None:
    for name in pxpool.errors.__all__:
        cls = getattr(pxpool.errors, name)
        assert issubclass(cls, pxpool.PxpoolError)
        assert cls.__doc__ and cls.__doc__.strip(), name
        assert name in pxpool.errors.__doc__, f"{name} is missing from the tree drawn in errors.py"


def test_environment_mismatch_warning_is_a_user_warning() -> None:
    assert issubclass(pxpool.EnvironmentMismatchWarning, UserWarning)


def test_ssh_errors_are_engine_start_errors() -> None:
    for cls in (pxpool.SSHConnectError, pxpool.RemotePythonError):
        assert issubclass(cls, pxpool.EngineStartError)
        assert cls.__doc__ and cls.__doc__.strip()


def test_fault_errors_are_pxpool_errors_and_task_lost_is_an_engine_death() -> None:
    assert issubclass(pxpool.TaskTimeout, pxpool.PxpoolError)
    assert issubclass(pxpool.TaskTimeout, TimeoutError)
    assert issubclass(pxpool.TaskLost, pxpool.EngineDied)
    assert issubclass(pxpool.DebuggerQuit, pxpool.PxpoolError)


def test_task_futures_are_standard_futures_and_task_errors_remote_errors() -> None:
    import concurrent.futures

    import ipyparallel

    assert issubclass(pxpool.TaskFuture, concurrent.futures.Future)
    assert pxpool.as_completed is concurrent.futures.as_completed
    assert pxpool.wait is concurrent.futures.wait
    assert issubclass(pxpool.TaskError, pxpool.PxpoolError)
    assert issubclass(pxpool.TaskError, ipyparallel.RemoteError)
