"""The multi-host lab (``infra/lab.sh``): three hosts pxlab1..3 on this machine, each a
network namespace with its own address on a private bridge, its own hostname, its own
/tmp and /dev/shm, and its own sshd; the rest of the filesystem is shared. Checked from
Python over ssh, as the multi-host tests use it, and the fault helpers with it: a
partition must stop TCP in both directions and healing must bring it back; a host that
goes down loses its processes and its /tmp. Then SLURM's ``lab`` partition, whose two
nodes run on pxlab2 and pxlab3, runs a job of one task on each.

Settings come from ``infra/lab.sh env`` (in ``$PXPOOL_INFRA_DIR/env.sh``); without a
running lab every test skips, which ``PXPOOL_REQUIRE_SERVICES=1`` turns into a failure.
Every test leaves the lab as it found it: partitions are healed, a host taken down is
brought up, files and jobs are removed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import pxpool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOSTS = os.environ.get("PXPOOL_LAB_HOSTS", "pxlab1 pxlab2 pxlab3").split()
ADDRS = os.environ.get("PXPOOL_LAB_ADDRS", "198.18.0.11 198.18.0.12 198.18.0.13").split()
CLIENT_ADDR = os.environ.get("PXPOOL_LAB_CLIENT_ADDR", "198.18.0.1")
CLIENT_NAME = os.environ.get("PXPOOL_LAB_CLIENT_NAME", "pxlab0")
SSH_CONFIG = os.environ.get("PXPOOL_LAB_SSH_CONFIG", "/tmp/pxpool-infra/lab/ssh_config")
SHARED_DIR = Path(os.environ.get("PXPOOL_LAB_SHARED_DIR", "/tmp/pxpool-infra/lab/shared"))
PYTHON = os.environ.get("PXPOOL_LAB_PYTHON", sys.executable)
LAB_SCRIPT = os.environ.get("PXPOOL_LAB_SCRIPT", str(REPO / "infra" / "lab.sh"))
SLURM_LAB_PARTITION = os.environ.get("PXPOOL_TEST_SLURM_LAB_PARTITION", "lab")
SLURM_LAB_NODES = ["pxlab2", "pxlab3"]
ADDRESS = dict(zip(HOSTS, ADDRS, strict=True))

# A connect that works on this bridge takes well under a millisecond; one whose SYN
# is dropped waits for the whole timeout.
CONNECT_SECONDS = 1.5


def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def ssh(host: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``command`` on lab host ``host`` over ssh (the lab's ssh config: key, no host key
    checks, BatchMode, ConnectTimeout 5)."""
    return run(["ssh", "-F", SSH_CONFIG, host, command], timeout)


def ssh_ok(host: str, command: str, timeout: float = 30) -> str:
    done = ssh(host, command, timeout)
    assert done.returncode == 0, f"ssh {host} {command!r}: exit {done.returncode}: {done.stderr}"
    return done.stdout


def lab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``infra/lab.sh ARGS``, failing the test (with its output) when it fails."""
    done = run(["bash", LAB_SCRIPT, *args], timeout)
    assert done.returncode == 0, f"lab.sh {' '.join(args)}: exit {done.returncode}:\n{done.stderr}"
    return done


def connects(address: str, port: int, timeout: float = CONNECT_SECONDS) -> bool:
    """Whether a TCP connect from this machine to ``address:port`` succeeds in time."""
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def host_connects(host: str, address: str, port: int, *, via_ssh: bool = True) -> bool:
    """Whether a TCP connect from lab host ``host`` to ``address:port`` succeeds within
    CONNECT_SECONDS: run over ssh, or (``via_ssh=False``, for a host ssh cannot reach)
    inside the host's namespaces through ``lab.sh exec``."""
    probe = f"timeout {CONNECT_SECONDS} bash -c 'exec 3<>/dev/tcp/{address}/{port}'"
    if via_ssh:
        return ssh(host, probe).returncode == 0
    done = run(["bash", LAB_SCRIPT, "exec", host, "bash", "-c", probe])
    return done.returncode == 0


