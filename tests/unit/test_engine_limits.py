"""Engine limits without engines: profile keys, how a death is described, the cgroup
files read for OOM kills (both cgroup versions' formats), the result-size error."""

from __future__ import annotations

import signal
from pathlib import Path

import ipyparallel as ipp
import pytest

import pxpool
from pxpool._core.client import ResultTooLarge, unwrap_result_too_large
from pxpool._reliability.result_limit import human_size
from pxpool._reliability.supervisor import describe_exit
from pxpool.engines import cgroups as _memory_limit


def test_memory_limit_and_max_result_size_are_read_into_bytes() -> None:
    profile = pxpool.load_profile("local", memory_limit="512M", max_result_size="1.5G")
    assert profile.engine.memory_limit_bytes == 512 * 1024**2
    assert profile.engine.max_result_bytes == int(1.5 * 1024**3)


def test_defaults_are_no_memory_limit_and_a_one_gib_result_limit() -> None:
    engine = pxpool.load_profile("local").engine
    assert engine.memory_limit_bytes is None
    assert (engine.max_result_size, engine.max_result_bytes) == ("1G", 1024**3)


def test_zero_means_no_limit() -> None:
    engine = pxpool.load_profile("local", memory_limit="0", max_result_size="0").engine
    assert (engine.memory_limit_bytes, engine.max_result_bytes) == (None, 0)


def test_an_unreadable_size_names_the_source_and_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPOOL_MEMORY_LIMIT", "lots")
    with pytest.raises(
        pxpool.ProfileValidationError,
        match=r"environment variable PXPOOL_MEMORY_LIMIT: engine.memory_limit: cannot read "
        r"memory 'lots'; write a number with K, M, G or T",
    ):
        pxpool.load_profile("local")


def test_a_sigkill_is_out_of_memory_only_when_the_oom_count_rose() -> None:
    killed = -int(signal.SIGKILL)
    assert describe_exit(killed, 0, 1) == (
        "out of memory: the kernel's OOM killer ended it with SIGKILL"
    )
    assert describe_exit(killed, 2, 2) == "killed by SIGKILL"
    assert describe_exit(-int(signal.SIGSEGV), 0, 1) == "killed by SIGSEGV"
    assert describe_exit(3, 0, 1) == "exited with code 3"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"),  # v1
        ("memory.events", "low 0\nhigh 0\nmax 12\noom 5\noom_kill 4\noom_group_kill 0\n"),  # v2
    ],
)
def test_oom_kills_reads_either_cgroup_version(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    assert _memory_limit.oom_kills(tmp_path) == 4


def test_oom_kills_of_a_group_without_the_file_is_zero(tmp_path: Path) -> None:
    assert _memory_limit.oom_kills(tmp_path / "gone") == 0


def test_hierarchy_names_the_files_of_its_version() -> None:
    v1 = _memory_limit.Hierarchy(Path("/sys/fs/cgroup/memory"), 1)
    v2 = _memory_limit.Hierarchy(Path("/sys/fs/cgroup"), 2)
    assert (v1.limit_file, v1.oom_file) == ("memory.limit_in_bytes", "memory.oom_control")
    assert (v2.limit_file, v2.oom_file) == ("memory.max", "memory.events")


def test_a_mount_without_a_memory_controller_has_no_hierarchy(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu io pids\n")
    assert _memory_limit.hierarchy(tmp_path) is None


def test_result_too_large_arrives_as_a_pxpool_error_and_a_remote_error() -> None:
    content = {
        "status": "error",
        "ename": "ResultTooLarge",
        "evalue": "The result of a task on engine 1 is 2.0 GiB ...",
        "traceback": [],
        "engine_info": {"engine_id": 1, "method": "apply"},
    }
    error = unwrap_result_too_large(content, ipp.error.unwrap_exception(content))
    assert isinstance(error, ResultTooLarge)
    assert isinstance(error, pxpool.PxpoolError) and isinstance(error, ipp.RemoteError)
    assert str(error) == "The result of a task on engine 1 is 2.0 GiB ..."
    other = ipp.error.unwrap_exception({**content, "ename": "ValueError"})
    assert unwrap_result_too_large({**content, "ename": "ValueError"}, other) is other


def test_human_size() -> None:
    assert [human_size(n) for n in (12, 2048, 64 * 1024**2, 3 * 1024**3)] == [
        "12 bytes",
        "2.0 KiB",
        "64.0 MiB",
        "3.0 GiB",
    ]
