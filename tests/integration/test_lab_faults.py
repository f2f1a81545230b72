"""Network faults on the multi-host lab (``infra/lab.sh``): a host partitioned during a
map, a slow link between the client and the controller, a host that loses power, and a
client process that goes away while its detached pool keeps running.

Only ``pxlab1`` is ever faulted (partitioned or taken down): other tests run on pxlab2
and pxlab3 at the same time, so those only run engines here. Every fault is undone in a
fixture's teardown (``heal``, ``up``). Engines on lab hosts see this machine's
filesystem but a /tmp of their own, so what they write for the test goes to the lab's
shared directory (``PXPOOL_LAB_SHARED_DIR``), never to pytest's ``tmp_path``.

Settings come from ``infra/lab.sh env`` (in ``$PXPOOL_INFRA_DIR/env.sh``); without a
running lab every test skips, which ``PXPOOL_REQUIRE_SERVICES=1`` turns into a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipyparallel as ipp
import psutil
import pytest

import pxpool
from pxpool._core import runtime
from pxpool._reliability.timeouts import DEFAULT_RETRIES

from .cli_helpers import pxpool_cli
from .ssh_helpers import SSH_OPTIONS  # host keys are new on every start: not checked
from .test_reliability import bounded_map
from .waits import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOSTS = os.environ.get("PXPOOL_LAB_HOSTS", "pxlab1 pxlab2 pxlab3").split()
SSH_KEY = os.environ.get("PXPOOL_LAB_SSH_KEY", "/tmp/pxpool-infra/lab/id_ed25519")
SHARED_DIR = Path(os.environ.get("PXPOOL_LAB_SHARED_DIR", "/tmp/pxpool-infra/lab/shared"))
PYTHON = os.environ.get("PXPOOL_LAB_PYTHON", sys.executable)
LAB_SCRIPT = os.environ.get("PXPOOL_LAB_SCRIPT", str(REPO / "infra" / "lab.sh"))
FAULTED = "pxlab1"  # the one host these tests partition or take down
STEADY = "pxlab2"  # a host that only runs engines here

PARTITION_SECONDS = 10.0
MAP_LIMIT = 120.0  # seconds the partitioned map may take (it takes ~15 s)
UNRESPONSIVE_WAIT = PARTITION_SECONDS  # health must say so while the partition lasts
REJOIN_WAIT = 90.0  # seconds for a healed host's engine to be counted back
DOWN_STATE_WAIT = 30.0  # seconds for a powered-off host's engine to show dead/unresponsive
SCALE_LIMIT = 60.0  # seconds a scale onto a powered-off host may take to fail
DELAY = 0.05  # seconds the proxy holds bytes in each direction


def lab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``infra/lab.sh ARGS``, failing the test (with its output) when it fails."""
    done = subprocess.run(
        ["bash", LAB_SCRIPT, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"lab.sh {' '.join(args)}: exit {done.returncode}:\n{done.stderr}"
    return done


@pytest.fixture(scope="module", autouse=True)
def lab_running() -> None:
    """Skip the module unless every lab host is up (``lab.sh status`` exits 0)."""
    if not os.path.isfile(LAB_SCRIPT):
        pytest.skip(f"{LAB_SCRIPT} not found")
    if not os.path.isfile(SSH_KEY):
        pytest.skip(f"no lab ssh key at {SSH_KEY}; run `bash infra/up.sh` first")
    status = subprocess.run(
        ["bash", LAB_SCRIPT, "status"], capture_output=True, text=True, timeout=30, check=False
    )
    if status.returncode != 0:
        said = "; ".join(line for line in status.stdout.splitlines() if line)
        pytest.skip(
            f"the lab is not running (infra/lab.sh status, exit {status.returncode}: {said}); "
            "run `bash infra/up.sh` first"
        )


class Faults:
    """Faults of :data:`FAULTED`, each undone by the fixture that made this."""

    def __init__(self) -> None:
        self.partitioned = False
        self.downed = False

    def partition(self, host: str) -> None:
        assert host == FAULTED, f"only {FAULTED} may be faulted: other tests use {host}"
        self.partitioned = True
        lab("partition", host)

    def heal(self, host: str) -> None:
        lab("heal", host)
        self.partitioned = False

    def down(self, host: str) -> None:
        assert host == FAULTED, f"only {FAULTED} may be faulted: other tests use {host}"
        self.downed = True
        lab("down", host)

    def up(self, host: str) -> None:
        lab("up", host, timeout=90)
        self.downed = False


@pytest.fixture
def faults() -> Iterator[Faults]:
    """Partition or take down :data:`FAULTED`; healed and booted again afterwards."""
    made = Faults()
    try:
        yield made
    finally:
        if made.downed:
            made.up(FAULTED)
        if made.partitioned:
            made.heal(FAULTED)


@pytest.fixture
def shared_log() -> Iterator[Path]:
    """A fresh file name in the lab's shared directory (every host sees it)."""
    path = SHARED_DIR / f"pxpool-faults-{uuid.uuid4().hex}.log"
    yield path
    path.unlink(missing_ok=True)


def lab_overrides(*hosts: str, **profile: Any) -> dict[str, Any]:
    """Profile overrides for an ssh pool of one engine on each of ``hosts``."""
    entries = [{"host": h, "user": "root", "engines": 1, "python": PYTHON} for h in hosts]
    return {"hosts": entries, "identity_file": SSH_KEY, "ssh_options": SSH_OPTIONS, **profile}


def hostname() -> str:
    import socket

    return socket.gethostname()


def engine_hosts(pool: pxpool.Pool) -> dict[int, str]:
    """Engine id -> the hostname its engine runs on."""
    return dict(zip(pool.ids, pool.view().apply_sync(hostname), strict=True))


def states(pool: pxpool.Pool) -> dict[int, str]:
    frame = pool.health()
    return {int(i): str(s) for i, s in zip(frame["engine_id"], frame["state"], strict=True)}


def pool_processes_on(host: str, pool_name: str) -> list[str]:
    """Processes running on lab host ``host`` (in its network namespace) whose command
    line names pool ``pool_name``: its engines and nannies."""
    # a process may end while lab.sh lists them (it then exits 1): the list still holds
    pids = subprocess.run(
        ["bash", LAB_SCRIPT, "pids", host], capture_output=True, text=True, timeout=30, check=False
    ).stdout.split()
    found = []
    for pid in pids:
        try:
            cmdline = " ".join(psutil.Process(int(pid)).cmdline())
        except psutil.Error:
            continue
        if f"--cluster-id={pool_name}" in cmdline or pool_name in cmdline.split():
            found.append(f"{pid}: {cmdline}")
    return found


# ------------------------------------------------------------ a partition during a map


def record_square(x: int, log: str) -> int:
    """x * x in 30 ms, noting each execution's start in ``log`` (item, host)."""
    import os
    import socket
    import time

    line = f"{x} {socket.gethostname()}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(0.03)
    return x * x


def runs_by_item(log: Path) -> Counter[int]:
    return Counter(int(line.split()[0]) for line in log.read_text().splitlines())


def runs_on(log: Path, host: str) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.split()[1] == host)


def test_partitioned_host_goes_unresponsive_its_tasks_finish_elsewhere_and_it_comes_back(
    faults: Faults, shared_log: Path
) -> None:
    """pxlab1 cut off for 10 s while pool.map runs 500 tasks on it and on pxlab2: its
    engine shows ``unresponsive`` during the partition, every result comes back once and
    right (each task ran at least once, at most 1 + retries times), and once healed the
    pool is back to its two engines, pxlab1's answering again."""
    with pxpool.Pool.from_profile(
        "ssh", **lab_overrides(FAULTED, STEADY, restart="on-failure")
    ) as pool:
        where = engine_hosts(pool)
        assert sorted(where.values()) == [FAULTED, STEADY]
        cut_off = next(i for i, h in where.items() if h == FAULTED)
        assert set(states(pool).values()) <= {"idle", "busy"}

        outcome: dict[str, Any] = {}
        began = time.monotonic()

        def run_map() -> None:
            outcome["value"] = bounded_map(
                pool, MAP_LIMIT, record_square, range(500), [str(shared_log)] * 500
            )

        mapper = threading.Thread(target=run_map, daemon=True, name="partitioned map")
        mapper.start()
        wait_until(lambda: runs_on(shared_log, FAULTED) >= 5, 30, f"tasks running on {FAULTED}")

        faults.partition(FAULTED)
        partitioned = time.monotonic()
        seen = wait_until(
            lambda: states(pool).get(cut_off) == "unresponsive",
            UNRESPONSIVE_WAIT,
            f"engine {cut_off} on {FAULTED} shown unresponsive during the partition",
        )
        unresponsive_after = time.monotonic() - partitioned
        seen_states = {states(pool).get(cut_off)}
        while time.monotonic() - partitioned < PARTITION_SECONDS:
            seen_states.add(states(pool).get(cut_off))
            time.sleep(0.5)
        faults.heal(FAULTED)
        healed = time.monotonic()

        mapper.join(MAP_LIMIT + 40)
        assert not mapper.is_alive(), "the map did not return"
        mapped = outcome["value"]
        map_seconds = time.monotonic() - began
        assert mapped == [x * x for x in range(500)]
        runs = runs_by_item(shared_log)
        assert sorted(runs) == list(range(500))  # each task ran at least once
        assert max(runs.values()) <= 1 + DEFAULT_RETRIES, runs.most_common(3)

        wait_until(
            lambda: pool.ids == [0, 1] and not pool.core.operations.snapshot(),
            REJOIN_WAIT,
            f"engine {cut_off} on {FAULTED} counted back after the heal",
        )
        back_after = time.monotonic() - healed
        assert engine_hosts(pool) == where
        assert pool.map(lambda x: x + 1, range(20)) == list(range(1, 21))
        print(
            f"\npartition: unresponsive after {unresponsive_after:.1f}s ({seen}; states seen "
            f"{sorted(map(str, seen_states))}), map of 500 took {map_seconds:.1f}s, "
            f"{sum(runs.values()) - 500} task(s) ran twice, engine {cut_off} back "
            f"{back_after:.1f}s after the heal"
        )
    assert pool_processes_on(FAULTED, pool.name) == [], f"engines left on {FAULTED}"


# ------------------------------------------------------------ latency between client and controller


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that forwards each byte ``delay`` seconds after it
    arrived, in both directions, in order. One listening port per upstream port."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="proxy")
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread.start()

    def forward(self, host: str, port: int) -> int:
        """A local port whose connections reach ``host:port`` through the delay."""
        server = asyncio.run_coroutine_threadsafe(self._listen(host, port), self.loop).result(10)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _listen(self, host: str, port: int) -> asyncio.AbstractServer:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(host, port)
            self._writers.update((writer, up_writer))
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )

        return await asyncio.start_server(accept, "127.0.0.1", 0)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read as bytes come, write each piece ``delay`` after it came, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((self.loop.time() + self.delay, data))
        finally:
            queue.put_nowait((self.loop.time() + self.delay, b""))
            await sender

    def close(self) -> None:
        async def shut() -> None:
            for server in self._servers:
                server.close()
            for writer in self._writers:
                writer.close()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the proxy's loop did not stop"
        self.loop.close()


