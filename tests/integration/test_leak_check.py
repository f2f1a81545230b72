"""The leaked-process check itself: a test that leaves a pool running must fail.

Each kind of leftover the check must see is left on purpose by a test of a small pytest
session run in a subprocess with the project's conftest: engines started through the
test sshd (processes of an ssh session, not children of the test), an ``ssh -N -L``
forward, an engine on another host of the test lab, an engine whose command line was
rewritten, and batch jobs left in the SLURM and SGE queues. Each of those tests must fail at teardown naming what it left, and what
it left must be gone afterwards; a pool that stops properly passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psutil
import pytest

from .batch_helpers import SGE_QUEUE, SLURM_PARTITION, need, need_sge, sge_jobs, slurm_jobs
from .ssh_helpers import (
    SSH_HOST,
    SSH_KEY,
    SSH_OPTIONS,
    SSH_PORT,
    SSH_USER,
    remote_engines,
    ssh_overrides,
)
from .test_lab_ssh import engines_on, lab_host, lab_overrides, need_lab

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration
CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
LAB_HOST = "pxlab2"
LEAKY_TESTS = [
    "test_leaves_an_ssh_engine",
    "test_leaves_an_engine_on_a_lab_host",
    "test_leaves_an_ssh_forward",
    "test_leaves_a_renamed_engine",
    "test_leaves_a_slurm_job",
    "test_leaves_an_sge_job",
]


def test_a_test_that_leaves_engines_running_fails_and_they_are_killed(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(
        test_leaky="""
        import pxpool

        def test_forgets_to_stop():
            pxpool.Pool.from_profile("local", engines=1).start_sync()

        def test_stops_properly():
            with pxpool.Pool.from_profile("local", engines=1) as pool:
                assert pool.ids == [0]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*test left * pool process(es) running (killed now)*", "*pxpool._entry.controller_main*"]
    )


# ------------------------------------------------- leftovers the check must also see

LEAKY = """
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pxpool

SSH = {ssh!r}
LAB = {lab!r}
FORWARD = {forward!r}
DESTINATION = {destination!r}
SLURM = {slurm!r}
SGE = {sge!r}


def record(name, **facts):
    folder = Path("facts")
    folder.mkdir(exist_ok=True)
    (folder / f"{{name}}.json").write_text(json.dumps(facts))


def engine_pid(pool):
    return pool.apply(os.getpid)


def rename_me(title):
    '''Runs on an engine: rewrites its own command line, as setproctitle does.'''
    import os

    with open("/proc/self/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48, 49
    text = title.encode()[: end - start - 1]
    with open("/proc/self/mem", "r+b", buffering=0) as memory:
        memory.seek(start)
        memory.write(text + bytes(end - start - len(text)))
    with open("/proc/self/cmdline", "rb") as handle:
        return os.getpid(), handle.read().replace(bytes(1), b" ").decode().strip()


def test_leaves_an_ssh_engine():
    pool = pxpool.Pool.from_profile("ssh", **SSH)
    pool.start_sync()
    record("ssh", pid=engine_pid(pool), pool=pool.name)


def test_leaves_an_engine_on_a_lab_host():
    pool = pxpool.Pool.from_profile("ssh", **LAB)
    pool.start_sync()
    record("lab", pid=engine_pid(pool), host=pool.apply(socket.gethostname), pool=pool.name)


def test_leaves_an_ssh_forward():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = subprocess.Popen(
        ["ssh", *FORWARD, "-N", "-L", f"127.0.0.1:{{port}}:127.0.0.1:{ssh_port}", DESTINATION],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and forward.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    assert forward.poll() is None, "the forward did not come up"
    record("forward", pid=forward.pid)


def test_leaves_a_renamed_engine():
    pool = pxpool.Pool.from_profile("local", engines=1)
    pool.start_sync()
    pid, cmdline = pool.apply(rename_me, "renamed-worker")
    assert cmdline == "renamed-worker", cmdline
    record("renamed", pid=pid)


def test_leaves_a_slurm_job():
    pool = pxpool.Pool.from_profile("slurm", **SLURM)
    pool.start_sync()
    record("slurm", pool=pool.name)


def test_leaves_an_sge_job():
    pool = pxpool.Pool.from_profile("sge", **SGE)
    pool.start_sync()
    record("sge", pool=pool.name)


def test_stops_an_ssh_pool_properly():
    with pxpool.Pool.from_profile("ssh", **SSH) as pool:
        assert pool.apply(abs, -1) == 1
"""


