"""The local engine launcher's wait for a stopping process (pxpool.engines.local)."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from pxpool.engines.local import LocalEngine, LocalEngines, NonBlockingJoin


class _Process(NonBlockingJoin):
    """A launcher whose process 'exits' when ``exited`` is set."""

    def __init__(self, exited: threading.Event) -> None:
        self._wait_thread = threading.Thread(target=exited.wait, daemon=True)
        self._wait_thread.start()
        self.process = SimpleNamespace(pid=4242)


def test_join_lets_the_event_loop_run_while_it_waits() -> None:
    """ipyparallel's join blocks the loop: the coroutine that ends the process could
    not run, and the join would time out. Here it runs, and the join returns."""
    exited = threading.Event()

    async def main() -> None:
        async def exit_soon() -> None:
            await asyncio.sleep(0.05)
            exited.set()

        await asyncio.gather(_Process(exited).join(timeout=5), exit_soon())

    asyncio.run(main())
    assert exited.is_set()


def test_join_times_out_naming_the_process() -> None:
    exited = threading.Event()
    with pytest.raises(TimeoutError, match="Process 4242 did not exit in 0.1 seconds"):
        asyncio.run(_Process(exited).join(timeout=0.1))
    exited.set()


def test_the_local_engine_set_is_made_of_non_blocking_launchers() -> None:
    assert LocalEngines.launcher_class is LocalEngine
    assert issubclass(LocalEngine, NonBlockingJoin)