def delayed_connection_file(pool: pxpool.Pool, proxy: DelayProxy, path: Path) -> Path:
    """The pool's client connection file with every port replaced by a proxy port."""
    security = runtime.pool_dir(pool.name) / "security"
    info = json.loads((security / f"ipcontroller-{pool.name}-client.json").read_text())
    for key, value in list(info.items()):
        if key.endswith("_port") or key in {"registration", "control", "mux", "task", "iopub"}:
            if isinstance(value, int):
                info[key] = proxy.forward(info["location"] or "127.0.0.1", value)
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            info[key] = [proxy.forward("127.0.0.1", v) for v in value]
    path.write_text(json.dumps(info))
    return path


def test_a_client_50ms_away_from_the_controller_executes_maps_pushes_and_pulls(
    tmp_path: Path,
) -> None:
    """A client whose every byte to and from the controller is held 50 ms each way (a
    proxy in this test) still runs %%px-style code, maps and push/pull correctly; the
    throughput is printed, not asserted."""
    proxy = DelayProxy(DELAY)
    with pxpool.Pool.from_profile("ssh", **lab_overrides(STEADY, HOSTS[2])) as pool:
        client = None
        try:
            url = delayed_connection_file(pool, proxy, tmp_path / "delayed-client.json")
            client = ipp.Client(str(url), timeout=30)
            wait_until(lambda: sorted(client.ids) == pool.ids, 30, "engines seen through proxy")
            view = client[:]
            began = time.monotonic()
            ping = view.apply_async(hostname).get(timeout=30)
            round_trip = time.monotonic() - began
            assert sorted(ping) == sorted([STEADY, HOSTS[2]])
            assert round_trip >= 2 * DELAY, f"an answer in {round_trip:.3f}s: not delayed"

            view.execute("import math\nrooted = math.isqrt(144)", block=True)
            assert view.pull("rooted", block=True) == [12, 12]

            payload = {"weights": list(range(10_000)), "label": "delayed"}
            began = time.monotonic()
            view.push(payload, block=True)
            pulled = view.pull(["weights", "label"], block=True)
            push_pull = time.monotonic() - began
            assert pulled == [[payload["weights"], "delayed"]] * 2

            items = 200
            began = time.monotonic()
            squares = client.load_balanced_view().map_sync(lambda x: x * x, range(items))
            map_seconds = time.monotonic() - began
            assert list(squares) == [x * x for x in range(items)]
            direct = view.map_sync(lambda x: -x, range(items))
            assert list(direct) == [-x for x in range(items)]
            print(
                f"\nlatency {DELAY * 1000:.0f} ms each way: round trip {round_trip:.3f}s, "
                f"push+pull of 10k ints {push_pull:.3f}s, load-balanced map of {items} tasks "
                f"{map_seconds:.2f}s ({items / map_seconds:.0f} tasks/s)"
            )
        finally:
            if client is not None:
                client.close(linger=0)
            proxy.close()


