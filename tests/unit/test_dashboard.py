"""The dashboard's parts without engines: the ring of task events, the task-stream
figure, the files a pool's process and the Jupyter server exchange, and the actions."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pxpool._core.events import TaskEvents
from pxpool._dashboard import files, stream
from pxpool._dashboard.publisher import ACTIONS, Dashboard


def test_ring_keeps_the_newest_events_and_counts_the_dropped() -> None:
    ring = TaskEvents(capacity=3)
    for i in range(5):
        ring.record(i % 2, f"f{i}", 100.0 + i, 100.5 + i, ok=i != 4, route="lane")
    events = ring.events()
    assert [e.function for e in events] == ["f2", "f3", "f4"]
    assert ring.recorded == 5 and ring.dropped == 2
    assert events[-1].ok is False and events[-1].as_list() == [0, "f4", 104.0, 104.5, False, "lane"]
    assert [e.function for e in ring.events(since=103.4)] == ["f3", "f4"]


def test_ring_never_has_an_end_before_its_start_and_refuses_a_bad_capacity() -> None:
    ring = TaskEvents()
    ring.record(0, "f", 10.0, 9.0, ok=True, route="hub")  # clocks of two hosts
    assert ring.events()[0].end == 10.0
    with pytest.raises(ValueError, match="capacity must be a whole number >= 1; got 0"):
        TaskEvents(capacity=0)


def test_ring_is_safe_to_record_from_many_threads() -> None:
    ring = TaskEvents(capacity=1000)

    def record() -> None:
        for i in range(500):
            ring.record(1, "f", i, i + 1, ok=True, route="lane")

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert ring.recorded == 2000 and len(ring.events()) == 1000 and ring.dropped == 1000


def test_maps_show_while_running_then_among_the_last_finished() -> None:
    ring = TaskEvents()
    first = ring.map_started("pool.map(f)", 10)
    first.advance(4)
    assert ring.maps()[0] | {"began": 0} == {
        "map": 1,
        "label": "pool.map(f)",
        "done": 4,
        "total": 10,
        "began": 0,
        "ended": None,
        "ok": None,
    }
    ring.map_ended(first, ok=True)
    for _ in range(6):
        ring.map_ended(ring.map_started("pool.map(g)", None), ok=False)
    maps = ring.maps()
    assert len(maps) == 5 and all(m["label"] == "pool.map(g)" for m in maps)


def test_stream_has_a_lane_per_engine_and_a_trace_per_function() -> None:
    now = time.time()
    events = [
        [0, "square", now - 5, now - 4, True, "lane"],
        [2, "square", now - 3, now - 3, True, "hub"],  # instantaneous: still drawn
        [2, "fails", now - 2, now - 1, False, "lane"],
    ]
    figure = stream.figure(events, [0, 1], now, window=60.0)
    assert figure["layout"]["yaxis"]["categoryarray"] == ["engine 0", "engine 1", "engine 2"]
    traces = {t["name"]: t for t in figure["data"]}
    assert sorted(traces) == ["fails", "square"]
    assert traces["square"]["y"] == ["engine 0", "engine 2"]
    assert traces["square"]["x"][0] == pytest.approx(1000.0)
    # a young stream spans MIN_SPAN, not the whole window; bars are at least a sliver of it
    assert traces["square"]["x"][1] == pytest.approx(stream.MIN_SPAN * stream.MIN_WIDTH * 1000)
    assert (
        figure["layout"]["xaxis"]["range"][0]
        == stream.figure([], [], now - 30)["layout"]["xaxis"]["range"][1]
    )
    assert traces["fails"]["marker"]["line"]["color"] == [stream.FAILED]
    assert traces["fails"]["marker"]["pattern"]["shape"] == ["x"]
    assert traces["square"]["marker"]["color"] == stream.colour("square")


class FakePool:
    """What the dashboard calls on a pool, recorded."""

    name = "fake"
    engines = 2

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @property
    def client(self) -> Any:
        raise AssertionError("not used here")

    def health_snapshots(self) -> list[Any]:
        return []

    def restart_sync(self, engine_id: int) -> int:
        self.calls.append(("restart", engine_id))
        return engine_id

    def remove_engines_sync(self, engine_ids: list[int]) -> list[int]:
        self.calls.append(("remove", engine_ids))
        return []

    def scale_sync(self, n: int) -> list[int]:
        self.calls.append(("scale", n))
        return list(range(n))

    def stop_sync(self) -> None:
        self.calls.append(("stop", None))

    def logs(self, engine_id: int, tail: int = 200) -> str:
        return f"engine {engine_id}: last {tail} lines"


class FakeCore:
    name = "fake"

    def __init__(self) -> None:
        self.task_events = TaskEvents()
        self.hooks: list[Any] = []
        self.teardown_hooks: list[Any] = []

    def add_engine_hook(self, hook: Any) -> None:
        self.hooks.append(hook)


def test_actions_run_on_the_pool_and_bad_ones_name_what_is_allowed() -> None:
    pool = FakePool()
    dashboard = Dashboard(FakeCore(), pool)  # type: ignore[arg-type]
    dashboard.run_action("restart", {"engine_id": 1})
    dashboard.run_action("stop-engine", {"engine_id": 0})
    dashboard.run_action("scale", {"n": 4})
    assert dashboard.run_action("logs", {"engine_id": 1, "tail": 5}) == "engine 1: last 5 lines"
    assert pool.calls == [("restart", 1), ("remove", [0]), ("scale", 4)]
    with pytest.raises(ValueError, match="unknown action 'reboot'; known: interrupt, restart"):
        dashboard.run_action("reboot", {})
    with pytest.raises(ValueError, match="engine_id must be a whole number >= 0; got '1'"):
        dashboard.run_action("restart", {"engine_id": "1"})
    with pytest.raises(ValueError, match="n must be a whole number >= 0; got True"):
        dashboard.run_action("scale", {"n": True})
    assert "logs" in ACTIONS and pool.calls[-1] == ("scale", 4)


def test_requests_and_replies_travel_through_private_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PXPOOL_RUNTIME_DIR", str(tmp_path))
    assert files.touch_want("nopool") is False  # no pool directory: nothing is created
    assert not (tmp_path / "nopool").exists()
    pool_dir = tmp_path / "p1"
    pool_dir.mkdir(mode=0o700)
    assert files.touch_want("p1") and files.wanted(pool_dir / "dashboard", within=5.0)
    request_id = files.post_request("p1", {"action": "scale", "n": 3})
    assert request_id is not None
    request_file = pool_dir / "dashboard" / "requests" / f"{request_id}.request.json"
    assert os.stat(request_file).st_mode & 0o077 == 0
    assert os.stat(pool_dir / "dashboard").st_mode & 0o077 == 0
    taken = files.take_requests(pool_dir / "dashboard")
    assert taken == [(request_id, {"action": "scale", "n": 3})]
    assert files.take_requests(pool_dir / "dashboard") == []  # taken once
    assert files.read_reply("p1", request_id) is None
    files.write_reply(pool_dir / "dashboard", request_id, {"ok": True})
    assert files.read_reply("p1", request_id) == {"ok": True}
    assert files.read_reply("p1", "../../etc/passwd") is None  # ids are checked
