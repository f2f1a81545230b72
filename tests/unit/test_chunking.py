"""Chunk sizing, input kinds, packing and result joining, without engines."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from pxpool._data import agent, shm, wire
from pxpool._data import chunking as ch
from pxpool._data.source import FIRST_BYTES, Source
from pxpool._data.wire import ChunkReply
from pxpool.data import join, split


def test_sizer_probes_small_before_any_measurement() -> None:
    sizer = ch.ChunkSizer(engines=2, total=10_000, probe=4)
    assert not sizer.measured
    assert sizer.next_size(10_000) == 4


def test_sizer_batches_tiny_items_after_measuring_them() -> None:
    sizer = ch.ChunkSizer(engines=2, total=1_000_000)
    sizer.record(1000, 0.0001)  # 0.1 us per item
    size = sizer.next_size(1_000_000)
    assert size >= 10_000


def test_sizer_keeps_heavy_items_one_per_chunk() -> None:
    sizer = ch.ChunkSizer(engines=2, total=100)
    sizer.record(1, 0.5)
    assert sizer.next_size(99) == 1


def test_sizer_leaves_several_chunks_per_engine_for_balance() -> None:
    sizer = ch.ChunkSizer(engines=4, total=1000, per_engine=4)
    sizer.record(10, 0.001)  # 100 us per item: the 20 ms target alone would give 200
    assert sizer.next_size(1000) == 63  # ceil(1000 / 16)


def test_sizer_cuts_the_rest_into_equal_chunks_without_a_short_tail() -> None:
    sizer = ch.ChunkSizer(engines=2, total=200_000, max_size=65_536, floor=0.02)
    sizer.record(1000, 0.0001)  # tiny items: the size cap decides, 65,536 per chunk
    sizes = []
    remaining = 198_000
    while remaining:
        sizes.append(sizer.next_size(remaining))
        remaining -= sizes[-1]
    assert sizes == [49_500] * 4  # not 65,536 x 3 plus a 1,392-item round trip


def test_even_sizer_gives_every_engine_as_many_equal_chunks_and_keeps_the_plan() -> None:
    # the pool.map of 1M DataFrame rows on 2 engines: ~0.9 us per row, 0.2 s target
    sizer = ch.ChunkSizer(
        engines=2, total=1_000_000, target=0.2, floor=0.1, per_engine=2, max_size=1 << 24, even=True
    )
    sizer.record(4096, 4096 * 0.9e-6)
    sizes, remaining = [], 991_808
    while remaining:
        sizes.append(sizer.next_size(remaining))
        remaining -= sizes[-1]
    assert sizes == [247_952] * 4  # not 5 chunks of ~198k: one engine would run 3
    uneven = ch.ChunkSizer(
        engines=2, total=1_000_000, target=0.2, floor=0.1, per_engine=2, max_size=1 << 24
    )
    uneven.record(4096, 4096 * 0.9e-6)
    assert math.ceil(991_808 / uneven.next_size(991_808)) == 5


@pytest.mark.parametrize(
    ("engines", "ideal_chunks", "chunks"), [(2, 5, 4), (2, 7, 6), (4, 7, 8), (3, 4, 3), (4, 2, 4)]
)
def test_even_count_is_the_lower_multiple_of_the_engines_unless_chunks_grow_past_1_5x(
    engines: int, ideal_chunks: int, chunks: int
) -> None:
    sizer = ch.ChunkSizer(engines=engines, total=None, even=True)
    assert sizer.even_count(ideal_chunks, float(ideal_chunks)) == chunks
    # 5.4 chunks' worth: 4 chunks of 1.35 times the size, not 6 (ceil, then even)
    assert ch.ChunkSizer(engines=2, total=None, even=True).even_count(6, 5.4) == 4


def test_sizer_never_exceeds_what_remains() -> None:
    sizer = ch.ChunkSizer(engines=1, total=5, chunksize=100)
    assert sizer.next_size(5) == 5
    assert sizer.next_size(0) == 0


def test_sizer_median_ignores_one_slow_first_call() -> None:
    sizer = ch.ChunkSizer(engines=2, total=None)
    sizer.record(1, 2.0)  # an import on first call
    sizer.record(100, 0.0001)
    sizer.record(100, 0.0001)
    assert sizer.cost == pytest.approx(1e-6)


def test_fixed_chunksize_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        ch.ChunkSizer(engines=1, total=1, chunksize=0)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (np.arange(3), "numpy"),
        (pd.DataFrame({"a": [1]}), "pandas"),
        (pd.Series([1]), "pandas"),
        (range(3), "range"),
        ([1, 2], "sequence"),
        ((1, 2), "sequence"),
        ((x for x in "ab"), "iterator"),
        ({1, 2}, "iterator"),
        ("abc", "iterator"),
    ],
)
def test_kind_of_names_how_input_is_split(values: object, kind: str) -> None:
    assert ch.kind_of(values) == kind


def test_pack_round_trips_dataframe_with_columns_out_of_band() -> None:
    df = pd.DataFrame(
        {"x": np.arange(100_000.0), "y": np.arange(100_000)}, index=np.arange(100_000) * 2
    )
    packed = wire.pack(df)
    assert packed[0] == "pickle5"
    assert packed[2] >= 1  # column blocks travel as separate buffers
    assert all(isinstance(b, np.ndarray) for b in packed[3:])
    assert wire.unpack(packed).equals(df)


def test_pack_keeps_arrays_and_objects_as_they_are() -> None:
    array = np.arange(4)
    assert wire.pack(array) == ("array", array)
    assert wire.unpack(wire.pack({"a": 1})) == {"a": 1}


def test_a_chunk_reply_travels_as_a_plain_flat_tuple_and_is_read_by_name() -> None:
    array = np.arange(4)
    flat = ChunkReply(0.5, 4, wire.pack(array)).flat()
    assert type(flat) is tuple and flat[:2] == (0.5, 4) and flat[3] is array  # a frame
    reply = ChunkReply.read(flat)
    assert (reply.seconds, reply.done) == (0.5, 4) and reply.results() is array


def test_run_items_returns_cost_and_pickled_results() -> None:
    reply = ChunkReply.read(agent.run_items(lambda x: x + 1, "t", 0, [1, 2], False))
    assert reply.seconds >= 0
    assert reply.body[0] == "pickled" and isinstance(reply.body[1], bytes)
    assert (reply.results(), reply.done) == ([2, 3], 2)
    reply = ChunkReply.read(agent.run_items(lambda a, b: a * b, "t", 0, [(2, 3)], True))
    assert (reply.results(), reply.done) == ([6], 1)


def test_a_budgeted_chunk_of_tiny_items_runs_to_the_end() -> None:
    flat = agent.run_items(lambda x: x * x, "t", 0, range(100_000), False, 0.02)
    reply = ChunkReply.read(flat)
    assert reply.done == 100_000
    assert reply.results() == [x * x for x in range(100_000)]


def test_a_budgeted_chunk_of_slow_items_stops_early_and_says_how_far_it_got() -> None:
    def slow(a: int, b: int) -> int:
        time.sleep(0.01)
        return a + b

    items = [(i, 1) for i in range(50)]
    reply = ChunkReply.read(agent.run_items(slow, "t", 0, items, True, 0.02))
    # stops once over budget, with the whole chunk (0.5 s) over 3x the budget: after
    # 1+2 items (0.03 s), or a few more on a busy machine
    assert 2 <= reply.done < 50
    assert reply.results() == [i + 1 for i in range(reply.done)]
    assert reply.seconds < 0.25


def test_a_budgeted_chunk_runs_on_when_it_would_end_within_its_stretch() -> None:
    def steady(x: int) -> int:
        time.sleep(0.001)
        return x

    # 40 items of 1 ms: over the 20 ms budget halfway, but done within 3x of it
    reply = ChunkReply.read(agent.run_items(steady, "t", 0, list(range(40)), False, 0.02))
    assert reply.done == 40


def test_run_items_records_the_global_index_of_the_failing_item() -> None:
    def fail_on_seven(x: int) -> int:
        if x == 7:
            raise ValueError("seven")
        return x

    with pytest.raises(ValueError, match="seven"):
        agent.run_items(fail_on_seven, "tok", 5, [5, 6, 7, 8], False)
    assert agent.failed_index("tok") == 7
    assert agent.failed_index("tok") is None


def test_run_part_unpacks_several_inputs_and_packs_the_result() -> None:
    df = pd.DataFrame({"x": np.arange(5)})
    flat = wire.flat_args([df, np.arange(5)])
    reply = ChunkReply.read(agent.run_part(lambda d, a: d.x + a, "t", 0, 0, 0.0, 2, *flat))
    assert reply.results().tolist() == [0, 2, 4, 6, 8] and reply.done == 5


def test_combine_concatenates_arrays_and_pandas_but_lists_scalars() -> None:
    assert ch.combine("numpy", [np.arange(2), np.arange(2, 4)]).tolist() == [0, 1, 2, 3]
    s = ch.combine("pandas", [pd.Series([1], index=[5]), pd.Series([2], index=[9])])
    assert s.index.tolist() == [5, 9]
    assert ch.combine("numpy", [1.0, 2.0]) == [1.0, 2.0]


def test_split_gives_near_equal_contiguous_parts_and_join_inverts_it() -> None:
    assert split(list(range(5)), 2) == [[0, 1], [2, 3, 4]]
    assert split([1], 3) == [[], [], [1]]
    df = pd.DataFrame({"a": range(7)}, index=list("abcdefg"))
    parts = split(df, 3)
    assert [len(p) for p in parts] == [2, 2, 3]
    assert join(parts).equals(df)
    array = np.arange(12).reshape(6, 2)
    assert np.array_equal(join(split(array, 4)), array)


def test_shm_export_and_attach_share_one_read_only_copy() -> None:
    array = np.arange(300_000, dtype=np.float64).reshape(1000, 300)
    descriptor = shm.export(array, "pxpool-unit-test")
    try:
        mapped = shm.attach(descriptor, writable=False)
        assert np.array_equal(mapped, array)
        assert not mapped.flags.writeable
    finally:
        shm.unlink(descriptor[0])
    assert shm.cleanup("pxpool-unit-test") == []


def test_shm_export_keeps_fortran_order() -> None:
    array = np.asfortranarray(np.arange(20.0).reshape(4, 5))
    descriptor = shm.export(array, "pxpool-unit-test")
    try:
        mapped = shm.attach(descriptor, writable=True)
        assert np.array_equal(mapped, array) and mapped.flags.f_contiguous
    finally:
        shm.unlink(descriptor[0])


def test_shm_eligibility_needs_a_large_plain_array() -> None:
    assert shm.eligible(np.zeros(1 << 18))  # 2 MB of float64
    assert not shm.eligible(np.zeros(10))
    assert not shm.eligible(np.empty(1 << 18, dtype=object))
    assert not shm.eligible([0] * (1 << 18))


def test_first_share_is_an_equal_share_capped_by_the_bytes_sent() -> None:
    assert Source("range", range(200_000), ()).first_share(2) == 100_000
    assert Source("sequence", list(range(10)), ()).first_share(4) == 3
    big = [bytes([i]) * (1 << 20) for i in range(40)]  # a little over 1 MiB pickled each
    assert Source("sequence", big, ()).first_share(2) == FIRST_BYTES // (1 << 20) - 1
    assert Source("sequence", [], ()).first_share(2) == 1


def test_items_handed_back_are_taken_again_before_new_ones() -> None:
    source = Source("range", range(100), ())
    assert source.take(60)[:2] == (0, 60)
    source.give_back(20, 40)  # the chunk did items 0..19 only
    assert source.remaining == 80
    start, count, (_, items, _, budget) = source.take(30, 0.02)
    assert (start, count, list(items), budget) == (20, 30, list(range(20, 50)), 0.02)
    assert source.take(30)[:2] == (50, 10)  # the rest of what came back
    assert source.take(30)[:2] == (60, 30)
    assert source.take(30)[:2] == (90, 10)
    assert source.take(30) is None and source.remaining == 0
