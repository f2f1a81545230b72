"""pool.map, push/pull through shared memory, scatter/gather, on a real local pool."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pxpool
from pxpool._data import arena as _arena
from pxpool._data import shm
from pxpool._data.blocks import BLOCK_BYTES
from pxpool._data.ready import done_result
from pxpool.data import MapError, UnpicklableFunctionError

from .waits import wait_until

pytestmark = pytest.mark.integration


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def fail_on_37(x: int) -> int:
    if x == 37:
        raise ValueError(f"cannot take {x}")
    return x


def double_rows(part: np.ndarray) -> np.ndarray:
    return part * 2


def frame_score(part: pd.DataFrame) -> pd.Series:
    return part["x"] * 10 + part["y"]


def shm_segments() -> set[str]:
    return {n for n in os.listdir(shm.SHM_DIR) if n.startswith("pxpool-")}


def shm_mappings() -> list[str]:
    """The pxpool segments this process maps (run on an engine)."""
    with open("/proc/self/maps") as handle:
        words = (word for line in handle for word in line.split())
        return sorted({word for word in words if word.startswith("/dev/shm/pxpool-")})


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2) as running:
        yield running


def test_a_reply_whose_future_is_done_before_ipyparallel_marks_it_ready_is_read(
    pool: pxpool.Pool,
) -> None:
    """ipyparallel resolves the future first and sets ``_ready`` in a done callback;
    this puts a finished reply back into that window and finishes it 0.1 s later."""
    ar = pool.client.load_balanced_view().apply_async(pow, 3, 2)
    assert ar.get(timeout=30) == 9
    # ipyparallel's own window, reproduced: no public seam reaches these
    ar._ready = False  # noqa: SLF001
    ar._ready_event.clear()  # noqa: SLF001
    with pytest.raises(TimeoutError):  # what the map hit: get(timeout=0) in the window
        ar.get(timeout=0)
    finisher = threading.Timer(0.1, ar._finalize_result, (ar,))  # noqa: SLF001
    finisher.start()
    try:
        assert done_result(ar) == 9
    finally:
        finisher.join()


# ---------------------------------------------------------------- map over items


def test_map_returns_results_in_input_order(pool: pxpool.Pool) -> None:
    assert pool.map(square, range(5000)) == [x * x for x in range(5000)]
    assert pool.map(square, list(range(100))) == [x * x for x in range(100)]


def test_map_of_empty_input_is_empty_list(pool: pxpool.Pool) -> None:
    assert pool.map(square, []) == []
    assert pool.map(square, range(0)) == []
    assert pool.map(square, iter([])) == []


def test_map_of_one_item_and_more_engines_than_items(pool: pxpool.Pool) -> None:
    assert pool.map(square, [7]) == [49]
    assert pool.map(square, [1, 2, 3], chunksize=1) == [1, 4, 9]


def test_map_zips_more_iterables_like_builtin_map(pool: pxpool.Pool) -> None:
    assert pool.map(add, [1, 2, 3], [10, 20, 30]) == [11, 22, 33]
    assert pool.map(add, range(4), iter([5, 5, 5])) == [5, 6, 7]


def count_after_release(x: int, done: str, started: str, release: str) -> int:
    """Runs on an engine: waits (bounded) until ``release`` exists, saying so once in
    ``started``; then takes a millisecond and counts itself done (one byte in ``done``)."""
    import os
    import time

    if not os.path.exists(release):
        with open(started, "ab") as handle:
            handle.write(b"x")
        deadline = time.monotonic() + 30
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.005)
    time.sleep(0.001)
    with open(done, "ab") as handle:
        handle.write(b"x")
    return x * x


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# a generator's chunks are sized to about 20 ms of engine time: at most 20 items that
# take over 1 ms each; at most two chunks per engine are in flight
ITEM_SECONDS, CHUNK_SECONDS, IN_FLIGHT = 0.001, 0.02, 2


def test_map_reads_a_generator_lazily_with_bounded_chunks_in_flight(
    pool: pxpool.Pool, tmp_path: Path
) -> None:
    """While both engines wait on their first items, the map has read one item per
    engine (the first chunks of a generator); after the release, it never reads more
    than two chunks per engine ahead of what the engines have done."""
    engines = len(pool.ids)
    done, started, release = tmp_path / "done", tmp_path / "started", tmp_path / "release"
    pulled = 0
    lead = []  # at each read: items read minus items the engines have done

    def numbers(n: int) -> Iterator[int]:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            lead.append(pulled - file_size(done))
            yield i

    f = functools.partial(
        count_after_release, done=str(done), started=str(started), release=str(release)
    )
    with concurrent.futures.ThreadPoolExecutor(1) as running:
        mapped = running.submit(pool.map, f, numbers(600))
        try:
            wait_until(lambda: file_size(started) >= engines, 30, "every engine starting")
            seen = set()
            until = time.monotonic() + 0.2  # and the map reads nothing more meanwhile
            while time.monotonic() < until:
                seen.add(pulled)
                time.sleep(0.01)
            assert seen == {engines}, "one item per engine while no result has come back"
        finally:
            release.touch()
        assert mapped.result(timeout=60) == [x * x for x in range(600)]
    assert pulled == 600 and file_size(done) == 600
    per_chunk = round(CHUNK_SECONDS / ITEM_SECONDS)
    assert max(lead) <= IN_FLIGHT * engines * per_chunk, f"read ahead by {max(lead)} items"

    read = []

    def more_numbers() -> Iterator[int]:
        for i in range(20_000):
            read.append(i)
            yield i

    assert pool.map(square, more_numbers()) == [x * x for x in range(20_000)]
    assert len(read) == 20_000


def pid_after_a_millisecond(x: int) -> tuple[int, int]:
    import time

    time.sleep(0.001)
    if x == 250:
        raise ValueError("cannot take 250")
    return x, os.getpid()


def test_first_chunks_of_slow_items_hand_back_the_rest_to_every_engine(
    pool: pxpool.Pool,
) -> None:
    """The first chunks are an equal share per engine, stopped after ~20 ms of work
    (150 items of 1 ms would take 0.15 s): what they leave is mapped again, in order."""
    out = pool.map(pid_after_a_millisecond, range(200))
    assert [x for x, _ in out] == list(range(200))
    assert len({pid for _, pid in out}) == 2  # the rest spread over both engines
    unordered = pool.map(pid_after_a_millisecond, range(200), ordered=False)
    assert sorted(x for x, _ in unordered) == list(range(200))


def test_failure_index_is_exact_after_first_chunks_hand_back(pool: pxpool.Pool) -> None:
    with pytest.raises(MapError, match="for item 250: ValueError") as info:
        pool.map(pid_after_a_millisecond, range(300))
    assert info.value.index == 250


def test_unordered_map_returns_every_item(pool: pxpool.Pool) -> None:
    out = pool.map(square, range(3000), ordered=False, chunksize=100)
    assert sorted(out) == [x * x for x in range(3000)]


def test_lambdas_and_closures_are_mapped(pool: pxpool.Pool) -> None:
    offset = 3
    assert pool.map(lambda x: x + offset, [1, 2]) == [4, 5]


def test_failure_names_engine_and_item_index_with_remote_cause(pool: pxpool.Pool) -> None:
    with pytest.raises(
        MapError, match=r"fail_on_37 failed on engine \d for item 37: ValueError"
    ) as info:
        pool.map(fail_on_37, range(100))
    assert info.value.index == 37
    assert info.value.engine_id in pool.ids
    assert "cannot take 37" in str(info.value.__cause__)
    assert isinstance(info.value, pxpool.PxpoolError)


def test_failure_index_is_exact_inside_big_chunks(pool: pxpool.Pool) -> None:
    with pytest.raises(MapError) as info:
        pool.map(fail_on_37, range(1000), chunksize=500)
    assert info.value.index == 37 and info.value.chunk == (0, 500)


def test_unpicklable_function_is_named_with_a_fix(pool: pxpool.Pool) -> None:
    f = functools.partial(add, threading.Lock())
    with pytest.raises(
        UnpicklableFunctionError, match=r"pool.map cannot send function .* avoid capturing locks"
    ):
        pool.map(f, [1])


def test_bad_chunksize_is_rejected(pool: pxpool.Pool) -> None:
    with pytest.raises(ValueError, match="chunksize must be a positive int or 'auto'"):
        pool.map(square, [1], chunksize=0)


def test_progress_true_and_false_do_not_change_results(pool: pxpool.Pool) -> None:
    assert pool.map(square, range(10), progress=True) == [x * x for x in range(10)]
    assert pool.map(square, range(10), progress=False) == [x * x for x in range(10)]


# ---------------------------------------------------------------- map over numpy / pandas


def test_map_over_array_gets_partitions_and_concatenates_keeping_dtype(pool: pxpool.Pool) -> None:
    array = np.arange(10_000, dtype=np.int32).reshape(5000, 2)
    out = pool.map(double_rows, array, chunksize=700)
    assert out.dtype == np.int32 and out.shape == (5000, 2)
    assert np.array_equal(out, array * 2)


def test_map_over_array_with_scalar_results_gives_one_per_partition(pool: pxpool.Pool) -> None:
    sums = pool.map(lambda part: int(part.sum()), np.arange(100), chunksize=30)
    assert sums == [435, 1335, 2235, 945]


def test_map_over_empty_array_runs_f_once_for_the_result_type(pool: pxpool.Pool) -> None:
    out = pool.map(double_rows, np.zeros((0, 3), dtype=np.float32))
    assert out.shape == (0, 3) and out.dtype == np.float32


def test_map_over_dataframe_keeps_index_and_order(pool: pxpool.Pool) -> None:
    df = pd.DataFrame({"x": np.arange(3000), "y": np.ones(3000)}, index=np.arange(3000)[::-1] * 7)
    out = pool.map(frame_score, df)
    assert isinstance(out, pd.Series)
    assert out.index.equals(df.index)
    assert out.equals(df["x"] * 10 + df["y"])


def test_map_over_series_and_one_row_frame(pool: pxpool.Pool) -> None:
    s = pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"])
    assert pool.map(lambda p: p * 2, s).equals(s * 2)
    one = pd.DataFrame({"x": [4], "y": [1.0]})
    assert pool.map(frame_score, one).tolist() == [41.0]


def test_map_over_unordered_dataframe_returns_all_rows(pool: pxpool.Pool) -> None:
    df = pd.DataFrame({"x": np.arange(1000), "y": np.zeros(1000)})
    out = pool.map(frame_score, df, ordered=False, chunksize=100)
    assert out.sort_index().equals(df["x"] * 10.0)


def test_partition_failure_names_engine_and_rows(pool: pxpool.Pool) -> None:
    df = pd.DataFrame({"x": np.arange(100)})
    with pytest.raises(MapError, match=r"on engine \d for the partition of rows 50\.\.99") as info:
        pool.map(lambda p: 1 / 0 if p.index[0] >= 50 else p, df, chunksize=50)
    assert info.value.index == 50


def test_map_with_second_array_slices_both_alike(pool: pxpool.Pool) -> None:
    a, b = np.arange(1000), np.arange(1000) * 3
    assert np.array_equal(pool.map(np.add, a, b, chunksize=128), a + b)
    with pytest.raises(ValueError, match="every input must have 1000 rows"):
        pool.map(np.add, a, b[:10])


def test_auto_map_calls_f_on_cache_sized_blocks_and_joins_them_in_order(
    pool: pxpool.Pool,
) -> None:
    # 16 bytes a row: blocks of BLOCK_BYTES / 16 = 65,536 rows, inside chunks of any size
    block = BLOCK_BYTES // 16
    rows = 3 * block + 123
    df = pd.DataFrame(
        {"x": np.arange(rows, dtype=np.float64), "y": np.ones(rows)}, index=np.arange(rows) * 2
    )
    sizes = pool.map(len, df)  # scalars: one per call of f
    assert sum(sizes) == rows and max(sizes) <= block
    assert pool.map(len, df, chunksize=rows) == [rows]  # a fixed chunksize is what f sees
    out = pool.map(frame_score, df)
    assert out.index.equals(df.index) and out.equals(df["x"] * 10 + df["y"])
    a = np.arange(rows * 2, dtype=np.int64)  # two inputs, 16 bytes a row together
    b = a[::-1].copy()
    assert np.array_equal(pool.map(np.add, a[:rows], b[:rows]), a[:rows] + b[:rows])


def rows_at_25us(part: pd.DataFrame) -> pd.DataFrame:
    import time

    time.sleep(len(part) * 25e-6)
    return part.assign(pid=os.getpid())


def test_first_shares_of_slow_rows_hand_back_the_rest_to_every_engine(
    pool: pxpool.Pool,
) -> None:
    """Each engine's first share (80,000 rows, 2 s of work) stops once its 0.5 s budget
    is spent; what is left of both shares is cut into chunks for both engines."""
    rows = 160_000  # 16 columns, 128 bytes a row: blocks of 8,192 rows (0.2 s of f)
    columns = {f"c{i}": np.arange(rows, dtype=np.float64) + i for i in range(16)}
    df = pd.DataFrame(columns, index=np.arange(rows) * 3)
    out = pool.map(rows_at_25us, df)
    assert out.index.equals(df.index) and out.drop(columns="pid").equals(df)
    assert out["pid"].iloc[: rows // 2].nunique() == 2  # the first share's rest was shared


def test_large_numeric_frame_is_mapped_through_shared_memory_keeping_index_and_dtypes(
    pool: pxpool.Pool,
) -> None:
    n = 200_000  # 4.8 MB: above the shared-memory threshold
    df = pd.DataFrame(
        {
            "x": np.arange(n, dtype=np.int64),
            "y": np.linspace(0, 1, n),
            "when": pd.date_range("2020-01-01", periods=n, freq="s"),
        },
        index=pd.Index(np.arange(n)[::-1] * 3, name="key"),
    )
    before = shm_segments()
    out = pool.map(lambda p: p.assign(z=p["x"] * 2), df)
    assert out.index.equals(df.index) and list(out.columns) == ["x", "y", "when", "z"]
    assert out.dtypes["when"] == df.dtypes["when"] and out["z"].equals(df["x"] * 2)
    # the input went into slots of the pool's arena, one per column and one for the
    # index, which the engines map; after the map they are free for the next one
    arena = _arena.arena_for(shm.pool_prefix(pool.name))
    mapped = pool.map(lambda p: [shm_mappings()], df, chunksize=n // 2)
    slots = {slot.name for slot in arena.slots}
    for engine_maps in mapped:
        assert len({os.path.basename(m) for m in engine_maps[0]} & slots) >= 4
    assert shm_segments() - before <= slots  # nothing else is left
    assert not any(slot.busy for slot in arena.slots)
    # a repeated map reuses the slots: no new segment
    after = shm_segments()
    assert sum(pool.map(lambda p: p["x"].sum(), df)) == df["x"].sum()
    assert shm_segments() == after


def test_shared_partitions_are_private_writable_copies(pool: pxpool.Pool) -> None:
    array = np.zeros((300_000, 2))

    def fill(part: np.ndarray) -> np.ndarray:
        part += 1  # in place: the partition must be the engine's own memory
        return part

    assert np.array_equal(pool.map(fill, array), array + 1)
    assert not array.any()  # the caller's array is untouched
    series = pd.Series(np.arange(500_000.0), name="s")  # RangeIndex, named
    out = pool.map(lambda p: p + 1, series)
    assert out.equals(series + 1) and out.name == "s"


def test_a_multiindex_takes_the_network_path_and_still_maps(pool: pxpool.Pool) -> None:
    n = 100_000
    df = pd.DataFrame({"x": np.arange(n), "label": ["a"] * n})  # strings alone: shared memory
    df.index = pd.MultiIndex.from_arrays([np.arange(n) // 10, np.arange(n) % 10])
    before = shm_segments()
    out = pool.map(lambda p: p["x"] + p["label"].str.len(), df)
    assert out.equals(df["x"] + 1)
    assert shm_segments() == before


def test_failure_in_a_shared_partition_names_rows_and_frees_segments(pool: pxpool.Pool) -> None:
    df = pd.DataFrame({"x": np.arange(400_000.0)})
    before = shm_segments()
    with pytest.raises(MapError, match=r"partition of rows 200000\.\.399999"):
        pool.map(lambda p: 1 / 0 if p.index[0] >= 200_000 else p, df, chunksize=200_000)
    # the failed map's slots are unlinked (chunks of it may still run): nothing is new,
    # and no slot stays leased
    assert shm_segments() <= before
    arena = _arena.arena_for(shm.pool_prefix(pool.name))
    assert not any(slot.busy for slot in arena.slots)


# ---------------------------------------------------------------- push / pull


def test_large_array_push_is_one_shared_read_only_copy_in_a_slot_of_the_pool(
    pool: pxpool.Pool,
) -> None:
    before = shm_segments()
    big = np.random.default_rng(0).random(1 << 18)  # 2 MB
    pool.push({"big": big})
    slots = shm_segments() - before
    assert len(slots) <= 1  # a new slot, or one an earlier push left free
    pool.execute("checked = (big.flags.writeable, float(big.sum()))")
    assert pool.pull("checked") == [(False, float(big.sum()))] * 2
    mapped = pool.view().apply_sync(shm_mappings)
    arena = _arena.arena_for(shm.pool_prefix(pool.name))
    held = {slot.name for slot in arena.slots if all(slot.holders[i] for i in pool.ids)}
    assert held  # the slot "big" is in, held by both engines
    for engine_maps in mapped:  # and mapped by both
        assert held <= {os.path.basename(name) for name in engine_maps} <= shm_segments()


def test_a_slot_is_reused_only_once_no_name_holds_it(pool: pxpool.Pool) -> None:
    ones, twos, threes = (np.full(1 << 18, v) for v in (1.0, 2.0, 3.0))
    pool.push({"held": ones})
    first = shm_segments()
    pool.push({"held": twos})  # the first slot is still held while the name moves over
    second = shm_segments()
    pool.push({"held": threes})  # now the first is free: reused, no new segment
    assert shm_segments() == second and len(second - first) <= 1
    pool.push({"kept": ones, "also": ones})  # two names over one slot
    pool.push({"also": 0})
    pool.push({"other": twos})  # must not take the slot "kept" still holds
    pool.execute("sums = (float(held.sum()), float(kept.sum()), float(other.sum()))")
    assert pool.pull("sums") == [(3.0 * (1 << 18), 1.0 * (1 << 18), 2.0 * (1 << 18))] * 2
    pool.push({"held": 0, "kept": 0, "other": 0})


def test_pull_of_large_array_round_trips_writable(pool: pxpool.Pool) -> None:
    before = shm_segments()
    pool.execute("import numpy as np\nmade = np.arange(1 << 18, dtype=np.int64)")
    made = pool.pull("made", targets=0)
    assert made.flags.writeable and np.array_equal(made, np.arange(1 << 18))
    both = pool.pull(["made", "made"], targets=1)
    assert len(both) == 2 and np.array_equal(both[1], made)
    assert shm_segments() == before
    pool.execute("made = None")


def test_push_and_pull_of_small_values_keep_ipyparallel_shapes(pool: pxpool.Pool) -> None:
    pool.push({"a": 1, "b": [1, 2]})
    assert pool.pull("a") == [1, 1]
    assert pool.pull(["a", "b"], targets=0) == [1, [1, 2]]


def test_pull_of_unknown_name_fails_on_the_engine(pool: pxpool.Pool) -> None:
    with pytest.raises(Exception, match="nowhere_defined"):
        pool.pull("nowhere_defined", targets=0)


# ---------------------------------------------------------------- scatter / gather


def test_scatter_gather_round_trips_a_list(pool: pxpool.Pool) -> None:
    pool.scatter("part", list(range(11)))
    assert [len(p) for p in pool.pull("part")] == [5, 6]
    assert pool.gather("part") == list(range(11))


def test_scatter_gather_round_trips_numpy_including_shared_parts(pool: pxpool.Pool) -> None:
    for array in (np.arange(30).reshape(10, 3), np.random.default_rng(1).random((1 << 18, 2))):
        pool.scatter("part", array)
        back = pool.gather("part")
        assert back.dtype == array.dtype and np.array_equal(back, array)


def test_scatter_gives_dataframe_partitions_that_keep_their_index(pool: pxpool.Pool) -> None:
    df = pd.DataFrame({"v": range(6)}, index=list("uvwxyz"))
    pool.scatter("part", df)
    assert pool.pull("part", targets=1).index.tolist() == ["x", "y", "z"]
    assert pool.gather("part").equals(df)


def test_scatter_to_one_target_and_empty_input(pool: pxpool.Pool) -> None:
    pool.scatter("part", [1, 2, 3], targets=[1])
    assert pool.pull("part", targets=1) == [1, 2, 3]
    pool.scatter("part", [])
    assert pool.gather("part") == []


# ---------------------------------------------------------------- lifetime


def test_stopping_the_pool_releases_shared_memory() -> None:
    before = shm_segments()
    with pxpool.Pool.from_profile("local", engines=1) as one:
        one.push({"big": np.ones(1 << 18)})
        pid = one.apply(os.getpid)
        assert len(one.apply(shm_mappings)) == 1
    assert shm_segments() == before
    assert not os.path.exists(f"/proc/{pid}")
