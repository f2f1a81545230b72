"""%pool and the bound %px family, through a real IPython shell and a real kernel."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import ipyparallel as ipp
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import pxpool
import pxpool.pool
from pxpool.magics import PoolMagics, PxMagics
from pxpool.magics.pool import USAGE

pytestmark = pytest.mark.integration

PX_MAGICS = {("line", "px"), ("cell", "px"), ("line", "autopx"), ("line", "pxresult")}
PX_MAGICS |= {("line", "pxconfig")}


@pytest.fixture(scope="module")
def pool(shell: InteractiveShell) -> Iterator[pxpool.Pool]:
    """Started from Python, not by %pool: %px binds to whatever pool is current."""
    with pxpool.Pool.from_profile("local", engines=2) as started:
        yield started


@pytest.fixture
def no_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """No current pool for this test; the module's pool is current again afterwards."""
    monkeypatch.setattr(pxpool.pool, "_current", None)


def px(shell: InteractiveShell, line: str, cell: str) -> str:
    with capture_output() as captured:
        shell.run_cell_magic("px", line, cell)
    return captured.stdout


def engines_that_printed(out: str) -> list[str]:
    """Engine ids with streamed stdout, once each.

    One ``print`` can reach the client as two stream messages (the text, then its
    newline) when the engine's output thread flushes between its two writes; streamed
    output then names that engine again after another engine's line, so headers are
    not counted.
    """
    return sorted(set(re.findall(r"\[stdout:(\d+)\]", out)))


def registered(shell: InteractiveShell) -> set[tuple[str, str]]:
    magics = shell.magics_manager.magics
    return {(kind, name) for kind in ("line", "cell") for name in magics[kind]}


def pxpool_magics(shell: InteractiveShell) -> set[tuple[str, str]]:
    """Registered magics whose implementation belongs to pxpool."""
    magics = shell.magics_manager.magics
    return {
        (kind, name)
        for kind in ("line", "cell")
        for name, f in magics[kind].items()
        if type(getattr(f, "__self__", None)).__module__.startswith("pxpool")
    }


# ------------------------------------------------------------------ loading


def test_load_ext_pxpool_registers_pool_and_px_magics(shell: InteractiveShell) -> None:
    assert PX_MAGICS | {("line", "pool")} <= registered(shell)
    assert isinstance(shell.magics_manager.registry["PxMagics"], PxMagics)
    assert isinstance(shell.magics_manager.registry["PoolMagics"], PoolMagics)


def test_loading_twice_keeps_the_same_magics(shell: InteractiveShell) -> None:
    before = shell.magics_manager.registry["PxMagics"]
    pxpool.load_ipython_extension(shell)
    shell.run_line_magic("load_ext", "pxpool.magics")
    assert shell.magics_manager.registry["PxMagics"] is before
    assert shell.magics_manager.magics["cell"]["px"].__self__ is before


