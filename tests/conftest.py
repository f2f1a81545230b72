"""Test-wide isolation and the leaked-process check.

Every test runs with its own pxpool runtime directory and an empty user profile
directory, and without the developer's PXPOOL_* settings. After each test, any pool
process that was not there before the test is a leak: the test fails and the processes
are killed so the next test starts clean. Pool processes are this session's (they carry
its marker variable) controllers, engines and nannies, found by their command line or,
when it was rewritten, by the pool variables in their environment; ``ssh -N`` forwards;
and engines started through an ssh session (on the test sshd, or a lab host in a
network namespace of this machine), which neither descend from the test nor carry its
marker: they are found through the session's ssh client that started them. So is a batch job of this session (its output file is in the session's
runtime directory) still in the SLURM or SGE queue: it is cancelled. And so is a memory
cgroup (``[engine] memory_limit``) of a pool that has stopped.

Under ``PXPOOL_REQUIRE_SERVICES=1`` (set by ``scripts/test.sh``, the README's test
command, which installs and checks every service the tests use) a skip is a failure
that names the skip's reason: a run that lacks a service fails instead of passing with
that service's tests skipped. Every skip counts, not only those of tests marked
``integration``: on the machine that command prepares no test has a reason to skip, and
a rule keyed on the marker would let a service-backed test that lacks the marker (or a
unit test whose capability is missing, such as POSIX shared memory) pass by skipping.
An expected failure (``xfail``) is not a skip and stays as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
# How long processes of a pool that just stopped get to exit (PXPOOL_TEST_LEAK_GRACE:
# the leak check's own tests, whose leftovers never exit by themselves, set it lower).
LEAK_GRACE_SECONDS = float(os.environ.get("PXPOOL_TEST_LEAK_GRACE", "5"))
# Variables ipyparallel and pxpool give a pool's processes (and pxpool's ssh forwards):
# they survive a rewritten command line; an engine started over ssh gets the last one.
POOL_VARIABLES = ("IPP_CLUSTER_ID", "IPP_PROFILE_DIR")
SSH_ENGINE_VARIABLE = "IPP_CONNECTION_INFO"


SESSION_MARKER = "PXPOOL_TEST_SESSION"
STANDIN_POOL_DIR = "PXPOOL_STANDIN_POOL_DIR"  # tests/standins/fake_kube_objects.py
REQUIRE_SERVICES = "PXPOOL_REQUIRE_SERVICES"


def _fail_if_skipped(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under PXPOOL_REQUIRE_SERVICES=1, turn a skipped report into a failed one that
    names the skip's reason."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    if os.environ.get(REQUIRE_SERVICES) != "1":
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr
    report.outcome = "failed"
    report.longrepr = (
        f"{REQUIRE_SERVICES}=1 (the README's test command): a skip is a failure. "
        f"Skipped: {str(reason).removeprefix('Skipped: ')}"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A skip in setup (``skipif``, a fixture's ``pytest.skip``) or in the test."""
    report = yield
    _fail_if_skipped(report)
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module that skips itself (``allow_module_level``, ``importorskip``): an error
    collecting it."""
    report = yield
    _fail_if_skipped(report)
    return report


def _is_pool_process(argv: list[str], environ: dict[str, str]) -> bool:
    """A pool's process by its command line or, whatever its command line now says,
    its environment; or an ``ssh -N`` forward (``-L``, ``-R``), pxpool's or a test's."""
    cmdline = " ".join(argv)
    if any(pattern in cmdline for pattern in LEAK_PATTERNS):
        return True
    if any(name in environ for name in POOL_VARIABLES):
        return True
    forwards = any(arg.startswith(("-L", "-R")) for arg in argv)
    return bool(argv) and os.path.basename(argv[0]) == "ssh" and "-N" in argv and forwards


def _ssh_client_address(environ: dict[str, str]) -> tuple[str, int] | None:
    """The client end (address, port) of the ssh session a process runs in."""
    words = environ.get("SSH_CLIENT", "").split()
    return (words[0], int(words[1])) if len(words) == 3 and words[1].isdigit() else None


def _through_ssh(
    clients: dict[int, str], started: list[tuple[int, str, tuple[str, int]]]
) -> dict[int, tuple[str, str]]:
    """The processes in ``started`` whose ssh session one of ``clients`` (pid -> pool dir,
    this session's ssh clients) opened: its local end is their SSH_CLIENT."""
    ends = {}
    for pid, pool_dir in clients.items():
        try:
            for connection in psutil.Process(pid).net_connections("tcp"):
                if connection.laddr:
                    ends[(connection.laddr.ip, connection.laddr.port)] = pool_dir
        except psutil.Error:
            continue
    return {
        pid: (f"{cmdline} (through ssh)", ends[end]) for pid, cmdline, end in started if end in ends
    }


def _pool_processes() -> dict[int, tuple[str, str]]:
    """Pool processes started by this test session, as pid -> (command, pool dir).

    They inherit the session's marker variable, so a concurrent run on the same
    machine is neither blamed nor killed; ipyparallel gives each process its pool's
    profile directory in IPP_PROFILE_DIR. Engines started over ssh inherit neither:
    they are this session's when one of its ssh clients opened their ssh session.
    """
    found = {}
    marker = os.environ.get(SESSION_MARKER)
    clients: dict[int, str] = {}  # this session's ssh clients -> their pool dir
    started: list[tuple[int, str, tuple[str, int]]] = []  # run by sshd for someone
    for process in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            argv = process.info["cmdline"] or []
            environ = process.environ()
        except psutil.Error:
            continue
        pid, cmdline = process.info["pid"], " ".join(argv)
        if environ.get(SESSION_MARKER) == marker:
            if _is_pool_process(argv, environ):
                # engines in the Kubernetes stand-in's pods share no pool dir: it names it
                pool_dir = environ.get("IPP_PROFILE_DIR") or environ.get(STANDIN_POOL_DIR, "")
                found[pid] = (cmdline, pool_dir)
            if process.info["name"] == "ssh":
                clients[pid] = environ.get("IPP_PROFILE_DIR", "")
        elif SSH_ENGINE_VARIABLE in environ or any(p in cmdline for p in LEAK_PATTERNS):
            end = _ssh_client_address(environ)
            if end is not None:
                started.append((pid, cmdline, end))
    if clients and started:
        found.update(_through_ssh(clients, started))
    return found


def _pool_dirs() -> set[str]:
    runtime = Path(os.environ["PXPOOL_RUNTIME_DIR"])
    return {str(p) for p in runtime.iterdir() if p.is_dir()} if runtime.is_dir() else set()


def _runtime_state() -> tuple[int, ...]:
    """Changes when a pool directory comes or goes (a pool starts or stops)."""
    try:
        return (Path(os.environ["PXPOOL_RUNTIME_DIR"]).stat().st_mtime_ns,)
    except OSError:
        return ()


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout


def _slurm_jobs() -> list[tuple[str, str, str]]:
    """(id, name, output file) of every job squeue lists."""
    if shutil.which("squeue") is None:
        return []
    widths = (30, 200)  # fixed-width columns: id, name, then the output file
    lines = _run(["squeue", "-h", "-O", f"JobID:{widths[0]},Name:{widths[1]},StdOut:4000"])
    return [
        (line[: widths[0]].strip(), line[widths[0] : sum(widths)].strip(), line[sum(widths) :])
        for line in lines.splitlines()
        if line.strip()
    ]


def _sge_jobs() -> list[tuple[str, str, str]]:
    """(id, name, output file) of every job Grid Engine's qstat lists."""
    if shutil.which("qstat") is None:
        return []
    listed = ET.fromstring(_run(["qstat", "-u", "*", "-xml"]))
    ids = [job.findtext("JB_job_number", "") for job in listed.iter("job_list")]
    if not ids:
        return []
    details = ET.fromstring(_run(["qstat", "-j", ",".join(ids), "-xml"]))
    return [
        (job.findtext("JB_job_number", ""), job.findtext("JB_job_name", ""), path)
        for job in details.iter("element")
        if job.find("JB_job_number") is not None
        for path in [job.findtext("JB_stdout_path_list/path_list/PN_path", "")]
    ]


BATCH_SYSTEMS = {
    "slurm": (_slurm_jobs, ["scancel"]),
    "sge": (_sge_jobs, ["qdel", "-f"]),  # the PBS tests' jobs are SLURM's
}


def _session_jobs() -> dict[tuple[str, str], tuple[str, str]]:
    """This session's batch jobs in a queue, (system, id) -> (name, pool dir): their
    output file is in the session's runtime directory, under their pool's."""
    runtime = os.path.join(os.environ["PXPOOL_RUNTIME_DIR"], "")
    found = {}
    for system, (listing, _) in BATCH_SYSTEMS.items():
        try:
            jobs = listing()
        except (OSError, subprocess.SubprocessError, ET.ParseError):
            continue  # not installed here, or not this system's qstat (PBS's on PATH)
        for job_id, name, output in jobs:
            if output.startswith(runtime):
                pool = output[len(runtime) :].split(os.sep)[0]
                found[(system, job_id)] = (name, runtime + pool)
    return found


def _cancel(jobs: Collection[tuple[str, str]]) -> None:
    """Cancel ``jobs`` ((system, id) pairs) and wait, bounded, until no queue lists them."""
    for system, (_, command) in BATCH_SYSTEMS.items():
        ids = [job_id for kind, job_id in jobs if kind == system]
        if ids:
            subprocess.run([*command, *ids], capture_output=True, timeout=20, check=False)
    deadline = time.monotonic() + 15
    while jobs and set(_session_jobs()) & set(jobs) and time.monotonic() < deadline:
        time.sleep(0.25)


def _kill(pids: object) -> None:
    for pid in pids:  # type: ignore[attr-defined]
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def _after_grace(find: Callable[[], dict[Any, Any]], interval: float) -> dict[Any, Any]:
    """What ``find`` still finds after the grace given to a pool that just stopped."""
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    found = find()
    while found and time.monotonic() < deadline:
        time.sleep(interval)
        found = find()
    return found


def _leftover_lines(processes: dict[int, tuple[str, str]], jobs: dict[Any, Any]) -> list[str]:
    lines = []
    if processes:
        lines.append(f"test left {len(processes)} pool process(es) running (killed now):")
        lines += [f"  {pid}: {cmd[:240].rstrip()}" for pid, (cmd, _) in sorted(processes.items())]
    if jobs:
        lines.append(f"test left {len(jobs)} batch job(s) in a queue (cancelled now):")
        lines += [f"  {s} job {i}: {name}" for (s, i), (name, _) in sorted(jobs.items())]
    return lines


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """A test may leave processes and batch jobs of pools that existed before it started
    (a class or module fixture's pool it scaled or restarted); anything else it started
    must be gone when it ends. The queues are asked only when a pool came or went."""
    before = set(_pool_processes())
    fixture_pools = _pool_dirs()
    runtime = _runtime_state()
    yield

    def fixture_pool(pool_dir: str) -> bool:
        return pool_dir in fixture_pools and os.path.isdir(pool_dir)

    processes = _after_grace(
        lambda: {
            pid: info
            for pid, info in _pool_processes().items()
            if pid not in before and not fixture_pool(info[1])
        },
        0.1,
    )
    jobs = {}
    if _runtime_state() != runtime:
        jobs = _after_grace(
            lambda: {
                job: info for job, info in _session_jobs().items() if not fixture_pool(info[1])
            },
            0.25,
        )
    _kill(processes)
    _cancel(jobs)
    lines = _leftover_lines(processes, jobs)
    groups = _leaked_memory_groups()
    if groups:
        lines.append(f"test left the memory cgroups of stopped pools (removed now): {groups}")
    if lines:
        pytest.fail("\n".join(lines))


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
    jobs = _session_jobs()
    if jobs:
        _cancel(jobs)
        print(f"\npxpool tests: {len(jobs)} batch job(s) left at session end (cancelled):")
        for (system, job_id), (name, _) in sorted(jobs.items()):
            print(f"  {system} job {job_id}: {name}")
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
