"""The task lane (``pool.submit``, ``pool.executor()``, the joblib backend) against
the hub's route (``pool.lbview()``), raw ipyparallel, loky and ``ProcessPoolExecutor``.

Run by hand (pytest does not collect it):

    python bench/bench_tasks.py            # ~3 minutes on 2 cores
    python bench/bench_tasks.py --quick    # fewer rounds

Every framework runs with 2 engines/workers, all started up front, and the measures
alternate framework by framework within each round, so a slow phase of this VM falls on
all of them alike; ratios are medians of the per-round ratios.

Measures
- round trip: one no-op call and its result, median and p99 (pxpool: ``pool.submit``
  and ``pool.apply``, both on the lane, and ``pool.lbview().apply``, the hub's route;
  raw ipyparallel: a DirectView's ``apply_sync``; loky and ProcessPoolExecutor:
  ``submit(...).result()``).
- tasks/s: N no-op submits, then every result (ipyparallel's paths: fewer tasks, as
  they run at a few hundred per second); CPU time per 1,000 tasks by process for the
  pxpool run (client, each engine, the controller).
- 2,000 tasks of ``time.sleep(0.002)`` through ``pool.executor().map`` against the
  ideal 2,000 x 2 ms / 2 engines (loky and ProcessPoolExecutor for reference).
- joblib: ``Parallel(n_jobs=2)`` of 5,000 tiny calls, backend ``"pxpool"`` against
  ``"loky"``; and 200 small scikit-learn fits (``GridSearchCV`` of a logistic regression,
  40 values of ``C`` x 5 folds of 500 rows, ``n_jobs=2``) on each backend, when
  scikit-learn is installed (the ``bench`` and ``test`` extras have it). The tiny calls
  take ~20 ms a call on either backend and vary by a few ms from call to call, so they
  get :data:`JOBLIB_ROUNDS` alternating rounds instead of 5 (~2 s in all).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import psutil

WORKERS = 2
JOBLIB_ROUNDS = 21  # alternating rounds of the tiny joblib calls (see the docstring)


def noop(x: Any = None) -> Any:
    return x


def tiny(i: int) -> int:
    return i * i + 1


def nap(_: Any) -> None:
    time.sleep(0.002)


def round_trips(call: Callable[[], Any], n: int) -> list[float]:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return times


def rate(submit_all: Callable[[int], Any], n: int) -> float:
    began = time.perf_counter()
    submit_all(n)
    return n / (time.perf_counter() - began)


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        found[pid] = times.user + times.system + times.children_user + times.children_system
    return found


class Frameworks:
    """Everything started once, stopped at the end."""

    def __init__(self) -> None:
        import ipyparallel as ipp
        from loky import get_reusable_executor

        import pxpool

        self.pool = pxpool.Pool.from_profile("local", engines=WORKERS).start_sync()
        self.cluster = ipp.Cluster(n=WORKERS, log_level=40)
        self.ipp = self.cluster.start_and_connect_sync()
        self.ipp.wait_for_engines(WORKERS, timeout=60)
        self.direct = self.ipp[0]
        self.lb = self.ipp.load_balanced_view()
        self.loky: Executor = get_reusable_executor(max_workers=WORKERS, timeout=3600)
        self.ppe = ProcessPoolExecutor(WORKERS)
        for executor in (self.loky, self.ppe, self.pool.executor()):
            list(executor.map(noop, range(WORKERS * 4)))  # workers started and warm
        self.lb.apply_sync(noop)
        self.pool.apply(noop)

    def close(self) -> None:
        self.ppe.shutdown()
        self.loky.shutdown()
        self.cluster.stop_cluster_sync()
        self.pool.stop_sync()

    def pids(self) -> dict[str, list[int]]:
        engines = [self.pool.client[i].apply_sync(_pid) for i in self.pool.ids]
        cluster = self.pool.core.cluster
        assert cluster is not None and cluster.controller is not None
        controller = psutil.Process(cluster.controller.pid)
        return {
            "engines": engines,
            "controller": [controller.pid] + [c.pid for c in controller.children(True)],
        }


def _pid() -> int:
    import os

    return os.getpid()


def measure_round_trips(fw: Frameworks, rounds: int, n: int) -> dict[str, list[float]]:
    calls: dict[str, Callable[[], Any]] = {
        "pxpool pool.submit": lambda: fw.pool.submit(noop).result(30),
        "pxpool pool.apply": lambda: fw.pool.apply(noop),
        "pxpool lbview().apply (hub route)": lambda: fw.pool.lbview().apply(noop),
        "ipyparallel DirectView.apply": lambda: fw.direct.apply_sync(noop),
        "loky": lambda: fw.loky.submit(noop).result(30),
        "ProcessPoolExecutor": lambda: fw.ppe.submit(noop).result(30),
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    ratios: list[float] = []
    apply_ratios: list[float] = []
    for _ in range(rounds):
        medians = {}
        for name, call in calls.items():
            slow = "ipyparallel" in name or "hub" in name  # milliseconds a call
            times = round_trips(call, max(n // 4, 20) if slow else n)
            samples[name] += times
            medians[name] = statistics.median(times)
        ratios.append(medians["pxpool pool.submit"] / medians["loky"])
        apply_ratios.append(medians["pxpool pool.apply"] / medians["loky"])
    samples["ratio submit/loky"] = ratios
    samples["ratio apply/loky"] = apply_ratios
    return samples


def measure_rates(fw: Frameworks, rounds: int, n: int, n_ipp: int) -> dict[str, Any]:
    def futures(submit: Callable[[], Any]) -> Callable[[int], Any]:
        return lambda count: [f.result(120) for f in [submit() for _ in range(count)]]

    runs: dict[str, tuple[Callable[[int], Any], int]] = {
        "pxpool pool.submit": (futures(lambda: fw.pool.submit(noop)), n),
        "pxpool lbview.apply_async (hub route)": (
            lambda count: [
                ar.get(120) for ar in [fw.pool.lbview().apply_async(noop) for _ in range(count)]
            ],
            n_ipp,
        ),
        "ipyparallel lbview.apply_async": (
            lambda count: [ar.get(120) for ar in [fw.lb.apply_async(noop) for _ in range(count)]],
            n_ipp,
        ),
        "loky": (futures(lambda: fw.loky.submit(noop)), n),
        "ProcessPoolExecutor": (futures(lambda: fw.ppe.submit(noop)), n),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    ratios: dict[str, list[float]] = {"loky": [], "ProcessPoolExecutor": []}
    pids = fw.pids()
    cpu: dict[str, float] = {}
    for round_ in range(rounds):
        for name, (run, count) in runs.items():
            if name == "pxpool pool.submit" and round_ == rounds - 1:
                before = cpu_seconds(pids["engines"] + pids["controller"])
                client_before = time.process_time()
            rates[name].append(rate(run, count))
            if name == "pxpool pool.submit" and round_ == rounds - 1:
                after = cpu_seconds(pids["engines"] + pids["controller"])
                per_1000_ms = 1000 * 1000 / count
                cpu["client"] = (time.process_time() - client_before) * per_1000_ms
                for i, pid in enumerate(pids["engines"]):
                    cpu[f"engine {i}"] = (after[pid] - before[pid]) * per_1000_ms
                cpu["controller"] = (
                    sum(after[pid] - before[pid] for pid in pids["controller"] if pid in after)
                    * per_1000_ms
                )
        for other in ratios:
            ratios[other].append(rates["pxpool pool.submit"][-1] / rates[other][-1])
    return {"rates": rates, "ratios": ratios, "cpu": cpu}


def measure_sleep_map(fw: Frameworks, rounds: int) -> dict[str, list[float]]:
    maps: dict[str, Callable[[], Any]] = {
        "pxpool executor().map": lambda: list(fw.pool.executor().map(nap, range(2000))),
        "loky map": lambda: list(fw.loky.map(nap, range(2000))),
        "ProcessPoolExecutor map": lambda: list(fw.ppe.map(nap, range(2000))),
    }
    times: dict[str, list[float]] = {name: [] for name in maps}
    for _ in range(rounds):
        for name, run in maps.items():
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    return times


def on_each_backend(run: Callable[[str], Any], rounds: int) -> dict[str, list[float]]:
    """``run(backend)`` timed on joblib's "pxpool" and "loky" backends in turn, every
    result checked against loky's; with the per-round ratios loky time / pxpool time.
    The first call on each backend is not timed (imports on the workers)."""
    import numpy as np

    expected = run("loky")
    assert np.allclose(run("pxpool"), expected)
    times: dict[str, list[float]] = {"pxpool": [], "loky": [], "ratio": []}
    for _ in range(rounds):
        for backend in ("pxpool", "loky"):
            began = time.perf_counter()
            out = run(backend)
            times[backend].append(time.perf_counter() - began)
            assert np.allclose(out, expected)
        times["ratio"].append(times["loky"][-1] / times["pxpool"][-1])
    return times


def tiny_calls(backend: str) -> list[int]:
    import joblib

    with joblib.parallel_config(backend=backend):
        return joblib.Parallel(n_jobs=WORKERS)(joblib.delayed(tiny)(i) for i in range(5000))  # type: ignore[no-any-return]


def sklearn_search() -> Callable[[str], Any] | None:
    """200 small fits on a joblib backend, or None without scikit-learn."""
    try:
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV
    except ImportError:
        return None
    import joblib
    import numpy as np

    features, labels = make_classification(n_samples=500, n_features=20, random_state=0)
    grid = {"C": np.logspace(-3, 3, 40)}

    def search(backend: str) -> Any:
        with joblib.parallel_config(backend=backend):
            model = LogisticRegression(max_iter=500)
            found = GridSearchCV(model, grid, cv=5, n_jobs=WORKERS).fit(features, labels)
        return found.cv_results_["mean_test_score"]

    return search


def report(
    rt: dict[str, list[float]],
    rates: dict[str, Any],
    naps: dict[str, list[float]],
    jl: dict[str, list[float]],
    fits: dict[str, list[float]],
) -> None:
    ms = 1000.0
    print("\nround trip of a no-op (all rounds' samples)")
    print(f"  {'':34s} {'median':>9s} {'p99':>9s}")
    for name, times in rt.items():
        if name.startswith("ratio"):
            continue
        ordered = sorted(times)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(f"  {name:34s} {statistics.median(times) * ms:7.3f}ms {p99 * ms:7.3f}ms")
    print(
        f"  pool.submit / loky, median of per-round ratios: {statistics.median(rt['ratio submit/loky']):.2f}x"
        "   (targets: median <= 1.0 ms and <= 1.5x loky)"
    )
    print(
        f"  pool.apply / loky, median of per-round ratios: {statistics.median(rt['ratio apply/loky']):.2f}x"
    )
    print("\nno-op tasks submitted at once, then every result")
    for name, values in rates["rates"].items():
        print(
            f"  {name:34s} {statistics.median(values):9.0f} tasks/s  (rounds: {', '.join(f'{v:.0f}' for v in values)})"
        )
    for other, values in rates["ratios"].items():
        print(
            f"  pool.submit / {other}: {statistics.median(values):.2f}x  (target >= 1.0x and >= 5,000 tasks/s)"
        )
    print(
        "  CPU ms per 1,000 pool.submit tasks: "
        + ", ".join(f"{k} {v:.0f}" for k, v in rates["cpu"].items())
    )
    print("\n2,000 tasks of time.sleep(0.002), ideal 2.00 s on 2 workers")
    for name, values in naps.items():
        best = statistics.median(values)
        print(
            f"  {name:34s} {best:7.2f} s  = {best / 2.0:.2f}x ideal  (target for pxpool: <= 1.15x)"
        )
    print(f"\njoblib Parallel(n_jobs=2), 5,000 tiny calls ({len(jl['ratio'])} rounds)")
    for backend in ("pxpool", "loky"):
        print(f"  backend {backend!r:10s} {statistics.median(jl[backend]):7.3f} s")
    print(
        f"  pxpool speed / loky speed, median of rounds: {statistics.median(jl['ratio']):.2f}x  (target >= 1.0x)"
    )
    print("\nscikit-learn GridSearchCV(n_jobs=2), 200 small fits")
    if not fits:
        print("  scikit-learn is not installed: pip install scikit-learn")
        return
    for backend in ("pxpool", "loky"):
        print(f"  backend {backend!r:10s} {statistics.median(fits[backend]):7.3f} s")
    print(
        f"  pxpool speed / loky speed, median of rounds: {statistics.median(fits['ratio']):.2f}x  (target >= 0.9x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    cfg = parser.parse_args()
    rounds = 3 if cfg.quick else 5
    fw = Frameworks()
    try:
        rt = measure_round_trips(fw, rounds, 100 if cfg.quick else 300)
        rates = measure_rates(fw, rounds, 20_000, 1_000 if cfg.quick else 2_000)
        naps = measure_sleep_map(fw, 2 if cfg.quick else 3)
        jl = on_each_backend(tiny_calls, JOBLIB_ROUNDS // (2 if cfg.quick else 1))
        search = sklearn_search()
        fits = on_each_backend(search, rounds) if search is not None else {}
    finally:
        fw.close()
    report(rt, rates, naps, jl, fits)


if __name__ == "__main__":
    main()
