"""pool.map over frames of every common dtype: through shared memory, equal after the trip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pxpool
from pxpool._data import arena as _arena
from pxpool._data import columns, direct, placement, shared_parts, shm

from .waits import wait_until

pytestmark = pytest.mark.integration

N = 120_000  # a few MB: above the shared-memory threshold


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2) as running:
        yield running


def mixed_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = [f"wörd-{i}" for i in range(N)]
    ints = pd.array(np.arange(N), dtype="Int64")
    ints[7] = pd.NA
    flags = pd.array(rng.random(N) > 0.5, dtype="boolean")
    flags[9] = pd.NA
    labels = pd.array(words, dtype="string")
    labels[3] = pd.NA
    frame = pd.DataFrame(
        {
            "obj": pd.Series(words, dtype=object).to_numpy(),
            "str": pd.array(words, dtype="str"),
            "string": labels,
            "cat": pd.Categorical(rng.choice(["a", "b", "c"], N), ordered=True),
            "when": pd.date_range("2020-01-01", periods=N, freq="s"),
            "zoned": pd.date_range("2020-01-01", periods=N, freq="s", tz="Europe/Berlin"),
            "ints": ints,
            "flags": flags,
            "mixed": np.array([1, "a", None, 2.5] * (N // 4), dtype=object),
            "x": rng.random(N),
        }
    )
    frame["obj"] = frame["obj"].astype(object)
    frame.index = pd.Index([f"key-{i}" for i in range(N)], name="key")
    return frame


def taken() -> dict[str, int]:
    return dict(shared_parts.TAKEN)


def grew(before: dict[str, int], kind: str) -> int:
    return shared_parts.TAKEN[kind] - before.get(kind, 0)


def test_a_frame_of_every_common_dtype_travels_through_shared_memory_and_back_equal(
    pool: pxpool.Pool,
) -> None:
    df = mixed_frame()
    before = taken()
    out = pool.map(lambda part: part, df)
    pd.testing.assert_frame_equal(out, df)
    # every column and the index went as a layout in shared memory: none over the network
    assert grew(before, "text") == 4  # obj, str, string and the index
    assert grew(before, "cat") == 1 and grew(before, "tz") == 1
    assert grew(before, "masked") == 2 and grew(before, "pickled") == 1  # mixed objects
    assert grew(before, "plain") == 2  # when, x
    assert grew(before, "replies") >= 2  # each chunk's result came back through a slot


def test_partitions_of_shared_frames_are_the_engines_own_writable_data(pool: pxpool.Pool) -> None:
    df = mixed_frame()[["obj", "ints", "cat", "x"]]

    def change(part: pd.DataFrame) -> pd.DataFrame:
        part.loc[part.index[0], "obj"] = "changed"  # in place: the partition is the engine's
        part["x"] += 1
        return part

    out = pool.map(change, df, chunksize=N // 2)
    assert out["obj"].iloc[0] == "changed" and out["obj"].iloc[N // 2] == "changed"
    assert (out["x"] == df["x"] + 1).all()
    assert df["obj"].iloc[0] == "wörd-0"  # the caller's frame is untouched
    pd.testing.assert_series_equal(out["cat"], df["cat"])


def test_series_and_object_arrays_of_strings_round_trip(pool: pxpool.Pool) -> None:
    words = pd.Series([f"s{i}" for i in range(3 * N)], name="w", dtype="str")
    pd.testing.assert_series_equal(pool.map(lambda p: p, words), words)
    array = np.array([f"a{i}" for i in range(3 * N)], dtype=object)
    before = taken()
    out = pool.map(lambda p: p, array)
    assert out.dtype == object and (out == array).all()
    assert grew(before, "text") == 1


def test_strings_holding_separators_and_nulls_stay_exact(pool: pxpool.Pool) -> None:
    values = ["a\x00b", "c\x1fd", "e\x1ef", None, "plain"] * (N // 5)
    df = pd.DataFrame({"o": pd.Series(values, dtype=object), "s": pd.array(values, "string")})
    before = taken()
    pd.testing.assert_frame_equal(pool.map(lambda p: p, df), df)
    assert grew(before, "pickled") == 2  # no free separator: pickled, still in shared memory


def test_per_row_work_on_a_string_frame_gets_its_results_in_row_order(pool: pxpool.Pool) -> None:
    df = mixed_frame()[["obj", "ints"]]

    def per_row(part: pd.DataFrame) -> pd.Series:
        import pandas as pd

        return pd.Series([len(s) for s in part["obj"]], index=part.index)

    expected = df["obj"].str.len().astype(np.int64)
    pd.testing.assert_series_equal(pool.map(per_row, df), expected, check_names=False)


def test_map_slots_are_free_after_the_map(pool: pxpool.Pool) -> None:
    df = mixed_frame()
    pool.map(lambda p: p["x"] * 2, df)
    arena = _arena.arena_for(shm.pool_prefix(pool.name))
    assert arena.slots and not any(slot.busy for slot in arena.slots)


def test_results_read_in_place_are_not_changed_by_the_next_map(pool: pxpool.Pool) -> None:
    """Results come back in their reply slots and the map's join copies them; the next
    map writes into the same slots."""
    numbers = pd.DataFrame({"a": np.arange(4 * N, dtype=float), "b": np.ones(4 * N)})
    numbers.index = pd.Index(np.arange(4 * N) * 2, name="even")  # a plain index too
    before = taken()
    first = pool.map(lambda p: p.a * 2 + p.b, numbers)
    frames = pool.map(lambda p: p * 3, numbers)
    array = pool.map(lambda p: p * 2, numbers["a"].to_numpy())
    whole = pool.map(lambda p: p.a + 1, numbers, chunksize=4 * N)  # one chunk, one piece
    dicts = pool.map(lambda p: {"v": p.a.to_numpy() * 2}, numbers)  # not joined: copied out
    assert grew(before, "in_place") >= 7
    for _ in range(2):  # the same slots, written again
        pool.map(lambda p: p * 0 - 1, numbers)
        pool.map(lambda p: p * 0 - 1, numbers["a"].to_numpy())
        pool.map(lambda p: p.a * 0, numbers, chunksize=4 * N)
    pd.testing.assert_series_equal(first, numbers.a * 2 + numbers.b)
    pd.testing.assert_frame_equal(frames, numbers * 3)
    np.testing.assert_array_equal(array, numbers["a"].to_numpy() * 2)
    pd.testing.assert_series_equal(whole, numbers.a + 1)
    np.testing.assert_array_equal(np.concatenate([d["v"] for d in dicts]), numbers.a * 2)
    arena = _arena.arena_for(shm.pool_prefix(pool.name))
    assert not any(slot.busy for slot in arena.slots)  # held slots went back with the map


def test_plain_columns_are_read_by_the_engines_from_the_clients_own_memory(
    pool: pxpool.Pool,
) -> None:
    """Numbers, datetimes, nullable values and masks, and categorical codes are read by
    the engines from this process (pxpool._data.direct); text still goes through a segment."""
    df = mixed_frame()[["when", "ints", "cat", "x", "obj"]]
    before = taken()
    pd.testing.assert_frame_equal(pool.map(lambda part: part, df), df)
    assert grew(before, "direct") == 5  # when, x, the codes, and the Int64's values and mask
    assert grew(before, "text") == 2  # obj and the index
    grid = np.arange(6 * N, dtype=np.float32).reshape(2 * N, 3)
    assert (pool.map(lambda rows: rows * 2, grid) == grid * 2).all()


def test_engines_that_cannot_read_the_client_get_the_rows_through_shared_memory(
    pool: pxpool.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token the engines do not find in this process (what an engine in another pid
    namespace sees) sends the map through segments, with the same result."""
    marker = direct.marker
    pid, address, token = marker()
    monkeypatch.setattr(placement, "_reads", {})  # ask the engines again
    monkeypatch.setattr(direct, "marker", lambda: (pid, address, bytes(len(token))))
    df = mixed_frame()[["when", "x", "obj"]]
    before = taken()
    pd.testing.assert_series_equal(pool.map(lambda p: p.x * 2, df), df.x * 2)
    assert grew(before, "direct") == 0 and grew(before, "plain") == 2
    assert grew(before, "text") == 2  # obj and the index, each encoded whole
    # the control: asked again with the true token, the engines read the same map directly
    monkeypatch.setattr(placement, "_reads", {})
    monkeypatch.setattr(direct, "marker", marker)
    before = taken()
    pd.testing.assert_series_equal(pool.map(lambda p: p.x * 2, df), df.x * 2)
    assert grew(before, "direct") == 2 and grew(before, "text") == 2


def test_the_first_chunk_runs_while_the_client_still_encodes_the_next_ones(
    pool: pxpool.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text columns are encoded chunk by chunk as the chunks are sent: the encoding of
    the second chunk's rows waits here until an engine has started the first chunk,
    which it could not if the whole column were encoded before anything was sent."""
    started = tmp_path / "started"
    rows = 400_000
    df = pd.DataFrame({"s": pd.Series([f"row-{i}" for i in range(rows)], dtype=object)})
    encode, seen = columns.encode, []

    def encode_after_the_first_chunk_started(values: Any, into: Any = None) -> Any:
        if len(values) < rows and values.index[0] > 0:  # a later chunk's rows
            wait_until(started.exists, 60, "an engine starting the first chunk", 0.005)
            seen.append(True)
        return encode(values, into)

    monkeypatch.setattr(columns, "encode", encode_after_the_first_chunk_started)

    def lengths(part: pd.DataFrame, flag: str = str(started)) -> pd.Series:
        import pathlib

        pathlib.Path(flag).touch()
        return part["s"].str.len()

    before = taken()
    pd.testing.assert_series_equal(pool.map(lengths, df), df["s"].str.len())
    assert seen  # later chunks were encoded, each once the first had started
    assert grew(before, "text") == 1
