"""The map's engine side without engines: what it imports, shared rows, naming failures."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from pxpool._data import agent, shm
from pxpool._data import arena as _arena
from pxpool._data.failures import MapNames, unpicklable_item
from pxpool._data.shared_parts import SharedInputs
from pxpool._data.source import Chunk
from pxpool._data.wire import ChunkReply


def test_the_engine_side_imports_no_client_side_code() -> None:
    # an engine imports pxpool._data.agent when the first chunk arrives
    code = (
        "import sys, pxpool._data.agent\n"
        "heavy = ('ipyparallel', 'pandas', 'IPython', 'ipywidgets', 'pxpool._core',\n"
        "         'pxpool._data.mapper', 'pxpool.engines', 'pxpool.pool')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"pxpool-unit-agent-{os.getpid()}"
    yield name
    _arena.close(name)
    agent.drop_gone()  # this process stood in for the engine: its maps of the slots go
    shm.cleanup(name)
    assert not [n for n in os.listdir(shm.SHM_DIR) if n.startswith(name)]


@pytest.mark.skipif(not shm.available(), reason="needs POSIX shared memory")
def test_rows_in_shared_memory_come_back_as_private_writable_copies(prefix: str) -> None:
    frame = pd.DataFrame(
        {"x": np.arange(10.0), "y": np.arange(10)}, index=pd.Index(np.arange(10) * 3, name="k")
    )
    series = pd.Series(np.arange(10.0), name="s")  # a RangeIndex travels as its numbers
    shared = SharedInputs([frame, series], prefix, [0])

    def f(part: pd.DataFrame, other: pd.Series) -> pd.Series:
        part["x"] += 1  # a private copy: the segments stay as they were
        return part["x"] + other.to_numpy()

    try:
        first = ChunkReply.read(agent.run_shared_part(f, "t", 2, 0, shared.spec(2, 7)))
        again = ChunkReply.read(agent.run_shared_part(f, "t", 2, 0, shared.spec(2, 7)))
    finally:
        shared.close()
    expected = frame["x"].iloc[2:7] + 1 + series.iloc[2:7].to_numpy()
    assert first.done == 5 and first.results().equals(expected)
    assert again.results().equals(expected)


def test_an_unpicklable_item_is_named_by_its_index_in_the_map() -> None:
    items = [1, threading.Lock(), 3]
    chunk = Chunk(0, 5, 3, (agent.run_items, None, "t:0", 5, items, False))
    error = unpicklable_item(chunk)
    assert error is not None
    assert str(error).startswith(
        "cannot send item 6 of pool.map (a lock) to the engines: TypeError"
    )
    assert (
        unpicklable_item(Chunk(0, 0, 2, (agent.run_items, None, "t:0", 0, [1, 2], False))) is None
    )
    rows = Chunk(0, 0, 2, (agent.run_part, None, "t:0", 0, 0, 0.0, 1, "object", items))
    assert unpicklable_item(rows) is None  # rows are named by the partition, not here


def test_chunks_are_named_by_their_items_or_rows() -> None:
    chunk = Chunk(3, 100, 50)
    assert MapNames("f", "abc", False).task(chunk) == "pool.map(f) chunk of items 100..149"
    assert MapNames("f", "abc", True).task(chunk) == "pool.map(f) chunk of rows 100..149"
    assert MapNames("f", "abc", True).chunk_token(3) == "abc:3"