@pytest.fixture(scope="module")
def leaky_session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Runs the leaky session once: each test's outcome and teardown error, the facts
    each test recorded about what it left, and the session's output."""
    need("sbatch", "run `bash infra/up.sh` first")
    need_sge()
    need_lab()
    forward = [*SSH_OPTIONS, "-i", SSH_KEY, "-p", str(SSH_PORT), "-o", "BatchMode=yes"]
    forward += ["-o", "ExitOnForwardFailure=yes"]
    folder = tmp_path_factory.mktemp("leaky")
    (folder / "conftest.py").write_text(CONFTEST.read_text())
    (folder / "test_leaky.py").write_text(
        LEAKY.format(
            ssh=ssh_overrides(engines=1),
            lab=lab_overrides([lab_host(LAB_HOST)]),
            forward=forward,
            destination=f"{SSH_USER}@{SSH_HOST}",
            ssh_port=SSH_PORT,
            slurm={"engines": 1, "partition": SLURM_PARTITION, "start_timeout": 60},
            sge={"engines": 1, "queue": SGE_QUEUE, "start_timeout": 60},
        )
    )
    env = {**os.environ, "PXPOOL_TEST_LEAK_GRACE": "1"}  # nothing here is still stopping
    env.pop("PXPOOL_TEST_SESSION", None)  # the inner session gets its own
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--junitxml=report.xml"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    outcomes: dict[str, str] = {}
    errors: dict[str, str] = {}
    for case in ET.parse(folder / "report.xml").getroot().iter("testcase"):
        name = case.get("name", "")
        error, failure = case.find("error"), case.find("failure")
        outcomes[name] = "error" if error is not None else "passed" if failure is None else "failed"
        errors[name] = "" if error is None else f"{error.get('message')}\n{error.text}"
    facts = {path.stem: json.loads(path.read_text()) for path in (folder / "facts").glob("*.json")}
    return {"outcomes": outcomes, "errors": errors, "facts": facts, "output": done.stdout}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_leaky_session_fails_once_per_leftover_and_passes_a_clean_stop(
    leaky_session: dict[str, Any],
) -> None:
    expected = {name: "error" for name in LEAKY_TESTS}
    expected["test_stops_an_ssh_pool_properly"] = "passed"
    assert leaky_session["outcomes"] == expected, leaky_session["output"][-3000:]


def test_engines_started_through_sshd_are_found_and_killed(
    leaky_session: dict[str, Any],
) -> None:
    """The engine runs under the test sshd, not under the test: it is found through the
    ssh client that started it, named, and killed (with its nanny)."""
    facts = leaky_session["facts"]["ssh"]
    error = leaky_session["errors"]["test_leaves_an_ssh_engine"]
    assert f"{facts['pid']}: " in error and "through ssh" in error, error
    assert gone(facts["pid"])
    assert remote_engines(facts["pool"]) == []


def test_engines_on_lab_hosts_are_found_and_killed(leaky_session: dict[str, Any]) -> None:
    """An engine on another host (a lab host: its own namespaces, the same kernel) is
    found through the ssh client that started it, and killed there."""
    facts = leaky_session["facts"]["lab"]
    error = leaky_session["errors"]["test_leaves_an_engine_on_a_lab_host"]
    assert facts["host"] == LAB_HOST
    assert f"{facts['pid']}: " in error and "through ssh" in error, error
    assert gone(facts["pid"])
    assert engines_on(LAB_HOST, facts["pool"]) == []


def test_ssh_forwards_are_found_and_killed(leaky_session: dict[str, Any]) -> None:
    facts = leaky_session["facts"]["forward"]
    error = leaky_session["errors"]["test_leaves_an_ssh_forward"]
    assert f"{facts['pid']}: ssh " in error, error
    assert gone(facts["pid"])


def test_renamed_engines_are_found_and_killed(leaky_session: dict[str, Any]) -> None:
    """Its command line names no engine: it is found by the session and pool variables
    in its environment."""
    facts = leaky_session["facts"]["renamed"]
    error = leaky_session["errors"]["test_leaves_a_renamed_engine"]
    assert f"{facts['pid']}: renamed-worker" in error, error
    assert gone(facts["pid"])


@pytest.mark.parametrize(
    ("system", "queued"), [("slurm", slurm_jobs), ("sge", sge_jobs)], ids=["slurm", "sge"]
)
def test_batch_jobs_left_in_the_queue_are_found_and_cancelled(
    leaky_session: dict[str, Any], system: str, queued: Any
) -> None:
    facts = leaky_session["facts"][system]
    error = leaky_session["errors"][f"test_leaves_a{'n' if system == 'sge' else ''}_{system}_job"]
    assert f"{system} job " in error and f"pxpool-{facts['pool']}-0" in error, error
    assert queued(facts["pool"]) == []