# ------------------------------------------------------------ a host that loses power


def test_a_host_that_goes_down_shows_dead_and_scaling_onto_it_fails_clearly(
    faults: Faults,
) -> None:
    """pxlab1 loses power while the pool runs: its engine is shown dead (or unresponsive)
    within a bounded time, a scale that needs pxlab1 again fails naming the host within a
    bounded time, and pxlab2's engine keeps working throughout."""
    with pxpool.Pool.from_profile("ssh", **lab_overrides(FAULTED, STEADY)) as pool:
        where = engine_hosts(pool)
        lost = next(i for i, h in where.items() if h == FAULTED)
        kept = next(i for i, h in where.items() if h == STEADY)
        assert set(states(pool).values()) <= {"idle", "busy"}

        faults.down(FAULTED)
        downed = time.monotonic()
        shown = wait_until(
            lambda: states(pool).get(lost) in {"dead", "unresponsive"} and states(pool),
            DOWN_STATE_WAIT,
            f"engine {lost} on {FAULTED} shown dead or unresponsive",
        )
        shown_after = time.monotonic() - downed
        assert pool.client[kept].apply_sync(hostname) == STEADY
        wait_until(lambda: pool.ids == [kept], DOWN_STATE_WAIT, f"engine {lost} dropped")
        dropped_after = time.monotonic() - downed

        began = time.monotonic()
        with pytest.raises(pxpool.PxpoolError) as info:
            run_bounded(lambda: pool.scale_sync(2), SCALE_LIMIT, "pool.scale_sync(2)")
        failed_after = time.monotonic() - began
        said = str(info.value)
        assert FAULTED in said and "ssh" in said.lower(), said
        assert pool.ids == [kept]
        assert pool.map(lambda x: x * 3, range(50)) == [x * 3 for x in range(50)]
        print(
            f"\ndown: engine {lost} shown {shown[lost]} after {shown_after:.1f}s, dropped after "
            f"{dropped_after:.1f}s; scale_sync(2) failed after {failed_after:.1f}s with "
            f"{type(info.value).__name__}: {said.splitlines()[0][:200]}"
        )


