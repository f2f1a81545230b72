"""The task lane's pieces without engines: the signed wire, the board's placement rules,
the function cache, engine names winning, options, errors, and the joblib registration."""

from __future__ import annotations

import pickle
import subprocess
import sys
import types
from typing import Any

import cloudpickle
import pytest

import pxpool
from pxpool._entry.signing import FrameSigner
from pxpool._tasks import board as board_module
from pxpool._tasks import wire
from pxpool._tasks.agent import run_chunk
from pxpool._tasks.board import Board, Link, Task
from pxpool._tasks.executor import chunks
from pxpool._tasks.future import TaskFuture
from pxpool._tasks.lane import check_options
from pxpool._tasks.names import code_names, load_function, merge_engine_names
from pxpool._tasks.pickling import dumps_function

KEY = b"k" * 32

# ---------------------------------------------------------------- the wire


def test_a_message_round_trips_with_small_parts_in_one_frame_and_large_ones_apart() -> None:
    signer = FrameSigner(KEY)
    big = bytes(range(256)) * 1024  # 256 KiB
    frames = wire.pack(signer, {"op": "run", "q": 1}, [b"f", b"", big, b"args"])
    assert len(frames) == 2 and frames[1] is big
    unpacked = wire.unpack(signer, frames)
    assert not isinstance(unpacked, str)
    header, parts = unpacked
    assert header == {"op": "run", "q": 1}
    assert [bytes(p) for p in parts] == [b"f", b"", big, b"args"]


@pytest.mark.parametrize("where", ["signature", "header", "part", "large frame"])
def test_a_changed_byte_anywhere_is_refused(where: str) -> None:
    signer = FrameSigner(KEY)
    frames = wire.pack(signer, {"op": "run", "q": 1}, [b"function", bytes(70_000)])
    first, large = bytearray(frames[0]), bytearray(frames[1])
    index = {"signature": 3, "header": wire.SIG + 6, "part": len(first) - 1}.get(where)
    if index is None:
        large[10] ^= 1
    else:
        first[index] ^= 1
    assert "signature" in str(wire.unpack(signer, [bytes(first), bytes(large)]))


def test_other_keys_missing_frames_and_garbage_are_refused() -> None:
    frames = wire.pack(FrameSigner(KEY), {"q": 1}, [b"x", bytes(70_000)])
    assert "signature" in str(wire.unpack(FrameSigner(b"other"), frames))
    assert "signature" in str(wire.unpack(FrameSigner(KEY), frames[:1]))
    assert "too short" in str(wire.unpack(FrameSigner(KEY), [b"x"]))
    assert "empty" in str(wire.unpack(FrameSigner(KEY), []))
    # signed with the pool's key but not UTF-8 JSON: refused, not raised
    head = b'{"k":[],"\xff":1}'
    signed = len(head).to_bytes(4, "little") + head
    refused = wire.unpack(FrameSigner(KEY), [FrameSigner(KEY).sign([signed]) + signed])
    assert refused == "malformed header (the signed header is not JSON)"


def test_frame_boundaries_are_signed() -> None:
    signer = FrameSigner(KEY)
    assert signer.sign([b"ab", b"c"]) != signer.sign([b"a", b"bc"])
    assert signer.verify(signer.sign([b"ab", b"c"]), [b"ab", b"c"])
    with pytest.raises(ValueError, match="must not be empty"):
        FrameSigner(b"")


# ---------------------------------------------------------------- the board


def make_task(i: int, timeout: float | None = None) -> Task:
    return Task(i, f"t{i}", [b""], 0, 0, TaskFuture(f"t{i}"), timeout=timeout)


def two_links(board: Board) -> tuple[Link, Link]:
    board.links = {0: Link(0, "tcp://a", "u0"), 1: Link(1, "tcp://b", "u1")}
    return board.links[0], board.links[1]


def test_tasks_go_to_the_least_busy_engine_up_to_its_slots() -> None:
    board = Board(stall=10.0)
    first, second = two_links(board)
    board.queue.extend(make_task(i) for i in range(10))
    sends, cancelled = board.assign(now=0.0)
    assert not cancelled
    assert [link.engine_id for link, _ in sends] == [0, 1, 0, 1]  # MIN_SLOTS each
    assert len(board.queue) == 6
    assert all(task.future.running() for _, task in sends)
    assert sends[0][1].future.engine_id == 0


def test_a_cancelled_queued_task_is_dropped_not_sent() -> None:
    board = Board(stall=10.0)
    two_links(board)
    tasks = [make_task(i) for i in range(3)]
    board.queue.extend(tasks)
    assert tasks[1].future.cancel()
    sends, cancelled = board.assign(now=0.0)
    assert cancelled == [tasks[1]]
    assert [task for _, task in sends] == [tasks[0], tasks[2]]