def test_unload_removes_magics_and_leaves_the_pool_running(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    shell.run_line_magic("unload_ext", "pxpool")
    try:
        # the shell is shared with other test modules: a magic pxpool replaced (such as
        # ipyparallel's own %px from an earlier view.activate()) comes back, pxpool's go
        assert not pxpool_magics(shell)
        assert "PxMagics" not in shell.magics_manager.registry
        assert pool.state == "running"
        assert pool.apply(lambda: 6 * 7) == 42
    finally:
        shell.run_line_magic("load_ext", "pxpool")
    assert "[stdout:0]" in px(shell, "", "print('back')")


# ------------------------------------------------------------------ %pool usage


def test_pool_alone_prints_every_subcommand(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("pool", "")
    out = capsys.readouterr().out
    for usage in USAGE.values():
        assert usage in out


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "strat",
            r"^Unknown %pool command 'strat'; known: attach, profiles, restart, scale, start, status, stop\. Run `%pool` alone for help\.$",
        ),
        (
            "start -n x",
            r"^%pool start: argument -n: invalid int value: 'x'\. Usage: %pool start \[PROFILE\] \[-n N\] \[--name NAME\] \[key=value \.\.\.\]$",
        ),
        ("start -n 0", r"^%pool start: -n must be at least 1; got 0\. Usage: %pool start "),
        (
            "start local slurm",
            r"^%pool start: one profile name, got 2: local slurm\. Usage: %pool start ",
        ),
        (
            "start =4",
            r"^%pool start: setting '=4' has no key; write key=value, e.g. engines=4\. Usage: ",
        ),
        ("start --bogus", r"^%pool start: unrecognized arguments: --bogus\. Usage: %pool start "),
        ("start 'local", r"^%pool start: No closing quotation\. Usage: %pool start "),
        (
            "attach",
            r"^%pool attach: needs exactly one pool name; got 0\. Usage: %pool attach NAME \(running pools: `!pxpool list`\)$",
        ),
        ("attach a b", r"^%pool attach: needs exactly one pool name; got 2\."),
        (
            "scale",
            r"^%pool scale: needs one number of engines; got 0 arguments\. Usage: %pool scale N$",
        ),
        (
            "scale many",
            r"^%pool scale: N must be a whole number >= 0; got 'many'\. Usage: %pool scale N$",
        ),
        (
            "scale -1",
            r"^%pool scale: N must be a whole number >= 0; got '-1'\. Usage: %pool scale N$",
        ),
        (
            "restart",
            r"^%pool restart: needs one engine id; got 0 arguments\. Usage: %pool restart ENGINE$",
        ),
        (
            "restart first",
            r"^%pool restart: ENGINE must be a whole number >= 0; got 'first'\. Usage: %pool restart ENGINE$",
        ),
        ("status now", r"^%pool status: takes no arguments; got 'now'\. Usage: %pool status$"),
        ("stop all", r"^%pool stop: takes no arguments; got 'all'\. Usage: %pool stop$"),
        ("profiles x", r"^%pool profiles: takes no arguments; got 'x'\. Usage: %pool profiles$"),
    ],
)
def test_wrong_pool_usage_raises_usage_error_with_correct_form(
    shell: InteractiveShell, line: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("pool", line)


def test_unknown_profile_shows_the_python_api_message(shell: InteractiveShell) -> None:
    with pytest.raises(pxpool.UnknownProfileError) as api:
        pxpool.load_profile("slrum")
    with pytest.raises(UsageError, match=r"^Unknown profile 'slrum'; known: .*local") as magic:
        shell.run_line_magic("pool", "start slrum")
    assert str(magic.value) == str(api.value)
    assert isinstance(magic.value.__cause__, pxpool.UnknownProfileError)


def test_bad_setting_shows_the_profile_validation_message(shell: InteractiveShell) -> None:
    with pytest.raises(
        UsageError, match=r"^keyword argument engines=: engines: must be an integer; got 'many'$"
    ):
        shell.run_line_magic("pool", "start local engines=many")


@pytest.mark.parametrize("line", ["status", "stop", "scale 2", "restart 0"])
def test_commands_needing_a_pool_say_how_to_start_one(
    shell: InteractiveShell, no_pool: None, line: str
) -> None:
    with pytest.raises(UsageError, match=r"^No running pool in this process; .*`%pool start`"):
        shell.run_line_magic("pool", line)


def test_px_without_a_pool_says_how_to_start_one(shell: InteractiveShell, no_pool: None) -> None:
    with pytest.raises(
        UsageError,
        match=r"^No running pool for %px; start one with `%pool start \[PROFILE\] \[-n N\]`",
    ):
        shell.run_cell_magic("px", "", "print(1)")


def test_attach_unknown_pool_lists_running_pools(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"^No running pool named 'nosuchpool'; running: "):
        shell.run_line_magic("pool", "attach nosuchpool")


def test_profiles_lists_builtin_profiles(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("pool", "profiles")
    out = capsys.readouterr().out
    assert re.search(r"^local\s+built-in", out, re.MULTILINE)
    assert re.search(r"^slurm\s+built-in", out, re.MULTILINE)


# ------------------------------------------------------------------ %pool with a pool


def test_starting_a_second_pool_says_stop_or_scale(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    with pytest.raises(
        UsageError,
        match=rf"^Pool '{pool.name}' is already running here with 2 engines; stop it with `%pool stop`, or change its size with `%pool scale N`\.$",
    ):
        shell.run_line_magic("pool", "start")


def test_status_shows_a_row_per_engine(
    shell: InteractiveShell, pool: pxpool.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("pool", "status")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Pool {pool.name!r} (profile 'local', local): 2 engines"
    assert lines[1].split() == ["engine", "host", "pid", "state", "tasks_done"]
    assert [line.split()[0] for line in lines[2:]] == ["0", "1"]
    assert all(line.split()[3] == "idle" for line in lines[2:])


def test_restart_of_unknown_engine_names_valid_ids(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    with pytest.raises(UsageError, match=r"^No engine 7 in this pool; engines: \[0, 1\]\."):
        shell.run_line_magic("pool", "restart 7")


def test_scale_grows_and_shrinks_and_px_follows(
    shell: InteractiveShell, pool: pxpool.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("pool", "scale 3")
    assert capsys.readouterr().out == f"Pool {pool.name!r} now has 3 engines [0, 1, 2].\n"
    assert "[stdout:2]" in px(shell, "--targets -1", "print('new engine')")
    shell.run_line_magic("pool", "scale 2")
    assert pool.ids == [0, 1]


def test_attach_binds_px_and_pool_commands_to_a_pool_started_elsewhere(
    shell: InteractiveShell, pool: pxpool.Pool, no_pool: None, capsys: pytest.CaptureFixture[str]
) -> None:
    other = pxpool.Pool(pxpool.load_profile("local", engines=1), "elsewhere", detached=True)
    other.start_sync()
    other.disconnect()
    try:
        shell.run_line_magic("pool", "attach elsewhere")
        assert "Attached to pool 'elsewhere' with 1 engines [0]" in capsys.readouterr().out
        out = px(shell, "", "import os; print('attached', os.getpid())")
        assert out.count("[stdout:") == 1
        assert "attached" in out
        before = pxpool.current().apply(os.getpid)
        shell.run_line_magic("pool", "restart 0")
        assert "Restarted engine 0 of pool 'elsewhere'." in capsys.readouterr().out
        other_pid = pxpool.current().apply(os.getpid)
        assert other_pid != before
    finally:
        shell.run_line_magic("pool", "stop")
    assert "Stopped pool 'elsewhere'." in capsys.readouterr().out
    assert pool.state == "running"


# ------------------------------------------------------------------ %px family


def test_px_cell_prefixes_each_engines_output_with_its_id(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    out = px(shell, "", "print('hello from', 6 * 7)")
    assert re.search(r"\[stdout:0\] ?\n?hello from 42", out)
    assert re.search(r"\[stdout:1\] ?\n?hello from 42", out)


@pytest.mark.parametrize(
    ("targets", "engines"),
    [
        ("0", ["0"]),
        ("-1", ["1"]),
        ("::2", ["0"]),
        ("0-1", ["0", "1"]),
        ("1,0", ["0", "1"]),
        ("all", ["0", "1"]),
        ("=-1:", ["1"]),
    ],
)
def test_px_targets_are_parsed_not_evaluated(
    shell: InteractiveShell, pool: pxpool.Pool, targets: str, engines: list[str]
) -> None:
    flag = f"--targets{targets}" if targets.startswith("=") else f"--targets {targets}"
    out = px(shell, flag, "print('ran')")
    assert engines_that_printed(out) == engines


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ("5", r"^Bad engine target '5': no engine 5 in this pool; .* Engines: \[0, 1\]\.$"),
        ("0-3", r"^Bad engine target '0-3': engines \[2, 3\] are not in this pool;"),
        ("__import__('os').getpid()", r"^Bad engine target .*: not an id, range, slice or 'all'"),
    ],
)
def test_bad_px_target_raises_usage_error_naming_it(
    shell: InteractiveShell, pool: pxpool.Pool, targets: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        shell.run_cell_magic("px", f'--targets "{targets}"', "print('never')")
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("pxconfig", f'--targets "{targets}"')


def test_pxconfig_targets_apply_to_later_px(shell: InteractiveShell, pool: pxpool.Pool) -> None:
    shell.run_line_magic("pxconfig", "--targets -1")
    try:
        with capture_output() as captured:
            shell.run_line_magic("px", "print('configured')")
        assert engines_that_printed(captured.stdout) == ["1"]
    finally:
        shell.run_line_magic("pxconfig", "--targets all")
    assert engines_that_printed(px(shell, "", "print(1)")) == ["0", "1"]


def test_px_line_runs_code_on_every_engine(shell: InteractiveShell, pool: pxpool.Pool) -> None:
    shell.run_line_magic("px", "from_line = 3 * 3")
    assert pool.pull("from_line") == [9, 9]


def test_noblock_returns_result_and_pxresult_shows_it(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    result = shell.run_cell_magic("px", "--noblock -o saved", "print('later')")
    assert shell.user_ns["saved"] is result
    result.get(timeout=10)
    with capture_output() as captured:
        shell.run_line_magic("pxresult", "")
    assert captured.stdout.count("later") == 2


def test_local_flag_also_runs_the_cell_here(shell: InteractiveShell, pool: pxpool.Pool) -> None:
    px(shell, "--local", "both_here_and_there = 5")
    assert shell.user_ns["both_here_and_there"] == 5
    assert pool.pull("both_here_and_there") == [5, 5]


def test_no_stream_still_groups_outputs_by_engine(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    out = px(shell, "--no-stream --group-outputs engine", "print('collected')")
    assert re.search(r"\[stdout:0\] \ncollected\n\[stdout:1\] \ncollected", out)


def test_streaming_is_the_default(shell: InteractiveShell, pool: pxpool.Pool) -> None:
    assert shell.magics_manager.registry["PxMagics"].stream_output is True
    out = px(shell, "", "import sys; print('to out'); print('to err', file=sys.stderr)")
    assert "to out" in out


def test_rich_outputs_from_engines_are_displayed(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    with capture_output(display=True) as captured:
        shell.run_cell_magic(
            "px",
            "--targets 0",
            "import pandas as pd\n"
            "from IPython.display import HTML, display\n"
            "display(HTML('<b>shown</b>'))\n"
            "pd.DataFrame({'engine_value': [1, 2]})",
        )
    html = [o.data["text/html"] for o in captured.outputs if "text/html" in o.data]
    assert any("<b>shown</b>" in h for h in html)
    assert any("<table" in h and "engine_value" in h for h in html)


def test_matplotlib_figures_from_engines_are_displayed(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    with capture_output(display=True) as captured:
        shell.run_cell_magic(
            "px",
            "--targets 0",
            "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()",
        )
    assert any("image/png" in o.data for o in captured.outputs)


def test_long_cells_show_progress(
    shell: InteractiveShell, pool: pxpool.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shell.magics_manager.registry["PxMagics"].progress_after_seconds == 2.0
    shell.run_cell_magic("px", "--progress-after 0.2", "import time; time.sleep(1)")
    assert re.search(r"%px: 100%.*2/2 ", capsys.readouterr().out)


def test_autopx_sends_cells_to_engines_until_toggled_off(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    with capture_output() as captured:
        shell.run_cell("%autopx")
        shell.run_cell("in_autopx = 11")
        shell.run_cell("%autopx")
    assert "%autopx enabled" in captured.stdout
    assert "%autopx disabled" in captured.stdout
    assert pool.pull("in_autopx") == [11, 11]
    assert "in_autopx" not in shell.user_ns


def test_remote_error_is_shown_per_engine_and_leaves_the_pool_usable(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    from ipyparallel.error import AlreadyDisplayedError

    with capture_output() as captured:
        with pytest.raises(AlreadyDisplayedError, match="^2 errors$"):
            shell.run_cell_magic("px", "", "1 / 0")
    assert re.search(r"\[0:execute\][\s\S]*ZeroDivisionError", captured.stderr)
    assert re.search(r"\[1:execute\][\s\S]*ZeroDivisionError", captured.stderr)
    assert "[stdout:1]" in px(shell, "", "print('fine')")


# ------------------------------------------------------------------ a real kernel


class Kernel:
    """A real IPython kernel, driven as a notebook front end drives it."""

    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(kernel_name="python3")

    def run(self, code: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
        texts: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                texts.append(content["text"])
            elif msg["msg_type"] in ("display_data", "update_display_data", "execute_result"):
                texts.append(content["data"].get("text/plain", ""))
            elif msg["msg_type"] == "error":
                texts.append(f"{content['ename']}: {content['evalue']}")

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=collect)
        return reply["content"], "\n".join(texts)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def test_interrupting_the_kernel_interrupts_the_engines_and_keeps_the_pool() -> None:
    kernel = Kernel()
    try:
        reply, out = kernel.run(
            "%load_ext pxpool\n%pool start local --name kernelpool start_timeout=60 -n 2"
        )
        assert reply["status"] == "ok", out
        assert "Started pool 'kernelpool' (local) with 2 engines [0, 1]" in out
        timer = threading.Timer(2.0, kernel.manager.interrupt_kernel)
        timer.start()
        started = time.monotonic()
        reply, out = kernel.run("%%px\nimport time\ntime.sleep(60)", timeout=30)
        elapsed = time.monotonic() - started
        assert reply["status"] == "error"
        assert reply["ename"] == "KeyboardInterrupt"
        assert "received SIGINT and stopped" in reply["evalue"]
        assert elapsed < 8, f"interrupted cell took {elapsed:.1f}s"
        reply, out = kernel.run("%%px\nprint('after', 6 * 7)", timeout=30)
        assert reply["status"] == "ok", out
        assert re.search(r"\[stdout:0\] ?\n?after 42", out)
        assert re.search(r"\[stdout:1\] ?\n?after 42", out)
    finally:
        kernel.run(
            "import pxpool\ntry:\n    pxpool.current().stop_sync()\nexcept pxpool.PxpoolError:\n    pass"
        )
        kernel.close()


# ------------------------------------------------------------------ %%px --setup


def test_px_setup_cell_runs_again_on_a_restarted_engine(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    out = px(shell, "--setup", "import math\nsetup_value = math.factorial(5)\nprint(setup_value)")
    assert out.count("120") == 2 and "[stdout:0]" in out and "[stdout:1]" in out
    pool.restart_sync(1)
    assert pool.client[1].pull("setup_value", block=True) == 120


def test_px_setup_refuses_targets(shell: InteractiveShell, pool: pxpool.Pool) -> None:
    with pytest.raises(UsageError, match="drop --targets"):
        shell.run_cell_magic("px", "--setup --targets 0", "x = 1")


# ------------------------------------------------------------------ %pxlogs


def test_pxlogs_prints_what_an_engine_printed_and_checks_its_arguments(
    shell: InteractiveShell, pool: pxpool.Pool
) -> None:
    px(shell, "--targets 1", "print('for %pxlogs')")
    with pytest.raises(ipp.RemoteError, match="ZeroDivisionError"):
        pool.execute("1 / 0", targets=1)  # its traceback is kept too, without colours
    with capture_output() as captured:
        shell.run_line_magic("pxlogs", "1 --tail 8")
    assert "==> engine 1: printed, kept in" in captured.stdout
    assert "\nfor %pxlogs\n" in captured.stdout
    assert "\nZeroDivisionError: division by zero\n" in captured.stdout
    with pytest.raises(UsageError, match=r"No engine 7 in this pool; engines: \[0, 1\]"):
        shell.run_line_magic("pxlogs", "7")
    with pytest.raises(UsageError, match=r"usage: %pxlogs ENGINE \[--tail LINES\]"):
        shell.run_line_magic("pxlogs", "")
    with pytest.raises(UsageError, match="--tail must be a number of lines > 0; got 0"):
        shell.run_line_magic("pxlogs", "0 --tail 0")
    with pytest.raises(ValueError, match="tail must be a whole number of lines > 0; got '5'"):
        pool.logs(0, tail="5")  # type: ignore[arg-type]
