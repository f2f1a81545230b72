"""Engine side of the health model: a daemon thread that reports without the main thread.

:func:`install` runs on each engine (from a pool engine hook; idempotent). It starts an
:class:`Agent`: a thread with its own zmq context and an XPUB socket bound on the
engine's interface towards the controller. Every ``interval`` seconds (and at once when
a new subscriber connects) it publishes one JSON report: pid, CPU %, RSS and its peak,
the memory limit, the task the engine is running (taken from the kernel's
``init_metadata``/``finish_metadata``, which every apply and execute request passes
through) and counts of tasks done and failed. Each report is complete, so a client that
subscribes late (``pxpool status`` from a shell) needs one report, not a history.

The engine's main thread is never needed to publish: a busy engine keeps reporting; a
stopped or dead process stops, and the client notices the silence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import socket
import sys
import threading
import time
from typing import Any

from .._entry.net import local_address

log = logging.getLogger("pxpool.health")
FINGERPRINT_PACKAGES = (
    "pxpool",
    "ipyparallel",
    "ipykernel",
    "pyzmq",
    "cloudpickle",
    "numpy",
    "pandas",
    "psutil",
)
LABEL_CHARS = 40
CHANGE_LATENCY = 0.05  # a task that starts or ends is reported within this many seconds
_AGENT: Agent | None = None
_INSTALL_LOCK = threading.Lock()


def fingerprint() -> str:
    """A short hash of the Python version and key package versions: engines whose
    fingerprints differ may unpickle the same object differently."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": sys.version}
    for name in FINGERPRINT_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:10]


