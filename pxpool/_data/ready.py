"""Reading an AsyncResult that ``concurrent.futures.wait`` returned as done.

ipyparallel 9 resolves an AsyncResult's future (``set_result``) before a done
callback marks it ready (``_finalize_result`` sets ``_ready`` and ``_ready_event``).
``concurrent.futures`` wakes waiting threads before it runs done callbacks, so a
result just returned as done can briefly be not ``ready()``, and ``get(timeout=0)``
then raises ``TimeoutError("Result not ready.")``. The map lost a chunk's reply this
way twice in one test run. Worth filing upstream: mark the result ready before the
future resolves.
"""

from __future__ import annotations

from typing import Any

import ipyparallel as ipp

__all__ = ["READY_GRACE", "done_result"]

READY_GRACE = 5.0  # seconds; the callback runs right after the waiters wake


def done_result(ar: ipp.AsyncResult) -> Any:
    """``ar.get()`` for a result whose future is done: waits on its ready event (set
    microseconds later by ipyparallel's callback), never polls, bounded by READY_GRACE."""
    return ar.get(timeout=READY_GRACE)
