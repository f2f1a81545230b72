"""The controller's fast start and the processes that skip IPython's terminal."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from ipyparallel.controller import app as controller_app

from pxpool._entry import fast_start


class _App:
    """Stands in for IPController.initialize: it sleeps the way its hub setup does."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def initialize(self) -> None:
        began = time.monotonic()
        controller_app.time.sleep(fast_start.SETTLE_SLEEP_SECONDS)
        self.slept.append(time.monotonic() - began)
        began = time.monotonic()
        controller_app.time.sleep(0.05)  # any other pause is kept
        self.slept.append(time.monotonic() - began)
        self.clock = controller_app.time.monotonic()


def test_the_settle_sleep_is_skipped_and_nothing_else() -> None:
    app = _App()
    real = controller_app.time
    fast_start.initialize_without_settle_sleep(app)
    assert app.slept[0] < 0.1 and app.slept[1] >= 0.05
    assert app.clock > 0
    assert controller_app.time is real  # put back afterwards


def test_the_settle_sleep_is_put_back_when_initialize_fails() -> None:
    class Failing:
        def initialize(self) -> Any:
            raise RuntimeError("bad config")

    real = controller_app.time
    try:
        fast_start.initialize_without_settle_sleep(Failing())
    except RuntimeError:
        pass
    assert controller_app.time is real


PROBE = """
import sys
import importlib.metadata
from pxpool._entry.lean_imports import import_ipyparallel
real = importlib.metadata.entry_points
import_ipyparallel()
import IPython, ipyparallel.traitlets
print(importlib.metadata.entry_points is real, ipyparallel.traitlets.entry_points is real)
print(sorted({'prompt_toolkit', 'IPython.terminal.interactiveshell'} & set(sys.modules)))
print(callable(IPython.embed))
from IPython.terminal.embed import InteractiveShellEmbed  # a user's code on an engine
print(InteractiveShellEmbed.__module__, 'prompt_toolkit' in sys.modules)
import IPython.terminal.embed as embed_module
print(embed_module.InteractiveShellEmbed is InteractiveShellEmbed)
"""


def test_ipyparallel_imports_without_the_terminal_which_is_imported_on_use() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.split("\n")[:5] == [
        "True True",  # entry points as the standard library reads them, once imported
        "[]",
        "True",
        "IPython.terminal.embed True",
        "True",
    ], shown.stdout + shown.stderr
