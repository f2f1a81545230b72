"""A long session through one pool: does memory stay flat?

Run by hand (pytest does not collect it):

    python bench/bench_soak.py                      # 200,000 tasks, 20 GB of results
    python bench/bench_soak.py --tasks 20000 --gigabytes 2

One local pool of 2 engines runs rounds of mixed work until ``--tasks`` tasks are done:
no-op ``pool.submit`` futures, a ``pool.map`` of no-op items, a few ``%%px``-style
``pool.execute`` cells (the hub's route), and a map whose items each return an 8 MB
array, so that ``--gigabytes`` of results pass through the pool in all. Every result is
dropped as soon as it arrives, as a notebook that only keeps summaries does.

After each round it prints the resident memory (RSS) of the client (this process) and
of the controller, from ``pool.memory()``. The goal: at the end both are within 10% (or
50 MB, whichever is larger) of their value once the first 10,000 tasks were done.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import pxpool

BLOCK_BYTES = 8 * 2**20
BASELINE_TASKS = 10_000


def noop(x: Any = None) -> Any:
    return x


def block(i: int) -> Any:
    import numpy

    return numpy.full(BLOCK_BYTES // 8, float(i))


def one_round(pool: pxpool.Pool, size: int, blocks: int) -> int:
    """One round of mixed work; returns the number of tasks it ran."""
    futures = [pool.submit(noop, i) for i in range(size)]
    for future in futures:
        future.result(timeout=120)
    del futures
    pool.map(noop, range(size), timeout=120)
    for _ in range(size // 200):
        pool.execute("soak_cell = 1")
    total = 0.0
    for first in range(0, blocks, 4):  # a few blocks at a time, as a streaming user does
        for part in pool.map(block, range(first, min(first + 4, blocks)), timeout=300):
            total += float(part[0])  # keep a summary, drop the array
    return 2 * size + size // 200 + blocks


def rss_mb(pool: pxpool.Pool) -> tuple[float, float]:
    frame = pool.memory()
    by_role = frame.set_index("role")["rss_bytes"]
    return by_role["client"] / 2**20, by_role["controller"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--gigabytes", type=float, default=20.0)
    parser.add_argument("--round-size", type=int, default=4000)
    cfg = parser.parse_args()
    rounds = max(1, cfg.tasks // (2 * cfg.round_size + cfg.round_size // 200))
    blocks = max(1, int(cfg.gigabytes * 2**30 / BLOCK_BYTES / rounds))
    began = time.perf_counter()
    done = 0
    baseline: tuple[float, float] | None = None
    curve: list[tuple[int, float, float]] = []
    with pxpool.Pool.from_profile("local", engines=2) as pool:
        print(f"start: client {rss_mb(pool)[0]:.0f} MB, controller {rss_mb(pool)[1]:.0f} MB")
        while done < cfg.tasks:
            done += one_round(pool, cfg.round_size, blocks)
            client, controller = rss_mb(pool)
            curve.append((done, client, controller))
            if baseline is None and done >= min(BASELINE_TASKS, cfg.tasks):
                baseline = (client, controller)
            print(
                f"{done:>8} tasks {time.perf_counter() - began:7.1f} s"
                f"  client {client:6.0f} MB  controller {controller:6.0f} MB",
                flush=True,
            )
    report(curve, baseline, blocks * len(curve) * BLOCK_BYTES / 2**30)


def report(
    curve: list[tuple[int, float, float]], baseline: tuple[float, float] | None, gigabytes: float
) -> None:
    assert baseline is not None
    _, client, controller = curve[-1]
    print(f"\n{curve[-1][0]} tasks, {gigabytes:.1f} GB of results")
    for name, start, end in (
        ("client", baseline[0], client),
        ("controller", baseline[1], controller),
    ):
        allowed = max(0.10 * start, 50.0)
        verdict = "flat" if end - start <= allowed else "GREW"
        print(f"{name:<11} after 10k {start:6.0f} MB  end {end:6.0f} MB  ({verdict})")


if __name__ == "__main__":
    main()
