"""Test-wide isolation and the leaked-process check.

Every test runs with its own pxpool runtime directory and an empty user profile
directory, and without the developer's PXPOOL_* settings. After each test, any
ipyparallel controller, engine or nanny process that was not there before the test
is a leak: the test fails and the processes are killed so the next test starts clean.
So is a memory cgroup (``[engine] memory_limit``) of a pool that has stopped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

LEAK_PATTERNS = (
    "pxpool._entry.engine_main",
    "pxpool._engine_main",  # the old entry path, still runnable
    "pxpool._entry.nanny",
    "ipyparallel.engine",
    "ipyparallel.controller",
    "pxpool._entry.controller_main",
    "pxpool._controller_main",
    "ipengine",
    "ipcontroller",
    "ipyparallel.cluster",
)
LEAK_GRACE_SECONDS = 5.0


SESSION_MARKER = "PXPOOL_TEST_SESSION"


def _pool_processes() -> dict[int, tuple[str, str]]:
    """Pool processes started by this test session, as pid -> (command, pool dir).

    They inherit the session's marker variable, so a concurrent run on the same
    machine is neither blamed nor killed; ipyparallel gives each process its pool's
    profile directory in IPP_PROFILE_DIR.
    """
    found = {}
    marker = os.environ.get(SESSION_MARKER)
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if not any(pattern in cmdline for pattern in LEAK_PATTERNS):
                continue
            environ = process.environ()
            if environ.get(SESSION_MARKER) != marker:
                continue
        except psutil.Error:
            continue
        found[process.info["pid"]] = (cmdline, environ.get("IPP_PROFILE_DIR", ""))
    return found


def _pool_dirs() -> set[str]:
    runtime = Path(os.environ["PXPOOL_RUNTIME_DIR"])
    return {str(p) for p in runtime.iterdir() if p.is_dir()} if runtime.is_dir() else set()


def _kill(pids: object) -> None:
    for pid in pids:  # type: ignore[attr-defined]
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """A test may leave processes of pools that existed before it started (a class or
    module fixture's pool it scaled or restarted); anything else it started must be
    gone when it ends."""
    before = set(_pool_processes())
    fixture_pools = _pool_dirs()
    yield

    def leaked_now() -> dict[int, tuple[str, str]]:
        return {
            pid: info
            for pid, info in _pool_processes().items()
            if pid not in before and not (info[1] in fixture_pools and os.path.isdir(info[1]))
        }

    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    leaked = leaked_now()
    while leaked and time.monotonic() < deadline:
        time.sleep(0.1)
        leaked = leaked_now()
    if leaked:
        _kill(leaked)
        lines = "\n".join(f"  {pid}: {cmd[:160]}" for pid, (cmd, _) in sorted(leaked.items()))
        pytest.fail(f"test left {len(leaked)} pool process(es) running (killed now):\n{lines}")
    groups = _leaked_memory_groups()
    if groups:
        pytest.fail(f"test left the memory cgroups of stopped pools (removed now): {groups}")


def _leaked_memory_groups(pools_gone_only: bool = True) -> list[str]:
    """Memory cgroups (``[engine] memory_limit``) of this session's pools that stopped;
    removed on the way, so the next test starts clean."""
    from pxpool._core import runtime as _runtime
    from pxpool.engines import cgroups as _memory_limit

    leaked = []
    for name, group in _memory_limit.pool_groups().items():
        if pools_gone_only and _runtime.pool_dir(name).is_dir():
            continue  # a running pool (a module fixture's)
        leaked.append(str(group))
        _memory_limit.release_pool(name)
    return leaked


def pytest_configure(config: pytest.Config) -> None:
    """A private runtime dir and an empty user profile dir for the whole session, and no
    PXPOOL_* settings from the developer's shell (tests set their own with monkeypatch)."""
    from pxpool._profile import schema

    for flat in schema.BY_FLAT:
        os.environ.pop(f"PXPOOL_{flat.upper()}", None)
    base = Path(tempfile.mkdtemp(prefix="pxpool-tests-"))
    (base / "profiles").mkdir()
    os.environ["PXPOOL_RUNTIME_DIR"] = str(base / "runtime")
    os.environ["PXPOOL_PROFILE_DIR"] = str(base / "profiles")
    os.environ[SESSION_MARKER] = base.name


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Module- and session-scoped pools are checked here, after they stopped."""
    leftover = _pool_processes()
    if leftover:
        _kill(leftover)
        print(f"\npxpool tests: {len(leftover)} pool process(es) left at session end (killed):")
        for pid, (cmd, _) in sorted(leftover.items()):
            print(f"  {pid}: {cmd[:160]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    groups = _leaked_memory_groups(pools_gone_only=False)
    if groups:
        print(f"\npxpool tests: memory cgroups left at session end (removed): {groups}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    # the session's runtime and profile dirs: nothing a later run may rely on
    base = Path(tempfile.gettempdir()) / os.environ.get(SESSION_MARKER, "")
    if base.name.startswith("pxpool-tests-"):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def shell() -> Iterator[InteractiveShell]:
    """A real IPython shell with pxpool's extension loaded (one per test module)."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython() or InteractiveShell.instance()
    ip.run_line_magic("load_ext", "pxpool")
    yield ip
    ip.run_line_magic("unload_ext", "pxpool")
