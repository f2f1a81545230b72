"""Time one refresh of the health panel from 256 engines' worth of snapshots.

Synthetic snapshots (no engines needed): the first update builds 256 rows, later ones
change what a live pool changes between refreshes (CPU, memory, heartbeat age, a few
states and tasks). Prints milliseconds per refresh.

    python bench/bench_panel.py [--engines 256] [--refreshes 50]
"""

from __future__ import annotations

import argparse
import random
import time

from pxpool.health import STATES, EngineSnapshot
from pxpool.panel import Panel


def snapshots(count: int, rng: random.Random, tick: int) -> list[EngineSnapshot]:
    rows = []
    for engine_id in range(count):
        state = rng.choice(STATES[:5]) if rng.random() < 0.05 else "busy"
        rows.append(
            EngineSnapshot(
                engine_id=engine_id,
                host=f"node{engine_id // 32:03d}",
                pid=10_000 + engine_id,
                job_id=str(4000 + engine_id // 32),
                state=state,
                task=f"score [{tick:08x}]" if state == "busy" else None,
                tasks_done=tick * 3 + engine_id % 7,
                tasks_failed=engine_id % 11 == 0,
                cpu_percent=rng.uniform(0, 100),
                rss_bytes=rng.randint(100, 900) * 2**20,
                rss_peak_bytes=1000 * 2**20,
                mem_limit_bytes=4 * 2**30,
                heartbeat_age_s=rng.uniform(0, 0.5),
                uptime_s=60.0 + tick,
                fingerprint="8f28555846",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=256)
    parser.add_argument("--refreshes", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(0)
    panel = Panel(None, refresh=0)
    began = time.perf_counter()
    panel.update(snapshots(args.engines, rng, 0))
    first = time.perf_counter() - began
    timings = []
    for tick in range(1, args.refreshes + 1):
        data = snapshots(args.engines, rng, tick)
        began = time.perf_counter()
        panel.update(data)
        timings.append(time.perf_counter() - began)
    timings.sort()
    print(f"panel with {args.engines} engines: first build {first * 1000:.0f} ms")
    print(
        f"refresh: median {timings[len(timings) // 2] * 1000:.1f} ms, "
        f"max {timings[-1] * 1000:.1f} ms over {args.refreshes} refreshes"
    )


if __name__ == "__main__":
    main()
