"""Asking the process that owns a pool to stop it: the answers it can get."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pxpool._core import runtime, stop_request


@pytest.fixture
def pool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PXPOOL_RUNTIME_DIR", str(tmp_path / "runtime"))
    return runtime.pool_dir("owned", create=True)


def test_an_owner_that_does_not_answer_is_left_to_the_stop_from_outside(pool_dir: Path) -> None:
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert stop_request.ask_owner("owned", busy.pid, timeout=0.3) is False
        asked = json.loads((pool_dir / stop_request.STOP_REQUEST).read_text())
        assert asked["pid"] > 0  # the request it did not answer
    finally:
        busy.kill()
        busy.wait(10)


def test_a_dead_owner_or_this_process_is_not_asked(pool_dir: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    assert stop_request.ask_owner("owned", gone.pid) is False
    assert stop_request.ask_owner("owned", os.getpid()) is False
    assert not (pool_dir / stop_request.STOP_REQUEST).exists()


def test_an_owner_that_stops_the_pool_answers(pool_dir: Path) -> None:
    """The owner's answer is the pool's directory going away (here: a process that
    removes it once the request is there)."""
    request = pool_dir / stop_request.STOP_REQUEST
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, shutil, sys, time\n"
            f"request = pathlib.Path({str(request)!r})\n"
            "while not request.exists(): time.sleep(0.02)\n"
            "shutil.rmtree(request.parent)\n"
            "time.sleep(30)\n",
        ]
    )
    try:
        assert stop_request.ask_owner("owned", owner.pid, timeout=20) is True
    finally:
        owner.kill()
        owner.wait(10)
