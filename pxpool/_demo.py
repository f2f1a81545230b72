"""`pxpool demo`: the shortest tour of a real pool, printed as it goes."""

from __future__ import annotations

import os
import time

import numpy as np

from ._health.table import engine_table
from .health import format_table
from .pool import Pool


def _norm_of_block(seed: int) -> float:
    import numpy as np

    block = np.random.default_rng(seed).normal(size=(400, 400))
    return float(np.linalg.norm(block @ block.T))


def run_demo(engines: int | None = None, profile: str = "local") -> int:
    count = engines or os.cpu_count() or 2
    print(f"pxpool demo: starting a {profile} pool with {count} engines ...", flush=True)
    began = time.perf_counter()
    with Pool.from_profile(profile, engines=count, pool_name=f"demo-{os.getpid()}") as pool:
        print(f"  ready in {time.perf_counter() - began:.1f}s: engines {pool.ids}")

        print("\n%px-style execute on every engine:")
        pool.execute("import os, socket; where = f'{socket.gethostname()}:{os.getpid()}'")
        for engine_id, where in zip(pool.ids, pool.pull("where"), strict=True):
            print(f"  [engine {engine_id}] {where}")

        print("\npush / pull round trip:")
        payload = np.arange(1_000_000, dtype=np.float64)
        pool.push({"payload": payload})
        pool.execute("payload_sum = float(payload.sum())")
        sums = pool.pull("payload_sum")
        print(f"  pushed {payload.nbytes / 1e6:.0f} MB to each engine; sums back: {sums}")

        print("\nmap of a numpy computation over all engines:")
        seeds = list(range(4 * count))
        norms = pool.lbview().map_sync(_norm_of_block, seeds, chunksize=2)
        print(f"  {len(norms)} matrix norms, first three: {[round(n, 1) for n in norms[:3]]}")

        print("\nengines:")
        print(
            format_table(
                engine_table(pool.client), ["engine", "host", "pid", "state", "tasks_done"]
            )
        )
        print("\nstopping the pool ...", flush=True)
    print("pxpool demo: done.")
    return 0
