"""One integration suite for every provider: start, apply on all engines, push/pull,
scale, restart an engine, stop, nothing left behind.

A provider's test module subclasses :class:`ProviderSuite` and overrides the
``profile_overrides`` fixture (and ``extra_leftover_check`` when the provider has
its own notion of leftovers, such as queued batch jobs)::

    class TestSlurm(ProviderSuite):
        @pytest.fixture(scope="class")
        def profile_overrides(self):
            return ("slurm", {"engines": 2, "partition": "debug"})
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

import pxpool


def _where() -> tuple[str, int]:
    import os
    import socket

    return socket.gethostname(), os.getpid()


class ProviderSuite:
    engines = 2

    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError("a provider's test class overrides profile_overrides")

    def leftovers(self, pool: pxpool.Pool) -> list[str]:
        """What the provider left behind after stop (queued jobs, remote engines)."""
        return []

    @pytest.fixture(scope="class")
    def pool(self, profile_overrides: tuple[str, dict[str, Any]]) -> Iterator[pxpool.Pool]:
        name, overrides = profile_overrides
        pool = pxpool.Pool.from_profile(name, **{"engines": self.engines, **overrides})
        pool.start_sync()
        try:
            yield pool
        finally:
            pool.stop_sync()
        assert self.leftovers(pool) == []

    def test_all_engines_registered(self, pool: pxpool.Pool) -> None:
        assert pool.ids == list(range(self.engines))

    def test_apply_on_every_engine_runs_in_separate_processes(self, pool: pxpool.Pool) -> None:
        places = pool.view().apply_sync(_where)
        assert len(set(places)) == self.engines
        assert all(pid != os.getpid() or host != socket.gethostname() for host, pid in places)

    def test_push_pull_round_trip(self, pool: pxpool.Pool) -> None:
        pool.push({"suite_value": [1, 2, 3]})
        assert pool.pull("suite_value") == [[1, 2, 3]] * self.engines

    def test_scale_up_then_down(self, pool: pxpool.Pool) -> None:
        assert pool.scale_sync(self.engines + 1) == list(range(self.engines + 1))
        assert len(set(pool.view().apply_sync(_where))) == self.engines + 1
        assert pool.scale_sync(self.engines) == list(range(self.engines))

    def test_restart_engine_keeps_its_id_with_a_new_process(self, pool: pxpool.Pool) -> None:
        before = pool.view(1).apply_sync(_where)
        assert pool.restart_sync(1) == 1
        assert pool.ids == list(range(self.engines))
        assert pool.view(1).apply_sync(_where) != before

    def test_logs_keep_what_cells_and_lane_tasks_printed(
        self, pool: pxpool.Pool, capsys: pytest.CaptureFixture[str]
    ) -> None:
        marker = f"said-by-{pool.name}"
        future = pool.submit(print, f"{marker} in a lane task")
        assert future.result(timeout=30) is None
        engine = future.engine_id
        assert engine is not None
        assert f"[stdout:{engine}] {marker} in a lane task\n" in capsys.readouterr().out
        pool.view(engine).execute(f"print('{marker} in a cell')")
        kept = pool.logs(engine, tail=5).split("<==\n")[-1]  # the kept lines come last
        assert f"\n{marker} in a lane task\n{marker} in a cell\n" in kept