def run_bounded(call: Callable[[], Any], limit: float, what: str) -> Any:
    """``call()`` in a thread: its value or its error, failing the test after ``limit`` s."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name=what)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        pytest.fail(f"{what} did not return within {limit:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# ------------------------------------------------------------ the client process goes away

START_DETACHED = """\
import sys, pxpool
from pxpool.profile import load_profile
profile = load_profile("ssh", **{overrides!r})
pool = pxpool.Pool(profile, {name!r}, detached=True)
pool.start_sync(timeout=60)
print("started", pool.ids)
pool.disconnect()
"""

ATTACH_AND_RUN = """\
import json, socket, pxpool
pool = pxpool.Pool.attach({name!r}, timeout=30)
hosts = pool.view().apply_sync(socket.gethostname)
squares = pool.map(lambda x: x * x, range(100))
print(json.dumps({{"ids": pool.ids, "hosts": hosts, "ok": squares == [x * x for x in range(100)]}}))
pool.disconnect()
"""


def python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
        check=False,
    )


def test_a_detached_pool_outlives_its_client_and_a_fresh_process_attaches_to_it() -> None:
    """A process starts a detached pool on two lab hosts and exits (a kernel restart);
    a fresh process attaches by name and runs tasks on those engines; ``pxpool stop``
    then leaves no engine on either host."""
    name = f"faults-detached-{uuid.uuid4().hex[:6]}"
    hosts = [FAULTED, STEADY]
    overrides = lab_overrides(*hosts)
    try:
        started = python(START_DETACHED.format(overrides=overrides, name=name))
        assert started.returncode == 0, started.stderr
        assert "started [0, 1]" in started.stdout
        for host in hosts:
            assert pool_processes_on(host, name), f"no engine of {name} on {host}"

        attached = python(ATTACH_AND_RUN.format(name=name))
        assert attached.returncode == 0, attached.stderr
        seen = json.loads(attached.stdout.strip().splitlines()[-1])
        assert seen["ids"] == [0, 1] and seen["ok"], seen
        assert sorted(seen["hosts"]) == sorted(hosts)
    finally:
        stopped = pxpool_cli("stop", name)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped pool {name!r}" in stopped.stdout
    for host in hosts:
        assert pool_processes_on(host, name) == [], f"engines of {name} left on {host}"
    assert name not in pxpool_cli("list").stdout
