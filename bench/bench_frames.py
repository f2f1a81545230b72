"""pool.map over DataFrames as users have them, and the overhead floor of a cheap map.

Run by hand (pytest does not collect it):

    python bench/bench_frames.py            # ~25 s on 2 cores
    python bench/bench_frames.py --rounds 9  # ~40 s

Workloads, each framework with the same number of workers, all measured in alternating
rounds (this machine has slow phases of seconds; each round times every framework once,
and the table shows medians):

- parsing: a 1,000,000-row frame with an ``object`` column of labels (``"beta-1234"``)
  and an int column; ``f`` loops over the rows in Python and parses each label's number
  (``int(s.partition("-")[2]) + x``): the issue's workload, ~0.35-0.4 s of per-row work
  in one process. Baseline: ``f(df)`` in this process. Target: pxpool >= 1.6x.
- strings: the same frame with a lighter ``f`` (``len(s) + x``, ~0.2 s in one process),
  where the strings' own cost weighs more: each engine makes its half of the strings
  anew from UTF-8 (~12 ms per 500k, plus ~8 ms to put them in an array and free them)
  and the client encodes them (~20 ms per million), all on the same 2 cores.
- strings, ``str`` dtype: the lighter map with the string column as pandas' own string
  dtype (what pandas 3 gives a column of strings unless told ``object``); pxpool and
  one process only.
- cheap: ``part.a * 2 + part.b`` over a 1,000,000-row frame of two float columns.
  Target: pxpool within 5x of one process.
- cheap, results over the network: the same with pxpool's result slots turned off, to
  see what results through shared memory bring.
- cheap, inputs copied to shared memory: the same with the engines' direct reads of the
  client's columns turned off (``pxpool._data.direct``), to see what they bring.

multiprocessing and loky get the frame cut into 2 partitions per worker.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

N_ROWS = 1_000_000


def per_row(part: pd.DataFrame) -> pd.Series:
    import pandas as pd

    return pd.Series([len(s) + x for s, x in zip(part["s"], part["x"], strict=True)], part.index)


def parse_numbers(part: pd.DataFrame) -> pd.Series:
    import pandas as pd

    numbers = [int(s.partition("-")[2]) + x for s, x in zip(part["s"], part["x"], strict=True)]
    return pd.Series(numbers, part.index)


def cheap(part: pd.DataFrame) -> pd.Series:
    return part.a * 2 + part.b


def string_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    labels = [f"{words[k]}-{i % 9973}" for i, k in enumerate(rng.integers(0, 5, N_ROWS))]
    return pd.DataFrame({"s": pd.Series(labels, dtype=object), "x": rng.integers(0, 100, N_ROWS)})


def numeric_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"a": rng.random(N_ROWS), "b": rng.random(N_ROWS)})


def timed(f: Callable[[], Any]) -> float:
    began = time.perf_counter()
    f()
    return time.perf_counter() - began


def split(df: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    bounds = np.linspace(0, len(df), parts + 1).astype(int)
    return [df.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def main() -> None:
    from loky import get_reusable_executor

    import pxpool
    from pxpool._data import mapper, shared_parts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    cfg = parser.parse_args()
    strings, numbers = string_frame(), numeric_frame()
    typed = strings.astype({"s": pd.StringDtype("python", na_value=np.nan)})  # pandas 3's "str"
    s_parts, n_parts = split(strings, 2 * cfg.workers), split(numbers, 2 * cfg.workers)
    times: dict[str, list[float]] = {}

    def run(label: str, f: Callable[[], Any], repeat: int = 1) -> None:
        times.setdefault(label, []).append(min(timed(f) for _ in range(repeat)))

    with (
        pxpool.Pool.from_profile("local", engines=cfg.workers) as pool,
        multiprocessing.Pool(cfg.workers) as mp,
    ):
        loky = get_reusable_executor(max_workers=cfg.workers, timeout=600)
        for _ in range(2):  # warm up: imports, arena slots, worker start
            pool.map(per_row, strings), pool.map(per_row, typed), pool.map(cheap, numbers)
            pool.map(parse_numbers, strings), mp.map(parse_numbers, s_parts)
            mp.map(cheap, n_parts), list(loky.map(cheap, n_parts))
        taken = dict(shared_parts.TAKEN)

        def run_strings(name: str, f: Callable[[pd.DataFrame], pd.Series]) -> None:
            run(f"{name}: one process", lambda: f(strings))
            run(f"{name}: pxpool", lambda: pool.map(f, strings))
            run(f"{name}: multiprocessing", lambda: pd.concat(mp.map(f, s_parts)))
            run(f"{name}: loky", lambda: pd.concat(list(loky.map(f, s_parts))))

        no_slots, readers = shared_parts.SharedInputs.reply_slot, mapper.readers
        for number in range(cfg.rounds):
            print(f"  round {number + 1}/{cfg.rounds}", file=sys.stderr, flush=True)
            run_strings("parsing", parse_numbers)
            run_strings("strings", per_row)
            run("strings, str dtype: one process", lambda: per_row(typed))
            run("strings, str dtype: pxpool", lambda: pool.map(per_row, typed))
            run("cheap: one process", lambda: cheap(numbers), 5)
            run("cheap: pxpool", lambda: pool.map(cheap, numbers), 5)
            run("cheap: multiprocessing", lambda: pd.concat(mp.map(cheap, n_parts)), 5)
            run("cheap: loky", lambda: pd.concat(list(loky.map(cheap, n_parts))), 5)
            shared_parts.SharedInputs.reply_slot = lambda self, rows: None  # type: ignore[method-assign]
            try:
                run("cheap: pxpool, results by network", lambda: pool.map(cheap, numbers), 5)
            finally:
                shared_parts.SharedInputs.reply_slot = no_slots  # type: ignore[method-assign]
            mapper.readers = lambda pool, ids: set()
            try:
                run("cheap: pxpool, inputs copied to shm", lambda: pool.map(cheap, numbers), 5)
            finally:
                mapper.readers = readers
        loky.shutdown(wait=True)
    report(times, taken, cfg)


def report(times: dict[str, list[float]], taken: dict[str, int], cfg: argparse.Namespace) -> None:
    median = {label: statistics.median(values) for label, values in times.items()}
    print(f"\n{cfg.rounds} alternating rounds, {cfg.workers} workers, medians:")
    for label, value in median.items():
        print(f"  {label:42s} {value * 1e3:9.1f} ms")
    print("\nratios (per round, then the median):")

    def ratio(label: str, num: str, den: str, target: str) -> None:
        per_round = [a / b for a, b in zip(times[num], times[den], strict=True)]
        print(f"  {label:58s} {statistics.median(per_round):6.2f}x   (target {target})")

    for name, target in (("parsing", ">= 1.6"), ("strings", "- (lighter than the issue's)")):
        for other in ("pxpool", "multiprocessing", "loky"):
            shown = target if other == "pxpool" else "-"  # the targets are pxpool's
            ratio(
                f"{name}: one process / {other}", f"{name}: one process", f"{name}: {other}", shown
            )
    ratio(
        "strings, str dtype: one process / pxpool",
        "strings, str dtype: one process",
        "strings, str dtype: pxpool",
        "-",
    )
    ratio("cheap: pxpool / one process", "cheap: pxpool", "cheap: one process", "<= 5")
    ratio(
        "cheap: multiprocessing / one process", "cheap: multiprocessing", "cheap: one process", "-"
    )
    ratio("cheap: loky / one process", "cheap: loky", "cheap: one process", "-")
    ratio(
        "cheap: pxpool results by network / through shared memory",
        "cheap: pxpool, results by network",
        "cheap: pxpool",
        "-",
    )
    ratio(
        "cheap: pxpool inputs copied to shm / read from the client",
        "cheap: pxpool, inputs copied to shm",
        "cheap: pxpool",
        "-",
    )
    print(f"\ncolumn layouts through shared memory in the warm-up maps: {taken}")


if __name__ == "__main__":
    main()