def test_tasks_behind_a_long_one_are_taken_back_for_a_free_engine() -> None:
    board = Board(stall=0.05)
    first, second = two_links(board)
    board.queue.extend(make_task(i) for i in range(3))
    board.assign(now=0.0)  # 0 -> first, 1 -> second, 2 -> first (behind task 0)
    waiting = list(first.in_flight.values())[1]
    assert board.recall_stalled(now=1.0) == []  # no engine free: nothing to gain
    board.finished(second, next(iter(second.in_flight)), now=1.0)
    taken = board.recall_stalled(now=1.0)
    assert taken == [(first, waiting)]
    assert board.queue[0] is waiting and len(first.in_flight) == 1
    sends, _ = board.assign(now=1.0)
    assert sends[0] == (second, waiting)  # the stalled engine takes nothing
    assert board.free_link(now=1.0) is second
    old_seq = next(s for s, (_, t) in board.recalled.items() if t is waiting)
    task, current = board.finished(first, old_seq, now=2.0)  # it ran there anyway
    assert task is waiting and current is False


def test_a_maps_chunk_behind_a_long_one_waits_for_an_idle_engine_not_a_busy_one() -> None:
    """Chunks are cut alike: one moved from behind its stalled sibling to an engine busy
    with the others would wait as long there and leave its own engine idle."""
    board = Board(stall=0.05)
    board.slots = 6  # room on both engines, as after short tasks
    first, second = two_links(board)
    chunks = [make_task(i) for i in range(4)]
    for chunk in chunks:
        chunk.chunk = True
    board.queue.extend(chunks)
    board.assign(now=0.0)  # 0, 2 -> first; 1, 3 -> second
    second.head_since = 0.04  # its chunk began later: not stalled yet
    assert board.recall_stalled(now=0.06) == []
    plain = make_task(9)  # the control: a task that is not a chunk is taken back
    board.place(first, plain, now=0.06)
    assert board.recall_stalled(now=0.07) == [(first, plain)]
    board.queue.clear()
    for seq in list(second.in_flight):
        board.finished(second, seq, now=0.08)
    assert board.recall_stalled(now=0.08) == [(first, chunks[2])]  # now an engine is idle


def test_timeouts_count_from_the_started_notice_or_from_first_in_line() -> None:
    board = Board(stall=10.0)
    first, second = two_links(board)
    board.queue.extend([make_task(0, timeout=1.0), make_task(1, timeout=1.0)])
    sends, _ = board.assign(now=0.0)
    (_, noticed), (_, silent) = sends
    board.started(first, noticed.seq, now=0.5)
    assert board.overdue(now=0.9) == []
    assert board.overdue(now=1.2) == [(second, silent)]  # no notice: since first in line
    assert board.overdue(now=1.6) == [(first, noticed), (second, silent)]


def test_an_engine_that_left_gives_back_its_tasks() -> None:
    board = Board(stall=10.0)
    first, _ = two_links(board)
    board.queue.extend(make_task(i) for i in range(4))
    board.assign(now=0.0)
    lost = board.drop_link(0)
    assert [t.id for t in lost] == [0, 2]
    board.requeue(lost)
    assert [t.id for t in board.queue][:2] == [0, 2]
    assert 0 not in board.links


def test_slots_follow_the_measured_task_duration() -> None:
    board = Board(stall=10.0)
    for _ in range(50):
        board.took(0.00001)
    assert board.slots == board_module.MAX_SLOTS
    for _ in range(80):
        board.took(1.0)
    assert board.slots == board_module.MIN_SLOTS


def test_an_engine_is_topped_up_in_batches_once_down_to_half_its_slots() -> None:
    board = Board(stall=10.0)
    first, second = two_links(board)
    for _ in range(50):
        board.took(0.004)  # 4 ms tasks: 20 ms of work in flight is 6 slots
    assert board.slots == 6
    board.queue.extend(make_task(i) for i in range(30))
    sends, _ = board.assign(now=0.0)
    assert len(first.in_flight) == len(second.in_flight) == 6
    for seq in list(first.in_flight)[:2]:
        board.finished(first, seq, now=0.1, took=0.004)
    assert board.assign(now=0.1) == ([], [])  # 4 left of 6: it waits for one more
    board.finished(first, next(iter(first.in_flight)), now=0.2, took=0.004)
    sends, _ = board.assign(now=0.2)  # down to 3: filled up to 6 at once
    assert [link.engine_id for link, _ in sends] == [0, 0, 0]
    assert len(first.in_flight) == 6
    # taking work back from a stalled engine asks only for room, not for half empty
    board.finished(second, next(iter(second.in_flight)), now=0.3, took=0.004)
    board.stall = 0.05
    first.head_since = 0.0
    second.head_since = 0.3
    taken = board.recall_stalled(now=0.31)
    assert len(taken) == 5 and {link.engine_id for link, _ in taken} == {0}


