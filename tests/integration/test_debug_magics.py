"""%pxdebug, %%pxdebug and breakpoint() prompts, through a real IPython shell and engines.

The user's answers come from a scripted ``input`` (the shell reads prompts through
``builtins.input``, as a kernel does through Jupyter's stdin channel).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import pxpool
from pxpool.magics.debug import USAGE

pytestmark = pytest.mark.integration


def inverse(x: int) -> float:
    here = x * 100
    return here / x


class Answers:
    """A scripted user: answers each prompt with the next command, recording prompts."""

    def __init__(self, *commands: str) -> None:
        self.commands = list(commands)
        self.prompts: list[str] = []

    def __call__(self, prompt: str = "") -> str:
        self.prompts.append(prompt)
        if not self.commands:
            raise EOFError
        return self.commands.pop(0)


@pytest.fixture(scope="module")
def pool(shell: InteractiveShell) -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2) as started:
        started.view(0).push({"who": 0})
        started.view(1).push({"who": 1})
        yield started


def answering(monkeypatch: pytest.MonkeyPatch, *commands: str) -> Answers:
    answers = Answers(*commands)
    monkeypatch.setattr(builtins, "input", answers)
    return answers


def run(shell: InteractiveShell, source: str) -> str:
    with capture_output() as captured:
        shell.run_cell(source)
    return str(captured.stdout)


def test_cell_magic_steps_through_three_lines_on_one_engine(
    shell: InteractiveShell, pool: pxpool.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = answering(monkeypatch, "n", "p a", "n", "p b", "n", "p a, b, c", "l", "c")
    cell = "a = who + 1\nb = a * 10\nc = b + a\nprint('c is', c)\n"
    with capture_output() as captured:
        shell.run_cell_magic("pxdebug", "-e 1", cell)
    out = captured.stdout
    assert answers.prompts == ["(Pdb-e1) "] * 8
    assert "stopped at its first line" in out
    assert "-> a = who + 1" in out
    assert "-> b = a * 10" in out and "-> c = b + a" in out and "-> print('c is', c)" in out
    assert "(2, 20, 22)" in out
    assert "  3  \tc = b + a" in out  # `l` lists the cell's own source
    assert "c is 22" in out
    assert "session on engine 1 ended: the cell finished" in out
    assert pool.pull("c", targets=1) == 22


def test_cell_magic_quit_stops_the_rest_of_the_cell(
    shell: InteractiveShell, pool: pxpool.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    answering(monkeypatch, "n", "q")
    with capture_output() as captured:
        shell.run_cell_magic("pxdebug", "-e 0", "quit_a = 1\nquit_b = 2\n")
    assert "ended: quit; the rest of the cell did not run" in captured.stdout
    assert pool.pull("quit_a", targets=0) == 1
    with pytest.raises(Exception, match="quit_b"):
        pool.pull("quit_b", targets=0)


def test_post_mortem_after_px_picks_the_first_failed_engine_and_names_the_others(
    shell: InteractiveShell, pool: pxpool.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(shell, "%%px\nmine = who * 10 + 5\n1 / 0\n")
    answers = answering(monkeypatch, "p mine", "q")
    out = run(shell, "%pxdebug")
    assert "debugging engine 0, where the last error was raised; engines [1] failed too" in out
    assert "postmortem" in out and "-> 1 / 0" in out
    assert "\n5\n" in out
    assert answers.prompts == ["(Pdb-e0) ", "(Pdb-e0) "]
    answering(monkeypatch, "p mine", "q")
    assert "\n15\n" in run(shell, "%pxdebug -e 1")


def test_post_mortem_after_pool_map_uses_the_engine_in_map_error(
    shell: InteractiveShell, pool: pxpool.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell.user_ns.update(pool=pool, inverse=inverse)
    run(shell, "pool.map(inverse, [1, 2, 0, 3], chunksize=1)")
    answering(monkeypatch, "p x, here", "c")
    out = run(shell, "%pxdebug")
    assert "where the last error was raised" in out
    assert "(0, 0)" in out


def test_breakpoints_in_a_px_cell_open_labelled_sessions_one_engine_at_a_time(
    shell: InteractiveShell, pool: pxpool.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = answering(monkeypatch, "p who * 3", "c", "p who * 3", "c")
    out = run(shell, "%%px\nvalue = who + 40\nbreakpoint()\nafter = value + 1\n")
    assert sorted(set(answers.prompts)) == ["(Pdb-e0) ", "(Pdb-e1) "]
    assert "engine 0 stopped at breakpoint()" in out and "engine 1 stopped at breakpoint()" in out
    assert "\n0\n" in out and "\n3\n" in out
    assert pool.pull("after") == [41, 42]


def test_wrong_usage_shows_the_correct_forms(shell: InteractiveShell, pool: pxpool.Pool) -> None:
    with pytest.raises(UsageError, match=r"cannot read '-x 3'") as info:
        shell.run_line_magic("pxdebug", "-x 3")
    assert USAGE in str(info.value)
    with pytest.raises(UsageError, match="%%pxdebug needs the engine"):
        shell.run_cell_magic("pxdebug", "", "x = 1\n")
    with pytest.raises(pxpool.EngineNotFoundError, match="No engine 7"):
        shell.run_line_magic("pxdebug", "-e 7")
