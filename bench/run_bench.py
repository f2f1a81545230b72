"""pxpool against raw ipyparallel, multiprocessing, loky and dask, on the same data.

Run by hand (pytest does not collect it):

    python bench/run_bench.py --quick     # ~2-3 minutes on 2 cores
    python bench/run_bench.py             # more repeats, 32-engine starts for both

Prints one table and the ratios the project targets; writes the numbers as JSON
under bench/results/. Every framework gets the same number of workers.

Workloads
- latency: one no-op call, round trip (median and p99).
- tasks/s: N no-op tasks submitted at once.
- map of 200,000 tiny items: ``x * x`` over ``range(200_000)``, each framework's
  default-ish map (pxpool: defaults; multiprocessing: ``Pool.map``; loky and dask
  with the same chunk count multiprocessing picks).
- map over a 1,000,000-row DataFrame: ``score`` below, a vectorised recurrence of
  30 steps of sin/cos per row (real work per row, ~1 s single-process), returning
  a Series with the frame's index; baseline: ``score(df)`` in this process (and,
  for reference, the same in pxpool's cache-sized blocks, one process).
- push of 100 MB to every engine; baseline: one ``np.copy`` per engine, measured
  both into reused memory (steady state) and into fresh memory (first touch).
- the two map targets again with pxpool and its baseline alternating round by round
  (medians of the per-round ratios): on a noisy VM, a slow phase of a few seconds
  can fall on one framework's separate measurement.
- start of a pool of 2 (and 32) engines until every engine is registered (stop timed
  apart); memory (RSS) per engine after the runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

RESULTS = Path(__file__).resolve().parent / "results"
N_ITEMS = 200_000
N_ROWS = 1_000_000
PUSH_BYTES = 100 * 2**20


def noop(*_: Any) -> None:
    return None


def square(x: int) -> int:
    return x * x


def score(part: pd.DataFrame) -> pd.Series:
    import numpy as np
    import pandas as pd

    x, y = part["x"].to_numpy(), part["y"].to_numpy()
    acc = np.zeros_like(x)
    for _ in range(30):
        acc = np.sin(acc + x) * np.cos(y - acc) + 0.5 * acc
    return pd.Series(acc, index=part.index)


def timed(f: Callable[[], Any]) -> float:
    began = time.perf_counter()
    f()
    return time.perf_counter() - began


def best(f: Callable[[], Any], repeat: int) -> float:
    return min(timed(f) for _ in range(repeat))


def start_and_stop(
    start: Callable[[], Any], stop: Callable[[Any], Any], repeat: int
) -> tuple[float, float]:
    """Best start time and best stop time over ``repeat`` runs, timed apart: the
    targets are about how long a user waits for a pool to be ready."""
    starts, stops = [], []
    for _ in range(repeat):
        began = time.perf_counter()
        handle = start()
        started = time.perf_counter()
        stop(handle)
        starts.append(started - began)
        stops.append(time.perf_counter() - started)
    return min(starts), min(stops)


def latency(call: Callable[[], Any], n: int) -> dict[str, float]:
    for _ in range(10):
        call()
    samples = sorted(timed(call) for _ in range(n))
    return {
        "median_ms": statistics.median(samples) * 1e3,
        "p99_ms": samples[int(n * 0.99) - 1] * 1e3,
    }


def rss_mb(pids: list[int]) -> float:
    sizes = []
    for pid in pids:
        try:
            sizes.append(psutil.Process(pid).memory_info().rss / 2**20)
        except psutil.Error:
            pass
    return statistics.mean(sizes) if sizes else float("nan")


def make_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.random(N_ROWS), "y": rng.random(N_ROWS)})


# ---------------------------------------------------------------- frameworks


def bench_pxpool(cfg: argparse.Namespace, df: pd.DataFrame, big: np.ndarray) -> dict[str, Any]:
    import pxpool

    out: dict[str, Any] = {}

    def start(n: int) -> pxpool.Pool:
        return pxpool.Pool.from_profile("local", engines=n).start_sync()

    out["start_2_s"], out["stop_2_s"] = start_and_stop(
        lambda: start(2), lambda p: p.stop_sync(), cfg.repeat
    )
    if cfg.start32:
        out["start_32_s"], out["stop_32_s"] = start_and_stop(
            lambda: start(32), lambda p: p.stop_sync(), 1
        )
    with pxpool.Pool.from_profile("local", engines=cfg.workers) as pool:
        out["latency"] = latency(lambda: pool.apply(noop), cfg.calls)
        view = pool.client.load_balanced_view()
        out["tasks_per_s"] = cfg.tasks / best(
            lambda: [r.get() for r in [view.apply_async(noop) for _ in range(cfg.tasks)]], 1
        )
        pool.map(square, range(1000))
        out["map_items_s"] = best(lambda: pool.map(square, range(N_ITEMS)), cfg.repeat)
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        out["map_frame_s"] = best(lambda: pool.map(score, df), cfg.repeat)
        for _ in range(2):  # fill the two slots a repeated push alternates between (the
            pool.push({"big": big})  # engines hold one while the next is written)
        out["push_s"] = best(lambda: pool.push({"big": big}), cfg.repeat)
        pids = pool.view().apply_sync(os.getpid)
        out["rss_mb"] = rss_mb(pids)
        controller = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "pxpool._entry.controller_main" in " ".join(p.info["cmdline"] or [])
            and pool.name in " ".join(p.info["cmdline"] or [])
        ]
        out["controller_rss_mb"] = rss_mb([p.pid for p in controller]) if controller else None
        pool.push({"big": 0})
    return out


def bench_ipyparallel(cfg: argparse.Namespace, df: pd.DataFrame, big: np.ndarray) -> dict[str, Any]:
    import ipyparallel as ipp

    out: dict[str, Any] = {}

    def start(n: int) -> ipp.Cluster:
        cluster = ipp.Cluster(n=n, log_level=40)
        cluster.start_and_connect_sync()
        return cluster

    out["start_2_s"], out["stop_2_s"] = start_and_stop(
        lambda: start(2), lambda c: c.stop_cluster_sync(), cfg.repeat
    )
    if cfg.start32 and not cfg.quick:
        out["start_32_s"], out["stop_32_s"] = start_and_stop(
            lambda: start(32), lambda c: c.stop_cluster_sync(), 1
        )
    cluster = ipp.Cluster(n=cfg.workers, log_level=40)
    client = cluster.start_and_connect_sync()
    try:
        client.wait_for_engines(cfg.workers, timeout=120)
        lb, dv = client.load_balanced_view(), client[:]
        out["latency"] = latency(lambda: lb.apply_sync(noop), cfg.calls)
        out["tasks_per_s"] = cfg.tasks / best(
            lambda: [r.get() for r in [lb.apply_async(noop) for _ in range(cfg.tasks)]], 1
        )
        # the LoadBalancedView default (chunksize=1) runs ~300 items/s: time a slice of it
        out["map_items_lb_default_s"] = timed(lambda: lb.map_sync(square, range(2000))) * (
            N_ITEMS / 2000
        )
        out["map_items_s"] = best(lambda: dv.map_sync(square, range(N_ITEMS)), cfg.repeat)
        parts = np.array_split(np.arange(N_ROWS), cfg.workers * 4)
        out["map_frame_s"] = best(
            lambda: pd.concat(lb.map_sync(score, [df.iloc[p[0] : p[-1] + 1] for p in parts])),
            cfg.repeat,
        )
        out["push_s"] = best(lambda: dv.push({"big": big}, block=True), cfg.repeat)
        out["rss_mb"] = rss_mb(dv.apply_sync(os.getpid))
        dv.push({"big": 0}, block=True)
    finally:
        cluster.stop_cluster_sync()
    return out


def bench_multiprocessing(
    cfg: argparse.Namespace, df: pd.DataFrame, big: np.ndarray
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["start_2_s"], out["stop_2_s"] = start_and_stop(
        lambda: multiprocessing.Pool(2), lambda p: p.terminate(), cfg.repeat
    )
    with multiprocessing.Pool(cfg.workers) as pool:
        out["latency"] = latency(lambda: pool.apply(noop), cfg.calls)
        out["tasks_per_s"] = cfg.tasks / best(
            lambda: [r.get() for r in [pool.apply_async(noop) for _ in range(cfg.tasks)]], 1
        )
        pool.map(square, range(1000))
        out["map_items_s"] = best(lambda: pool.map(square, range(N_ITEMS)), cfg.repeat)
        parts = np.array_split(np.arange(N_ROWS), cfg.workers * 4)
        out["map_frame_s"] = best(
            lambda: pd.concat(pool.map(score, [df.iloc[p[0] : p[-1] + 1] for p in parts])),
            cfg.repeat,
        )
        out["rss_mb"] = rss_mb([p.pid for p in pool._pool])  # type: ignore[attr-defined]
    return out


def bench_loky(cfg: argparse.Namespace, df: pd.DataFrame, big: np.ndarray) -> dict[str, Any]:
    from loky import get_reusable_executor

    out: dict[str, Any] = {}
    ex = get_reusable_executor(max_workers=cfg.workers, timeout=600)
    ex.submit(noop).result()
    out["latency"] = latency(lambda: ex.submit(noop).result(), cfg.calls)
    out["tasks_per_s"] = cfg.tasks / best(
        lambda: [f.result() for f in [ex.submit(noop) for _ in range(cfg.tasks)]], 1
    )
    chunk = -(-N_ITEMS // (cfg.workers * 4))
    out["map_items_s"] = best(
        lambda: list(ex.map(square, range(N_ITEMS), chunksize=chunk)), cfg.repeat
    )
    parts = np.array_split(np.arange(N_ROWS), cfg.workers * 4)
    out["map_frame_s"] = best(
        lambda: pd.concat(list(ex.map(score, [df.iloc[p[0] : p[-1] + 1] for p in parts]))),
        cfg.repeat,
    )
    out["rss_mb"] = rss_mb(list(ex._processes))  # type: ignore[attr-defined]
    ex.shutdown(wait=True)
    return out


def bench_dask(cfg: argparse.Namespace, df: pd.DataFrame, big: np.ndarray) -> dict[str, Any]:
    import dask.bag as db
    from distributed import Client, LocalCluster

    out: dict[str, Any] = {}

    out["start_2_s"], out["stop_2_s"] = start_and_stop(
        lambda: LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ),
        lambda c: c.close(),
        1,
    )
    with (
        LocalCluster(
            n_workers=cfg.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        out["latency"] = latency(
            lambda: client.submit(noop, time.perf_counter()).result(), cfg.calls
        )
        out["tasks_per_s"] = cfg.tasks / best(
            lambda: client.gather(client.map(noop, range(cfg.tasks), pure=False)), 1
        )
        bag = db.from_sequence(range(N_ITEMS), npartitions=cfg.workers * 4)
        out["map_items_s"] = best(lambda: bag.map(square).compute(), cfg.repeat)
        try:  # dask.dataframe needs pyarrow; without it, map the same partitions by hand
            import dask.dataframe as dd

            ddf = dd.from_pandas(df, npartitions=cfg.workers * 4)
            run = lambda: ddf.map_partitions(score, meta=("score", "f8")).compute()  # noqa: E731
        except ImportError:
            parts = np.array_split(np.arange(N_ROWS), cfg.workers * 4)
            frames = [df.iloc[p[0] : p[-1] + 1] for p in parts]
            run = lambda: pd.concat(client.gather(client.map(score, frames)))  # noqa: E731
        out["map_frame_s"] = best(run, cfg.repeat)
        out["push_s"] = best(lambda: client.scatter(big, broadcast=True), cfg.repeat)
        pids = client.run(os.getpid)
        out["rss_mb"] = rss_mb(list(pids.values()))
    return out


def bench_baselines(cfg: argparse.Namespace, df: pd.DataFrame, big: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"map_frame_s": best(lambda: score(df), cfg.repeat)}
    # the same in one process, in the cache-sized blocks pxpool's engines use: how much
    # of pxpool's ratio is blocking rather than parallelism
    from pxpool._data.blocks import block_rows

    rows = block_rows([df])
    out["map_frame_blocked_s"] = best(
        lambda: pd.concat([score(df.iloc[i : i + rows]) for i in range(0, len(df), rows)]),
        cfg.repeat,
    )
    out["copy_reused_s"] = best(lambda: np.copy(big), 3)

    def fresh_copy() -> None:  # into pages never touched before, as a receiving engine has
        import mmap

        memory = mmap.mmap(-1, big.nbytes)
        np.copyto(np.ndarray(big.shape, big.dtype, buffer=memory), big)

    out["copy_fresh_s"] = statistics.median(timed(fresh_copy) for _ in range(3))
    return out


def bench_paired(cfg: argparse.Namespace, df: pd.DataFrame, big: np.ndarray) -> dict[str, Any]:
    """The two map targets again, pxpool and its baseline alternating round by round
    while both are up: this VM has slow phases lasting seconds, and timing each
    framework in its own minute can put one of them in a slow phase. Medians."""
    import pxpool

    rounds = 3 if cfg.quick else 9
    item_ratios, frame_ratios = [], []
    with (
        pxpool.Pool.from_profile("local", engines=cfg.workers) as pool,
        multiprocessing.Pool(cfg.workers) as mp_pool,
    ):
        pool.map(square, range(1000))
        mp_pool.map(square, range(1000))
        for _ in range(rounds):
            ours = timed(lambda: pool.map(square, range(N_ITEMS)))
            item_ratios.append(timed(lambda: mp_pool.map(square, range(N_ITEMS))) / ours)
            ours = timed(lambda: pool.map(score, df))
            frame_ratios.append(timed(lambda: score(df)) / ours)
    return {
        "rounds": rounds,
        "items_mp_over_pxpool": statistics.median(item_ratios),
        "frame_pandas_over_pxpool": statistics.median(frame_ratios),
    }


# ---------------------------------------------------------------- report


def report(results: dict[str, dict[str, Any]], workers: int) -> list[str]:
    rows = [
        ("latency median ms", lambda r: r.get("latency", {}).get("median_ms")),
        ("latency p99 ms", lambda r: r.get("latency", {}).get("p99_ms")),
        ("no-op tasks/s", lambda r: r.get("tasks_per_s")),
        (f"map {N_ITEMS:,} tiny items s", lambda r: r.get("map_items_s")),
        (f"map {N_ROWS:,}-row DataFrame s", lambda r: r.get("map_frame_s")),
        ("push 100 MB to all s", lambda r: r.get("push_s")),
        ("start 2 engines s", lambda r: r.get("start_2_s")),
        ("start 32 engines s", lambda r: r.get("start_32_s")),
        ("stop 2 engines s", lambda r: r.get("stop_2_s")),
        ("RSS per engine MB", lambda r: r.get("rss_mb")),
    ]
    names = [
        n
        for n in ("pxpool", "ipyparallel", "multiprocessing", "loky", "dask", "ray")
        if n in results
    ]
    lines = [f"{'':32s}" + "".join(f"{n:>16s}" for n in names)]
    for label, get in rows:
        cells = []
        for name in names:
            value = get(results[name]) if "error" not in results[name] else None
            cells.append(f"{value:16.4g}" if isinstance(value, int | float) else f"{'-':>16s}")
        lines.append(f"{label:32s}" + "".join(cells))
    px, ipp_, mp, base = (
        results.get(k, {}) for k in ("pxpool", "ipyparallel", "multiprocessing", "baseline")
    )

    def ratio(label: str, num: Any, den: Any, target: str) -> None:
        if isinstance(num, int | float) and isinstance(den, int | float) and den:
            lines.append(f"{label:58s} {num / den:6.2f}x   (target {target})")

    lines.append("")
    lines.append(f"ratios ({workers} engines/workers; speed ratios > 1 mean pxpool is faster)")
    ratio(
        "map 200k tiny items: multiprocessing time / pxpool time",
        mp.get("map_items_s"),
        px.get("map_items_s"),
        ">= 0.8",
    )
    ratio(
        "map 1M-row DataFrame: single-process pandas / pxpool",
        base.get("map_frame_s"),
        px.get("map_frame_s"),
        ">= 1.7",
    )
    paired = results.get("paired", {})
    rounds = paired.get("rounds")
    ratio(
        f"map 200k tiny items, {rounds} alternating rounds: mp / pxpool",
        paired.get("items_mp_over_pxpool"),
        1.0,
        ">= 0.8",
    )
    ratio(
        f"map 1M-row DataFrame, {rounds} alternating rounds: pandas / pxpool",
        paired.get("frame_pandas_over_pxpool"),
        1.0,
        ">= 1.7",
    )
    ratio(
        "map 1M-row DataFrame: one process in pxpool's blocks / pxpool",
        base.get("map_frame_blocked_s"),
        px.get("map_frame_s"),
        "-",
    )
    ratio(
        "push 100 MB: np.copy per engine (reused memory) / pxpool",
        base.get("copy_reused_s", 0) * workers,
        px.get("push_s"),
        ">= 1.0",
    )
    ratio(
        "push 100 MB: np.copy per engine (fresh memory) / pxpool",
        base.get("copy_fresh_s", 0) * workers,
        px.get("push_s"),
        ">= 1.0",
    )
    ratio("push 100 MB: raw ipyparallel push / pxpool", ipp_.get("push_s"), px.get("push_s"), "-")
    ratio(
        "start 2 engines: pxpool / ipp.Cluster(n=2) start",
        px.get("start_2_s"),
        ipp_.get("start_2_s"),
        "<= 0.4",
    )
    ratio(
        "latency median: pxpool / raw ipyparallel",
        px.get("latency", {}).get("median_ms"),
        ipp_.get("latency", {}).get("median_ms"),
        "<= 1.05",
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (~2-3 minutes)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="frameworks to run (default: all)")
    parser.add_argument("--no-start32", dest="start32", action="store_false")
    cfg = parser.parse_args()
    cfg.repeat = 2 if cfg.quick else 5
    cfg.calls = 200 if cfg.quick else 1000
    cfg.tasks = 1000 if cfg.quick else 5000
    df = make_frame()
    big = np.random.default_rng(1).random(PUSH_BYTES // 8)
    benches: dict[str, Callable[..., dict[str, Any]]] = {
        "baseline": bench_baselines,
        "pxpool": bench_pxpool,
        "paired": bench_paired,
        "ipyparallel": bench_ipyparallel,
        "multiprocessing": bench_multiprocessing,
        "loky": bench_loky,
        "dask": bench_dask,
    }
    results: dict[str, dict[str, Any]] = {}
    for name, bench in benches.items():
        asked = "pxpool" if name == "paired" else name  # paired runs with pxpool
        if cfg.only and asked not in cfg.only and name != "baseline":
            continue
        began = time.perf_counter()
        try:
            results[name] = bench(cfg, df, big)
        except ImportError as exc:
            results[name] = {"error": f"not installed: {exc}"}
        except Exception as exc:  # report and go on with the other frameworks
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(
            f"  {name}: {time.perf_counter() - began:.1f}s {results[name].get('error', '')}",
            file=sys.stderr,
            flush=True,
        )
    lines = report(results, cfg.workers)
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = {
        "when": stamp,
        "quick": cfg.quick,
        "workers": cfg.workers,
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "results": results,
        "table": lines,
    }
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(json.dumps(record, indent=1, default=str))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
