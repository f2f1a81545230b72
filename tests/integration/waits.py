"""Bounded polling for integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
    *,
    tolerate_errors: bool = True,
) -> T:
    """Poll ``predicate`` until it returns something true, and return that; fail naming
    ``what`` after ``timeout`` seconds.

    A predicate that raises counts as false (e.g. asking an engine that is dying), and
    an error from the last try is named in the failure; with ``tolerate_errors=False``
    an error from the predicate fails the test at once.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            found = predicate()
        except Exception as exc:
            if not tolerate_errors:
                raise
            last_error = exc
        else:
            if found:
                return found
            last_error = None
        if time.monotonic() >= deadline:
            because = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"{what} did not happen within {timeout:g}s{because}")
        time.sleep(interval)
