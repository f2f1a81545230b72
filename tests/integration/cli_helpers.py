"""Running the ``pxpool`` command in a subprocess, as a shell user runs it."""

from __future__ import annotations

import os
import subprocess
import sys


def pxpool_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pxpool.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
