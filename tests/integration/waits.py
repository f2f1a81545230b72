"""Bounded polling for integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds.
    A predicate that raises counts as false (e.g. asking an engine that is dying)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:
            pass
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g}s"
        time.sleep(interval)
