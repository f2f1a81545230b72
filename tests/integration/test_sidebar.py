"""pxpool pools in ipyparallel's JupyterLab sidebar, through ipyparallel's own REST
handlers (``/ipyparallel/clusters``) of a real Jupyter server and a temporary IPYTHONDIR.

The sidebar's list, Start and Stop buttons call exactly these requests. A pool started
from Python is listed with its engines; DELETE (the Stop button) runs pxpool's teardown,
after which nothing of the pool is left; a profile's entry starts a pool; a profile
the user made in the same IPYTHONDIR stays as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import pxpool
from pxpool._core import runtime
from pxpool._jupyter import files

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SKIPPED_EXTENSIONS = ["jupyterlab", "notebook", "jupyter_lsp", "jupyter_server_terminals"]
USER_FILES = {
    "ipython_config.py": "c.InteractiveShell.colors = 'Linux'\n",
    "startup/00-mine.py": "MINE = 1\n",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """ipyparallel's cluster REST API of a Jupyter server."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def call(self, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.base}/ipyparallel/clusters{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=STOP_TIMEOUT + 30) as response:
            data = response.read()
            return response.status, json.loads(data) if data else None

    def clusters(self) -> dict[str, Any]:
        return {model["id"]: model for model in self.call("")[1]}

    def key(self, cluster_id: str) -> str:
        return urllib.parse.quote(f"pxpool:{cluster_id}", safe=":")


def user_profile_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ipython_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary IPYTHONDIR, for this process and the server, with a profile of the user."""
    path = tmp_path_factory.mktemp("ipython")
    for name, text in USER_FILES.items():
        (path / "profile_mine" / name).parent.mkdir(parents=True, exist_ok=True)
        (path / "profile_mine" / name).write_text(text)
    saved = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(path)
    try:
        yield path
    finally:
        if saved is None:
            del os.environ["IPYTHONDIR"]
        else:
            os.environ["IPYTHONDIR"] = saved


@pytest.fixture(scope="module")
def server(ipython_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Jupyter server with ipyparallel's server extension (the sidebar's backend)."""
    tmp = tmp_path_factory.mktemp("jupyter")
    (tmp / "config").mkdir()
    only_ipyparallel = {name: False for name in SKIPPED_EXTENSIONS}  # a faster start
    ours = {"ipyparallel": True, "pxpool._jupyter.server": True}  # as the wheel enables it
    config = {"ServerApp": {"jpserver_extensions": only_ipyparallel | ours}}
    (tmp / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"))
    env.update(JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    port, token = free_port(), secrets.token_hex(16)
    log_path = tmp / "jupyter.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1"]
            + [f"--port={port}", f"--IdentityProvider.token={token}", "--allow-root"]
            + [f"--ServerApp.root_dir={tmp}", "--ServerApp.port_retries=0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    served = Server(f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                served.clusters()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Jupyter did not answer:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
        yield served
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def alive(pids: list[int]) -> list[int]:
    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return [pid for pid in pids if running(pid)]


def test_profiles_are_listed_before_any_pool_ran(server: Server) -> None:
    listed = server.clusters()
    assert listed["pxpool:new:local"].get("controller") is None  # stopped: a Start button
    assert "pxpool:new:ssh" not in listed  # ssh without hosts does not load: no entry
    assert not [key for key in listed if key.startswith("pxpool:") and ":new:" not in key]


@pytest.fixture(scope="module")
def pool(server: Server) -> Iterator[pxpool.Pool]:
    """Started from Python in this process, after the server, as in a notebook."""
    started = pxpool.Pool.from_profile("local", engines=2).start_sync()
    try:
        yield started
    finally:
        started.stop_sync()  # its client and loop here, after the sidebar stopped the pool


def test_a_pool_started_from_python_is_listed_and_the_stop_button_leaves_nothing(
    server: Server, pool: pxpool.Pool, ipython_dir: Path
) -> None:
    engines = list(pool.view().apply_sync(os.getpid))
    controller = (runtime.controller_state(pool.name) or {}).get("pid")
    assert isinstance(controller, int)
    model = server.clusters()[f"pxpool:{pool.name}"]
    assert model["engines"]["n"] == 2
    assert model["controller"]["state"]["state"] == "running"
    assert model["cluster_file"] == str(
        files.profile_dir() / "security" / f"cluster-{pool.name}.json"
    )

    status, _ = server.call(f"/{server.key(pool.name)}", "DELETE")  # the Stop button
    assert status == 204
    assert f"pxpool:{pool.name}" not in server.clusters()
    assert alive([*engines, controller]) == []  # by the `pxpool stop` the handler ran
    assert runtime.read_record(pool.name) is None  # its runtime directory is gone
    assert not Path(model["cluster_file"]).exists()
    mine = user_profile_files(ipython_dir / "profile_mine")  # IPython adds startup/README
    assert {name: mine.get(name) for name in USER_FILES} == USER_FILES
    assert not [name for name in mine if "cluster" in name or "pxpool" in name]


def test_a_profile_entry_starts_a_pool_listed_with_its_engines(server: Server) -> None:
    status, _ = server.call(f"/{server.key('new:local')}", "POST", {"n": 1})  # Start
    assert status == 200
    started = [k for k in server.clusters() if k.startswith("pxpool:local-")]
    assert len(started) == 1, started
    name = started[0].removeprefix("pxpool:")
    try:
        assert server.clusters()[started[0]]["engines"]["n"] == 1
        assert runtime.read_record(name)["detached"]  # outlives the server that started it
    finally:
        pxpool.Pool.stop_by_name(name)  # the Stop button's path is the test above's
    assert started[0] not in server.clusters() and "pxpool:new:local" in server.clusters()
