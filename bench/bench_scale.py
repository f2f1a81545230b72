"""Engines at scale: start, restart, memory and stop, with and without the fork server.

Run by hand (pytest does not collect it), on an otherwise idle machine if possible:

    python bench/bench_scale.py            # ~3-5 minutes on 2 cores
    python bench/bench_scale.py --n 32     # a smaller big pool

Prints one table with the project's targets; writes the numbers as JSON under
bench/results/. Measured in one run, so the ratio to ipyparallel shares the machine's
load of the moment:

- ready: from ``Pool.from_profile(...).start_sync()`` (or ``ipp.Cluster(n=...)``'s
  ``start_and_connect_sync``) until every engine answered an apply;
- restart of one engine: ``pool.restart_sync(k)`` until the new engine answered;
- PSS (proportional set size) per idle engine that has numpy and pandas imported
  (``pool.health()["pss_bytes"]``): with the fork server they are preloaded;
- stop: ``pool.stop_sync()`` (``cluster.stop_cluster_sync()``) of the big pool.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "ready_big_s": ("<= 10 s", lambda v: v <= 10),
    "ready_big_vs_ipp": ("<= 0.25x", lambda v: v <= 0.25),
    "ready_2_s": ("<= 1.0 s", lambda v: v <= 1.0),
    "restart_s": ("<= 0.5 s", lambda v: v <= 0.5),
    "pss_mb": ("<= 40 MB", lambda v: v <= 40),
    "stop_big_s": ("<= 3 s", lambda v: v <= 3),
}


def pid() -> int:
    import os  # runs on engines, whose namespace is not this module's

    return os.getpid()


def import_data_stack() -> None:
    import numpy  # noqa: F401
    import pandas  # noqa: F401


def timed(f: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    value = f()
    return time.perf_counter() - began, value


def pxpool_ready(n: int, fork: bool, **more: Any) -> tuple[float, Any]:
    import pxpool

    def start() -> Any:
        pool = pxpool.Pool.from_profile("local", engines=n, fork_server=fork, **more)
        pool.start_sync()
        assert len(set(pool.view().apply_sync(pid))) == n
        return pool

    return timed(start)


def ipp_ready(n: int, give_up: float) -> tuple[float, int, Any]:
    """Seconds until ``ipp.Cluster(n=n)`` had ``n`` engines that answered an apply, how
    many it had (under load its hub has lost registrations: the engines said they
    registered, the hub never listed them), and the cluster to stop."""
    import ipyparallel as ipp

    began = time.perf_counter()
    cluster = ipp.Cluster(n=n, log_level=40)
    cluster.start_cluster_sync()  # start_and_connect gives up after 60 s
    client = cluster.connect_client_sync()
    try:
        client.wait_for_engines(n, timeout=give_up)
    except TimeoutError:
        have = len(client.ids)
        client.close()
        return time.perf_counter() - began, have, cluster
    assert len(set(client[:].apply_sync(pid))) == n
    client.close()
    return time.perf_counter() - began, n, cluster


def restart_s(fork: bool, repeat: int) -> float:
    _, pool = pxpool_ready(2, fork)
    try:
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            pool.restart_sync(1)
            pool.view(1).apply_sync(pid)
            times.append(time.perf_counter() - began)
        return statistics.median(times)
    finally:
        pool.stop_sync()


def pss_mb(fork: bool, n: int = 4) -> float:
    preload = ["numpy", "pandas"] if fork else []
    _, pool = pxpool_ready(n, fork, preload=preload)
    try:
        pool.view().apply_sync(import_data_stack)  # the exec'd engines import them here
        time.sleep(1.0)  # idle: one health report with the imports done
        deadline = time.monotonic() + 30
        while True:
            table = pool.health()
            values = [v for v in table["pss_bytes"] if v == v and v]
            if len(values) == n or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return statistics.median(values) / 2**20
    finally:
        pool.stop_sync()


def big_pool(n: int, fork: bool) -> dict[str, float]:
    ready, pool = pxpool_ready(n, fork)
    stop, _ = timed(pool.stop_sync)
    return {"ready_s": ready, "stop_s": stop}


class Results(dict[str, Any]):
    """The figures, each printed as it is measured (a run under load is long)."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        print(f"  {key} = {value:.3f}" if isinstance(value, float) else f"  {key} = {value}")
        sys.stdout.flush()


