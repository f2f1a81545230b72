"""Whether a local process (an SSH engine's ssh client, as its start waits for the
engine's pid) still runs: one reaped between two looks at it has ended, it is no error."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from pxpool._core.processes import running


class SeenRunningOnce(psutil.Process):
    """A real process, seen running by the first look (as just before it was reaped)."""

    def is_running(self) -> bool:
        return True


def test_a_running_client_has_not_exited_and_a_reaped_one_has() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    process = psutil.Process(child.pid)
    late = SeenRunningOnce(child.pid)
    try:
        assert running(process)  # the positive control: alive, not a zombie
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)  # exited and reaped
    assert not running(process)
    assert not running(late)  # its status is gone with it: psutil's NoSuchProcess


def test_a_zombie_client_has_exited() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    process = psutil.Process(child.pid)
    try:
        deadline = time.monotonic() + 30
        while process.status() != psutil.STATUS_ZOMBIE:  # exited, not reaped yet
            assert time.monotonic() < deadline, "the child did not exit within 30 s"
            time.sleep(0.01)
        assert process.is_running()  # psutil still sees a zombie as running
        assert not running(process)
    finally:
        child.wait(timeout=30)