def memory_limit() -> int | None:
    """The tightest memory limit on this process, if any: address-space rlimit, cgroup."""
    limits = []
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft not in (resource.RLIM_INFINITY, -1):
        limits.append(int(soft))
    try:
        with open("/proc/self/cgroup") as handle:
            entries = [line.strip().split(":", 2) for line in handle if line.strip()]
    except OSError:
        entries = []
    for _, controllers, path in entries:
        if controllers == "":  # cgroup v2
            candidates = [f"/sys/fs/cgroup{path}/memory.max"]
        elif "memory" in controllers.split(","):
            candidates = [f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"]
        else:
            continue
        for candidate in candidates:
            try:
                with open(candidate) as handle:
                    text = handle.read().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 2**60:
                limits.append(int(text))
    return min(limits) if limits else None


def pss_bytes() -> int | None:
    """This process's proportional set size (Linux's ``smaps_rollup``; None elsewhere):
    engines forked from one parent share its pages, and PSS counts each shared page
    once across them, where RSS counts it in every engine."""
    try:
        with open("/proc/self/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class Agent:
    """Publishes this engine's health from a daemon thread until the process ends."""

    def __init__(self, engine_id: int, ip: str, interval: float, kernel: Any) -> None:
        import psutil
        import zmq

        self.engine_id = engine_id
        self.interval = interval
        self.kernel = kernel
        self.process = psutil.Process()
        self.process.cpu_percent(None)
        self.host = socket.gethostname()
        self.fingerprint = fingerprint()
        self.mem_limit = memory_limit()
        self.lock = threading.Lock()
        self.current: dict[str, Any] | None = None
        self.done = 0
        self.failed = 0
        self.rss_peak = 0
        self.changed = False  # a task started or ended since the last report
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.linger = 0
        port = self.socket.bind_to_random_port(f"tcp://{ip}")
        self.address = f"tcp://{ip}:{port}"
        self._wrap_kernel(kernel)
        self.thread = threading.Thread(target=self._run, name="pxpool-health", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------ task tracking

    def _wrap_kernel(self, kernel: Any) -> None:
        """Every apply and execute request passes through these two kernel methods."""
        init, finish = kernel.init_metadata, kernel.finish_metadata

        def init_metadata(parent: dict[str, Any]) -> Any:
            self._started(parent)
            return init(parent)

        def finish_metadata(parent: dict[str, Any], metadata: Any, reply: Any) -> Any:
            try:
                return finish(parent, metadata, reply)
            finally:
                self._finished(parent, reply)

        kernel.init_metadata = init_metadata
        kernel.finish_metadata = finish_metadata

    def _started(self, parent: dict[str, Any]) -> None:
        header = parent.get("header", {})
        label = None
        if header.get("msg_type") == "execute_request":
            code = str(parent.get("content", {}).get("code", ""))
            lines = [line.strip() for line in code.splitlines() if line.strip()]
            label = (lines[0] if lines else "execute")[:LABEL_CHARS]
        with self.lock:
            self.current = {
                "id": str(header.get("msg_id", "")),
                "kind": header.get("msg_type", ""),
                "label": label,
                "started": time.time(),
            }
            self.changed = True

    def _finished(self, parent: dict[str, Any], reply: Any) -> None:
        msg_id = str(parent.get("header", {}).get("msg_id", ""))
        status = reply.get("status") if isinstance(reply, dict) else None
        with self.lock:
            if self.current is None or self.current["id"] != msg_id:
                return  # a request that started before the agent did
            self.current = None
            if status == "ok":
                self.done += 1
            else:
                self.failed += 1
            self.changed = True

    def _task_label(self, task: dict[str, Any]) -> str:
        """The name of the function an apply request runs: ipyparallel puts it in the
        user namespace under ``_<msg_id>_f`` while it runs."""
        if task["label"] is None:
            name = "_" + task["id"].replace("-", "_") + "_f"
            func = self.kernel.shell.user_ns.get(name)
            label = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
            if label is not None:
                task["label"] = str(label)[:LABEL_CHARS]
        return task["label"] or "apply"

    # ------------------------------------------------------------ reports

    def report(self) -> dict[str, Any]:
        with self.process.oneshot():
            rss = int(self.process.memory_info().rss)
            cpu = float(self.process.cpu_percent(None))
            created = float(self.process.create_time())
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.rss_peak = max(self.rss_peak, rss, int(peak_kib) * 1024)
        with self.lock:
            task = dict(self.current) if self.current else None
            done, failed = self.done, self.failed
        if task is not None:
            task["label"] = self._task_label(task)
        return {
            "engine_id": self.engine_id,
            "host": self.host,
            "pid": os.getpid(),
            "time": time.time(),
            "create_time": created,
            "cpu_percent": cpu,
            "rss_bytes": rss,
            "rss_peak_bytes": self.rss_peak,
            "pss_bytes": pss_bytes(),
            "mem_limit_bytes": self.mem_limit,
            "task": task,
            "tasks_done": done,
            "tasks_failed": failed,
            "fingerprint": self.fingerprint,
            "interval": self.interval,
            "draining": _draining_since(),
        }

    def _publish(self) -> None:
        self.socket.send(json.dumps(self.report()).encode())

    def _run(self) -> None:
        import zmq

        next_tick = time.monotonic()
        while True:
            try:
                wait = min(CHANGE_LATENCY, next_tick - time.monotonic())
                if self.socket.poll(max(0, int(wait * 1000)), zmq.POLLIN):
                    event = self.socket.recv()
                    if event[:1] == b"\x01":  # a new subscriber: report at once
                        self._publish()
                    continue
                if self.changed or time.monotonic() >= next_tick:
                    self.changed = False
                    self._publish()
                    next_tick = time.monotonic() + self.interval
            except Exception:  # a report must never take the engine down
                log.exception("pxpool: health report on engine %s failed", self.engine_id)
                time.sleep(self.interval)


def _draining_since() -> float | None:
    """When this engine started draining on a walltime/preemption signal, if it did."""
    walltime = sys.modules.get("pxpool._reliability.walltime")
    return None if walltime is None else walltime.draining_since()


def listening_address() -> str | None:
    """On an engine: the address its health agent publishes on (None before install)."""
    return None if _AGENT is None else _AGENT.address


def install(ip: str, interval: float) -> dict[str, Any]:
    """Start this engine's health agent (once) and return its address and identity."""
    global _AGENT
    from IPython.core.getipython import get_ipython

    with _INSTALL_LOCK:
        if _AGENT is None:
            kernel = get_ipython().kernel
            _AGENT = Agent(int(kernel.engine_id), local_address(ip), interval, kernel)
        _AGENT.interval = min(_AGENT.interval, interval)
        return {"address": _AGENT.address, "pid": os.getpid(), "host": _AGENT.host}
