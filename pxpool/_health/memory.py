"""``pool.memory()``: what the client, the controller and every engine hold now.

A notebook that runs all day must not grow without bound; this is where a user (and
``bench/bench_soak.py``) sees whether it does. RSS is what the kernel reports as
resident; PSS (proportional set size) splits pages shared between processes among
them, so the engines' PSS adds up to what they really cost together.

The controller is measured directly when it is a process on this machine; when it runs
elsewhere (a batch job) its own report is read, which it writes every few seconds next
to its connection files (:mod:`pxpool._entry.controller_upkeep`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import psutil

from .._core import runtime
from .._entry.controller_upkeep import MEMORY_FILE, REPORT_SECONDS
from ..health import EngineSnapshot
from .agent import pss_bytes

if TYPE_CHECKING:
    import pandas

COLUMNS = ["role", "engine_id", "host", "pid", "state", "rss_bytes", "pss_bytes", "age_s"]


def memory_frame(pool_name: str, engines: list[EngineSnapshot]) -> pandas.DataFrame:
    """One row for the client, one for the controller, one per engine snapshot.
    ``age_s``: how old the figure is (engines and a remote controller report
    periodically); NA where nothing is known (a controller that never reported)."""
    import pandas

    rows = [client_row(), controller_row(pool_name)]
    rows += [engine_row(snapshot) for snapshot in engines]
    frame = pandas.DataFrame(rows, columns=COLUMNS)
    for name in ("engine_id", "pid", "rss_bytes", "pss_bytes"):
        frame[name] = frame[name].astype("Int64")
    return frame


def client_row() -> dict[str, Any]:
    rss = psutil.Process().memory_info().rss
    return _row("client", None, socket.gethostname(), os.getpid(), "running", rss, pss_bytes(), 0.0)


def controller_row(pool_name: str) -> dict[str, Any]:
    """The local controller process, measured now; else its last report, if any."""
    state = runtime.controller_state(pool_name) or {}
    pid = state.get("pid")
    if isinstance(pid, int) and not runtime.controller_in_job(state):
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            return _row("controller", None, None, pid, "stopped", None, None, None)
        pss = getattr(info, "pss", None)
        return _row("controller", None, socket.gethostname(), pid, "running", info.rss, pss, 0.0)
    return reported_controller_row(pool_name)


def reported_controller_row(pool_name: str) -> dict[str, Any]:
    path = runtime.pool_dir(pool_name) / "security" / MEMORY_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        age = max(0.0, time.time() - float(report["time"]))
        pid, host = int(report["pid"]), str(report["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return _row("controller", None, None, None, "unknown", None, None, None)
    state = "running" if age <= 4 * REPORT_SECONDS else "silent"
    return _row(
        "controller", None, host, pid, state, report.get("rss_bytes"), report.get("pss_bytes"), age
    )


def engine_row(snapshot: EngineSnapshot) -> dict[str, Any]:
    return _row(
        "engine",
        snapshot.engine_id,
        snapshot.host,
        snapshot.pid,
        str(snapshot.state),
        snapshot.rss_bytes,
        snapshot.pss_bytes,
        snapshot.heartbeat_age_s,
    )


def _row(
    role: str,
    engine_id: int | None,
    host: str | None,
    pid: int | None,
    state: str,
    rss: int | None,
    pss: int | None,
    age: float | None,
) -> dict[str, Any]:
    values = (role, engine_id, host, pid, state, rss, pss, age)
    return dict(zip(COLUMNS, values, strict=True))