# ---------------------------------------------------------------- functions and names


def notebook(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace


def test_an_unchanged_function_reuses_its_pickle_a_changed_global_does_not() -> None:
    ns = notebook("import math\nfactor = 3\ndef f(x):\n    return math.floor(x) * factor\n")
    first = dumps_function(ns["f"])
    assert dumps_function(ns["f"]) is first
    ns["factor"] = 4
    second = dumps_function(ns["f"])
    assert second is not first and pickle.loads(second)(2.5) == 8


def test_a_function_reading_a_mutable_global_is_pickled_each_time() -> None:
    ns = notebook("data = [1]\ndef f():\n    return sum(data)\n")
    first = dumps_function(ns["f"])
    ns["data"].append(41)
    second = dumps_function(ns["f"])
    assert second is not first and pickle.loads(second)() == 42


def test_engine_names_win_over_the_clients_and_fill_in_missing_ones() -> None:
    ns = notebook(
        "both = 'client'\ndef helper():\n    return only_engine\n"
        "def f():\n    return both, helper()\n"
    )
    f = pickle.loads(cloudpickle.dumps(ns["f"]))
    merge_engine_names(f, {"both": "engine", "only_engine": 7})
    assert f() == ("engine", 7)


def test_an_engine_unpickles_a_frozen_function_once_and_each_task_gets_fresh_globals() -> None:
    ns = notebook(
        "import math\nbase = 2\ndef f(x):\n    global seen\n    seen = x\n"
        "    return math.floor(x) * base * engine_scale\n"
    )
    data = cloudpickle.dumps(ns["f"])
    engine = {"engine_scale": 10}
    first, second = load_function(data, engine), load_function(memoryview(data), engine)
    assert first is not second and first.__code__ is second.__code__  # unpickled once
    assert first(3.5) == 60 and first.__globals__["seen"] == 3.5
    assert "seen" not in second.__globals__  # an assignment stays in its own task
    engine["engine_scale"] = 1
    assert load_function(data, engine)(3.5) == 6  # engine names are read at each task


def test_functions_of_importable_modules_keep_their_globals() -> None:
    import json

    merge_engine_names(json.dumps, {"JSONEncoder": None})
    assert json.dumps([1]) == "[1]"


def test_code_names_include_nested_code() -> None:
    def outer() -> Any:
        return lambda: inner_name  # type: ignore[name-defined]  # noqa: F821

    assert "inner_name" in code_names(outer.__code__)
    assert isinstance(outer.__code__, types.CodeType)


# ---------------------------------------------------------------- options, errors, helpers


@pytest.mark.parametrize(
    ("timeout", "retries", "message"),
    [
        (0, 1, "timeout must be"),
        (-1.0, 1, "timeout must be"),
        ("1", 1, "timeout must be"),
        (None, -1, "retries must be"),
        (None, 1.5, "retries must be"),
        (None, True, "retries must be"),
    ],
)
def test_bad_options_are_refused(timeout: Any, retries: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_options(timeout, retries)


def test_task_errors_name_task_and_engine_and_survive_pickling() -> None:
    error = pxpool.TaskError("pool.submit(f) #3", 1, "ValueError", "bad", "Traceback ...")
    assert str(error).startswith("pool.submit(f) #3 failed on engine 1: ValueError: bad.")
    assert "pool.debug(1)" in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert (again.task, again.engine_id, again.ename) == ("pool.submit(f) #3", 1, "ValueError")


def test_map_chunks_and_their_runner() -> None:
    calls = list(chunks(([1, 2, 3, 4, 5], "abcde"), 2))
    assert calls == [[(1, "a"), (2, "b")], [(3, "c"), (4, "d")], [(5, "e")]]
    assert run_chunk(lambda n, s: s * n, calls[0]) == ["a", "bb"]


def test_importing_pxpool_leaves_joblib_alone_and_registers_on_its_import() -> None:
    code = (
        "import sys, pxpool\n"
        "assert 'joblib' not in sys.modules\n"
        "import joblib\n"
        "from joblib.parallel import BACKENDS\n"
        "assert 'pxpool' in BACKENDS, sorted(BACKENDS)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
