"""pool.map's progress bar is tqdm.auto's, shown after a delay, at once, or never."""

from __future__ import annotations

import io

import pytest
import tqdm.auto

from pxpool._data import progress
from pxpool._data.progress import DELAY, Progress


@pytest.fixture(autouse=True)
def terminal_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm.auto as a terminal's Python has it. It decides once, when first imported, and
    picks the notebook bar in a process that imported ipyparallel's engine (as another
    unit test of this session does). Here the terminal's bar is what is tested."""
    import tqdm.asyncio

    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.asyncio.tqdm)


class Terminal(io.StringIO):
    """stderr of an interactive terminal: tqdm draws only where isatty() is true."""

    def isatty(self) -> bool:
        return True


def stderr(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO) -> io.StringIO:
    """``stream`` as sys.stderr, set in the test's own body: pytest's capture sets
    sys.stderr anew at each phase, so a fixture's patch would not last into the test."""
    monkeypatch.setattr("sys.stderr", stream)
    return stream


def test_a_short_map_shows_no_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = stderr(monkeypatch, Terminal())
    bar = Progress(10, None, "pool.map(f)")
    bar.update(10)
    bar.close()
    assert bar.bar is None and terminal.getvalue() == ""


def test_a_map_running_past_the_delay_gets_a_tqdm_bar_counting_from_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = stderr(monkeypatch, Terminal())
    bar = Progress(10, None, "pool.map(f)")
    bar.update(3)
    assert bar.bar is None  # positive control: not yet due
    bar.began -= DELAY  # the map has run for DELAY seconds
    bar.update(2)
    assert isinstance(bar.bar, tqdm.auto.tqdm)
    bar.update(5)
    assert bar.bar.format_dict["elapsed"] >= DELAY
    bar.close()
    assert "pool.map(f)" in terminal.getvalue() and "10/10" in terminal.getvalue()


def test_progress_true_shows_the_bar_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = stderr(monkeypatch, Terminal())
    bar = Progress(None, True, "pool.map(g)")
    assert bar.bar is not None
    bar.update(4)
    bar.close()
    assert "pool.map(g)" in terminal.getvalue() and "4it" in terminal.getvalue()


def test_progress_false_never_shows_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = stderr(monkeypatch, Terminal())
    bar = Progress(10, False, "pool.map(f)")
    bar.began -= DELAY
    bar.update(10)
    bar.close()
    assert bar.bar is None and terminal.getvalue() == ""


def test_without_a_tty_the_default_draws_nothing_but_true_still_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = stderr(monkeypatch, io.StringIO())  # a batch job's output file: no TTY
    quiet = Progress(10, None, "pool.map(f)")
    quiet.began -= DELAY
    quiet.update(10)
    quiet.close()
    assert log.getvalue() == ""
    shown = Progress(10, True, "pool.map(f)")  # positive control: asked for, it draws
    shown.update(10)
    shown.close()
    assert "10/10" in log.getvalue()


def test_the_delay_is_two_seconds() -> None:
    assert progress.DELAY == 2.0