def run(cfg: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = Results(n=cfg.n)
    twos = []
    for _ in range(cfg.repeat):
        seconds, pool = pxpool_ready(2, True)
        pool.stop_sync()
        twos.append(seconds)
    out["ready_2_s"] = min(twos)
    out["ready_2_median_s"] = statistics.median(twos)
    seconds, pool = pxpool_ready(2, False)
    pool.stop_sync()
    out["ready_2_exec_s"] = seconds
    out["restart_s"] = restart_s(True, cfg.repeat)
    out["restart_exec_s"] = restart_s(False, 2)
    out["pss_mb"] = pss_mb(True)
    out["pss_exec_mb"] = pss_mb(False)
    forked = big_pool(cfg.n, True)
    out["ready_big_s"], out["stop_big_s"] = forked["ready_s"], forked["stop_s"]
    seconds, have, cluster = ipp_ready(cfg.n, cfg.ipp_give_up)
    out["ipp_ready_big_s"] = seconds  # a lower bound when it had fewer than n
    out["ipp_engines"] = have
    out["ipp_stop_big_s"], _ = timed(cluster.stop_cluster_sync)
    out["ready_big_vs_ipp"] = out["ready_big_s"] / out["ipp_ready_big_s"]
    if cfg.exec_big:
        exec_big = big_pool(cfg.n, False)
        out["ready_big_exec_s"], out["stop_big_exec_s"] = exec_big["ready_s"], exec_big["stop_s"]
    return out


def report(out: dict[str, Any]) -> list[str]:
    n = out["n"]
    rows = [
        (f"{n} engines ready (fork server)", "ready_big_s", "s"),
        (f"  ipp.Cluster(n={n}) ready (or gave up)", "ipp_ready_big_s", "s"),
        ("  engines ipp had then", "ipp_engines", ""),
        ("  ratio to ipp", "ready_big_vs_ipp", "x"),
        (f"  {n} engines ready, exec'd", "ready_big_exec_s", "s"),
        ("2 engines ready (fork server), best", "ready_2_s", "s"),
        ("  median of the same starts", "ready_2_median_s", "s"),
        ("  2 engines ready, exec'd", "ready_2_exec_s", "s"),
        ("restart of one engine (fork server)", "restart_s", "s"),
        ("  restart, exec'd", "restart_exec_s", "s"),
        ("PSS per idle engine, numpy+pandas preloaded", "pss_mb", "MB"),
        ("  PSS, exec'd engine that imported them", "pss_exec_mb", "MB"),
        (f"stop of {n} engines (fork server)", "stop_big_s", "s"),
        (f"  ipp stop of {n}", "ipp_stop_big_s", "s"),
        (f"  stop of {n}, exec'd", "stop_big_exec_s", "s"),
    ]
    lines = [f"{'measure':48} {'value':>9}  target"]
    for label, key, unit in rows:
        if key not in out:
            continue
        target = TARGETS.get(key)
        verdict = ""
        if target is not None:
            verdict = f"{target[0]:>9} {'met' if target[1](out[key]) else 'MISSED'}"
        lines.append(f"{label:48} {out[key]:8.2f}{unit:<2} {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="engines of the big pool")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--exec-big", action="store_true", help="also the big pool exec'd")
    parser.add_argument("--ipp-give-up", type=float, default=240, help="seconds")
    cfg = parser.parse_args()
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    out = run(cfg)
    out["load_before"] = load_before
    out["seconds"] = time.perf_counter() - began
    print("\n".join(report(out)))
    print(f"(load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, ", end="")
    print(f"on {os.cpu_count()} CPUs; {out['seconds']:.0f} s in all)")
    RESULTS.mkdir(exist_ok=True)
    name = RESULTS / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {"python": sys.version.split()[0], "machine": platform.machine()}
    name.write_text(json.dumps({**meta, **out}, indent=2))
    print(f"wrote {name}")


if __name__ == "__main__":
    main()
