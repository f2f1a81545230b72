"""The engine side of engine logs and of lane task output, without engines: the kept
file survives SIGKILL, stays bounded, and a task's prints are caught and shown."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pxpool._logs import agent
from pxpool._logs.output import of_engine
from pxpool._tasks import printed


def test_what_a_process_printed_is_kept_after_it_is_sigkilled(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pxpool._logs import agent
        answer = agent.install(7, {str(tmp_path / "logs")!r}, "p")
        print(answer["token"])
        print("first line")
        print("last words", file=sys.stderr, end="")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert done.returncode == -signal.SIGKILL
    path = str(tmp_path / "logs" / "engine-7.log")
    text = agent.read_tail(path, 10)
    assert text.startswith("---- pxpool: engine 7, pid ")
    assert text.endswith("first line\nlast words")
    token = agent.token_of(path)  # what tells the client it sees the engine's own file
    assert len(token) == 32 and f"\n{token}\n" in text


def test_the_ring_keeps_the_latest_output_in_order_and_a_new_process_continues_it(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "engine-0.log")
    keeper = agent.Keeper(path, ring_bytes=100)
    for i in range(50):
        keeper.keep(f"line {i:03d}\n")  # 9 bytes each: the ring wraps several times
    assert os.path.getsize(path) == 32 + 100  # header and ring, however much was written
    assert agent.read_tail(path, 5).splitlines() == [f"line {i:03d}" for i in range(45, 50)]
    held = agent.read_tail(path, 1000)
    assert held.endswith("line 049\n") and len(held.encode()) == 100
    again = agent.Keeper(path, ring_bytes=100)  # the engine started again under its id
    again.keep("next process\n")
    assert agent.read_tail(path, 2) == "line 049\nnext process\n"
    assert agent.read_tail(str(tmp_path / "none.log"), 5) == ""
    assert agent.ring_text(b"not a ring file at all") == ""


def test_a_task_s_prints_are_caught_and_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with printed.Catching() as caught:
        print("to stdout")
        print("to stderr", file=sys.stderr)
    assert sys.stdout is out and sys.stderr is err
    assert caught.printed() == ["to stdout\n", "to stderr\n"]
    assert (out.getvalue(), err.getvalue()) == ("to stdout\n", "to stderr\n")
    with printed.Catching() as silent:
        pass
    assert silent.printed() == []


def test_a_task_s_output_keeps_its_end_when_it_is_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with printed.Catching() as caught:
        for i in range(printed.MAX_CHARS // 5):
            print(f"{i:09d}")  # 10 characters a line
    text = caught.printed()[0]
    assert text.startswith("[... ") and "pool.logs(engine) has them]" in text
    assert text.endswith(f"{printed.MAX_CHARS // 5 - 1:09d}\n")
    assert len(text) < printed.MAX_CHARS + 100


def test_client_shows_output_under_ipyparallel_headings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printed.show(3, "one line\n", "")
    printed.show(4, "a\nb\n", "oops")
    shown = capsys.readouterr()
    assert shown.out == "[stdout:3] one line\n[stdout:4]\na\nb\n"
    assert shown.err == "[stderr:4] oops\n"


def test_a_shared_job_output_keeps_only_the_engine_s_own_log_lines() -> None:
    text = (
        "job started\n"
        "2026 [PxpoolEngine.0.0] Handling apply_request\n"
        "2026 [PxpoolEngine.1.1] Handling execute_request\n"
        "2026 [PxpoolEngine.1] Requesting id: 1\n"
        "Traceback (most recent call last):\n"
    )
    assert of_engine(text, 1) == (
        "job started\n"
        "2026 [PxpoolEngine.1.1] Handling execute_request\n"
        "2026 [PxpoolEngine.1] Requesting id: 1\n"
        "Traceback (most recent call last):\n"
    )
