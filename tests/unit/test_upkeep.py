"""The controller's upkeep and the client's bounded history, on plain data: what is
forgotten, in which order, and that counts stay exact."""

from __future__ import annotations

from types import SimpleNamespace

from pxpool._core.recent import RecentItems
from pxpool._entry.controller_upkeep import CountingTail, memory_report, trim_hub, trim_scheduler


def test_hub_trim_keeps_the_newest_ids_and_counts_every_task() -> None:
    culled = {"x", "y", "z", "w"}  # the hub's database's record of what it culled
    hub = SimpleNamespace(
        completed={0: [f"a{i}" for i in range(10)], 1: ["b0"]},
        all_completed={*(f"a{i}" for i in range(10)), "b0"},
        db=SimpleNamespace(_culled_ids=culled),
    )
    assert trim_hub(hub, keep=3) == 7
    assert list(hub.completed[0]) == ["a7", "a8", "a9"] and len(hub.completed[0]) == 10
    assert hub.all_completed == {"a7", "a8", "a9", "b0"}
    assert culled == set()  # more than keep: cleared
    hub.completed[0].append("a10")
    assert trim_hub(hub, keep=3) == 1 and len(hub.completed[0]) == 11
    assert trim_hub(hub, keep=3) == 0


def test_counting_tail_counts_what_it_forgot() -> None:
    tail = CountingTail(["a", "b", "c"])
    assert tail.trim(5) == [] and len(tail) == 3
    assert tail.trim(1) == ["a", "b"] and len(tail) == 3 and list(tail) == ["c"]


def test_scheduler_trim_forgets_the_oldest_finished_tasks_everywhere() -> None:
    done = [f"t{i}" for i in range(6)]
    scheduler = SimpleNamespace(
        destinations={msg_id: b"engine" for msg_id in done},
        all_ids={*done, "queued"},
        all_done=set(done),
        all_completed=set(done[:4]),
        all_failed=set(done[4:]),
        completed={b"engine": set(done[:4])},
        failed={b"engine": set(done[4:])},
    )
    assert trim_scheduler(scheduler, keep=2) == 4
    assert list(scheduler.destinations) == ["t4", "t5"]
    assert scheduler.all_ids == {"t4", "t5", "queued"}  # a queued task is never forgotten
    assert scheduler.all_done == scheduler.all_failed == {"t4", "t5"}
    assert scheduler.all_completed == set() and scheduler.completed[b"engine"] == set()
    assert trim_scheduler(scheduler, keep=2) == 0


def test_recent_items_keep_the_last_ones_in_order() -> None:
    history = RecentItems(range(5), keep=4)
    assert history == [1, 2, 3, 4]
    for i in range(5, 20):
        history.append(i)
    assert len(history) <= 5 and history[-1] == 19 and history == sorted(history)


def test_memory_report_reads_this_process() -> None:
    report = memory_report()
    assert report["rss_bytes"] > 1 << 20 and report["pss_bytes"] > 0