@contextmanager
def listener(reply: bytes = b"") -> Iterator[int]:
    """A TCP listener on the client address (the machine, as the lab sees it); each
    connection gets ``reply``. Yields its port."""
    server = socket.create_server((CLIENT_ADDR, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.fixture(scope="module", autouse=True)
def lab_running() -> None:
    """Skip the module unless every lab host is up (``lab.sh status`` exits 0)."""
    if not os.path.isfile(LAB_SCRIPT):
        pytest.skip(f"{LAB_SCRIPT} not found")
    if not os.path.isfile(SSH_CONFIG):
        pytest.skip(f"no lab ssh config at {SSH_CONFIG}; run `bash infra/up.sh` first")
    status = run(["bash", LAB_SCRIPT, "status"])
    if status.returncode != 0:
        said = "; ".join(line for line in status.stdout.splitlines() if line)
        pytest.skip(
            f"the lab is not running (infra/lab.sh status, exit {status.returncode}: {said}); "
            "run `bash infra/up.sh` first"
        )


@pytest.fixture
def partition() -> Iterator[Callable[[str], None]]:
    """``partition(host)`` cuts a host off; every host cut off is healed afterwards."""
    cut: list[str] = []

    def cut_off(host: str) -> None:
        cut.append(host)
        lab("partition", host)

    yield cut_off
    for host in cut:
        lab("heal", host)


def test_each_host_answers_ssh_with_its_own_hostname_and_resolves_the_lab() -> None:
    lab_names = dict(zip([CLIENT_NAME, *HOSTS], [CLIENT_ADDR, *ADDRS], strict=True))
    for name, address in lab_names.items():
        assert socket.gethostbyname(name) == address, f"{name} on this machine"
    # inside the lab the machine's own name is the client address too (SLURM's controller)
    expected = {**lab_names, socket.gethostname().split(".")[0]: CLIENT_ADDR}
    resolve = 'echo $n $(getent ahostsv4 $n | head -n1 | cut -d" " -f1)'
    for host in HOSTS:
        lines = ssh_ok(host, f"hostname; for n in {' '.join(expected)}; do {resolve}; done")
        assert lines.splitlines()[0] == host
        assert dict(line.split() for line in lines.splitlines()[1:]) == expected, host


def test_hosts_have_no_route_off_the_lab() -> None:
    for host in HOSTS:
        routes = ssh_ok(host, "ip -4 route show").splitlines()
        assert routes and all(line.startswith("198.18.0.0/24 ") for line in routes), routes


@pytest.mark.parametrize("directory", ["/dev/shm", "/tmp"])
def test_a_file_in_one_hosts_directory_is_on_no_other_host(directory: str) -> None:
    name = f"{directory}/pxpool-lab-test-{uuid.uuid4().hex}"
    writer, others = HOSTS[0], HOSTS[1:]
    try:
        ssh_ok(writer, f"echo {writer} > {name}")
        assert ssh_ok(writer, f"cat {name}").strip() == writer
        assert not os.path.exists(name), f"{name} written on {writer} is on this machine"
        for host in others:
            assert ssh(host, f"test -e {name}").returncode == 1, f"{name} is on {host} too"
        assert ssh_ok(writer, f"stat -f -c %T {directory}").strip() == "tmpfs"
    finally:
        ssh(writer, f"rm -f {name}")


def test_hosts_share_the_filesystem_and_run_the_machines_python() -> None:
    here = f"{PYTHON} {pxpool.__file__}"
    script = "import pxpool, sys; print(sys.executable, pxpool.__file__)"
    for host in HOSTS:
        assert ssh_ok(host, f"{PYTHON} -c '{script}'").strip() == here, host


def test_each_host_reaches_the_client_address_and_its_neighbours() -> None:
    with listener(b"pxpool-lab\n") as port:
        for host in HOSTS:
            out = ssh_ok(host, f"exec 3<>/dev/tcp/{CLIENT_ADDR}/{port} && timeout 5 head -n1 <&3")
            assert out.strip() == "pxpool-lab", host
    for i, host in enumerate(HOSTS):
        neighbour = HOSTS[(i + 1) % len(HOSTS)]
        assert host_connects(host, neighbour, 22), f"{host} -> {neighbour}:22"
        assert connects(ADDRESS[host], 22), f"this machine -> {host}:22"


def test_partition_blocks_tcp_both_ways_and_heal_restores_it(
    partition: Callable[[str], None],
) -> None:
    host, other = HOSTS[0], HOSTS[1]
    with listener() as port:
        assert connects(ADDRESS[host], 22)
        assert host_connects(host, CLIENT_ADDR, port, via_ssh=False)

        partition(host)
        began = time.monotonic()
        assert not connects(ADDRESS[host], 22), "this machine still reaches a partitioned host"
        assert time.monotonic() - began >= CONNECT_SECONDS * 0.9, "refused, not dropped"
        assert not host_connects(other, host, 22), f"{other} still reaches {host}"
        assert not host_connects(host, CLIENT_ADDR, port, via_ssh=False), f"{host} gets out"
        assert host_connects(host, "127.0.0.1", 22, via_ssh=False), "lo must stay open"

        lab("heal", host)
        assert connects(ADDRESS[host], 22)
        assert host_connects(other, host, 22)
        assert host_connects(host, CLIENT_ADDR, port, via_ssh=False)
    assert ssh_ok(host, "hostname").strip() == host


def test_down_kills_the_hosts_processes_and_up_boots_it_with_a_fresh_tmp() -> None:
    host = HOSTS[0]  # not a SLURM lab node
    marker = f"/tmp/pxpool-lab-test-{uuid.uuid4().hex}"
    ssh_ok(host, f"touch {marker}")
    try:
        lab("down", host)
        assert run(["bash", LAB_SCRIPT, "pids", host]).stdout.split() == []
        assert not connects(ADDRESS[host], 22)
    finally:
        lab("up", host)
    assert ssh_ok(host, "hostname").strip() == host
    assert ssh(host, f"test -e {marker}").returncode == 1, "/tmp survived the host going down"


def slurm_lab_nodes() -> list[str]:
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch not found; run `bash infra/up.sh` first")
    done = run(["sinfo", "-h", "-N", "-p", SLURM_LAB_PARTITION, "-o", "%N %t"], timeout=20)
    nodes = dict(line.split() for line in done.stdout.splitlines() if line.strip())
    if sorted(nodes) != SLURM_LAB_NODES:
        pytest.skip(
            f"SLURM partition {SLURM_LAB_PARTITION!r} has nodes {nodes or 'none'}, not "
            f"{SLURM_LAB_NODES} (sinfo: {done.stderr.strip()}); run `bash infra/up.sh` first"
        )
    return sorted(nodes)


def test_slurm_lab_partition_runs_one_task_on_each_lab_node() -> None:
    nodes = slurm_lab_nodes()
    output = SHARED_DIR / f"pxpool-lab-test-{uuid.uuid4().hex}.out"  # seen by every host
    options = ["-J", "pxpool-lab-test", "-p", SLURM_LAB_PARTITION, "-N", "2", "-t", "2"]
    where = ["--ntasks-per-node=1", "-D", str(SHARED_DIR), "-o", str(output)]
    script = "srun -N 2 --ntasks-per-node=1 hostname"
    submitted = run(["sbatch", "--parsable", *options, *where, "--wrap", script], timeout=20)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 60
        while run(["squeue", "-h", "-j", job], timeout=20).stdout.strip():
            assert time.monotonic() < deadline, f"job {job} still queued or running after 60 s"
            time.sleep(0.3)
        deadline = time.monotonic() + 5  # the output may land a moment after the job ends
        while sorted(output.read_text().split()) != nodes and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(output.read_text().split()) == nodes
    finally:
        run(["scancel", job], timeout=20)
        output.unlink(missing_ok=True)
