"""The panel in a real browser, in JupyterLab and in Notebook 7 (ipywidgets 8).

One Jupyter server on 127.0.0.1 with a random token serves both front ends (JupyterLab
at ``/lab/tree/<nb>``, Notebook 7 at ``/notebooks/<nb>``) and one headless Debian
Chromium, driven by Playwright, is shared by both tests. Each test opens a notebook that
starts a local pool and shows ``pool.panel()``, kills engine 1 with SIGKILL from a second
cell and reads the page's DOM until engine 1's row says ``dead``, then clicks that
row's restart button and waits for it to say ``idle`` again. Screenshots go to
``test-output/panel-<front end>.png``; with ``PXPOOL_UPDATE_DOCS=1`` the JupyterLab one
is also copied to ``docs/panel.png`` for the README.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pxpool
from pxpool._core import runtime as _runtime

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output"
SERVER_START_TIMEOUT = 60.0

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing; infra/install.sh installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@dataclass(frozen=True)
class FrontEnd:
    """A notebook front end, how to open a notebook in it and the pool its test shows."""

    name: str
    url: str  # path of a notebook in this front end, with {} for the file name
    shell: str  # CSS selector only this front end's page matches
    engines: int
    busy: bool  # engine 0 runs a long task while the others stay idle

    @property
    def pool_name(self) -> str:
        return f"browser-{self.name}-{os.getpid()}"

    def cells(self) -> list[str]:
        start = (
            "import os, signal, time, pxpool\n"
            f"pool = pxpool.Pool.from_profile('local', engines={self.engines}, "
            f"pool_name={self.pool_name!r})\n"
            "pool.start_sync()\n"
            "panel = pool.panel(refresh=0.5)\n"
        )
        if self.busy:
            start += "slow = pool.client[0].apply_async(time.sleep, 120)\n"
        return [
            start + "panel",
            "pid = int(pool.health().set_index('engine_id').loc[1, 'pid'])\n"
            "os.kill(pid, signal.SIGKILL)",
            "pool.stop_sync()",
        ]


def has_notebook7() -> bool:
    try:
        return int(importlib.metadata.version("notebook").split(".")[0]) >= 7
    except importlib.metadata.PackageNotFoundError:
        return False


FRONT_ENDS = [
    pytest.param(
        FrontEnd("jupyterlab", "/lab/tree/{}", ".jp-LabShell", engines=3, busy=True),
        id="jupyterlab",
    ),
    pytest.param(
        FrontEnd(
            "notebook7", "/notebooks/{}", 'body[data-notebook="notebooks"]', engines=2, busy=False
        ),
        id="notebook7",
        marks=pytest.mark.skipif(not has_notebook7(), reason="notebook>=7 (test extra) is missing"),
    ),
]


@dataclass(frozen=True)
class Server:
    base: str
    token: str
    root: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def api(server: Server, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(
        f"{server.base}{path}", method=method, headers={"Authorization": f"token {server.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def wait_for_idle_kernel(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kernels = api(server, "/api/kernels")
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise
            kernels = []  # jupyter_server fails to list a kernel still starting; ask again
        if kernels and kernels[0].get("execution_state") == "idle":
            return
        time.sleep(0.2)
    pytest.fail(f"the notebook's kernel was not idle within {timeout:g}s")


def write_notebook(path: Path, cells: list[str]) -> None:
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": s,
                "outputs": [],
                "execution_count": None,
            }
            for s in cells
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook))


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)  # the server and any kernel it left
            process.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def serve_jupyter(
    tmp: Path, config: Path | None = None, ready: str = "/api/status"
) -> Iterator[Server]:
    """A Jupyter server with JupyterLab and Notebook 7, in its own process group, with
    the Jupyter configuration in ``config`` (none by default); up once ``ready`` answers."""
    root = tmp / "root"
    root.mkdir()
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(config or tmp / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    )
    server = Server(f"http://127.0.0.1:{free_port()}", secrets.token_hex(16), root)
    log_path = tmp / "jupyter.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={server.base.rsplit(':', 1)[1]}",
                f"--IdentityProvider.token={server.token}",
                f"--ServerApp.root_dir={root}",
                "--ServerApp.port_retries=0",
                "--allow-root",  # the test machine runs as root
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                api(server, ready)
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"Jupyter did not answer {ready} within {SERVER_START_TIMEOUT:g}s:\n"
                        + log_path.read_text()[-3000:]
                    )
                time.sleep(0.2)
        yield server
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Jupyter server with JupyterLab and Notebook 7, in its own process group."""
    with serve_jupyter(tmp_path_factory.mktemp("jupyter")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless; Playwright must not download a browser of its own."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(params=FRONT_ENDS)
def front_end(
    request: pytest.FixtureRequest, jupyter_server: Server, browser: Any
) -> Iterator[tuple[FrontEnd, Any]]:
    """A page of one front end; afterwards its pool, kernels and page are gone."""
    front: FrontEnd = request.param
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    try:
        yield front, context.new_page()
    finally:
        context.close()
        if _runtime.read_record(front.pool_name) is not None:
            pxpool.Pool.stop_by_name(front.pool_name)  # the kernel's pool, if a cell failed
        try:
            for kernel in api(jupyter_server, "/api/kernels"):
                api(jupyter_server, f"/api/kernels/{kernel['id']}", method="DELETE")
        except (urllib.error.URLError, ConnectionError, OSError):
            pass


def open_notebook(page: Any, server: Server, front: FrontEnd, name: str) -> None:
    page.goto(f"{server.base}{front.url.format(name)}?token={server.token}", timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    sync_api.expect(page.locator(front.shell)).to_have_count(1)  # no redirect to the other
    wait_for_idle_kernel(server, timeout=30.0)


def run_cell(page: Any, index: int) -> None:
    """Both front ends render cells with JupyterLab's classes and run one on Shift+Enter."""
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def test_panel_row_turns_dead_in_the_browser_when_its_engine_is_killed(
    jupyter_server: Server, front_end: tuple[FrontEnd, Any]
) -> None:
    front, page = front_end
    name = f"panel-{front.name}.ipynb"
    write_notebook(jupyter_server.root / name, front.cells())
    OUTPUT.mkdir(exist_ok=True)
    screenshot = OUTPUT / f"panel-{front.name}.png"
    open_notebook(page, jupyter_server, front, name)

    run_cell(page, 0)
    rows = [page.locator(f".pxpool-row-{i} .pxpool-state") for i in range(front.engines)]
    if front.busy:
        sync_api.expect(rows[0]).to_contain_text("busy", timeout=60_000)
        sync_api.expect(page.locator(".pxpool-row-0 .pxpool-task")).to_contain_text("sleep")
    idle = [i for i in range(front.engines) if not (front.busy and i == 0)]
    for i in idle:
        sync_api.expect(rows[i]).to_contain_text("idle", timeout=60_000)
    run_cell(page, 1)
    killed = time.monotonic()
    sync_api.expect(rows[1]).to_contain_text("dead", timeout=10_000)
    assert time.monotonic() - killed < 10.0
    sync_api.expect(page.locator(".pxpool-row-1 .pxpool-state-dead")).to_have_count(1)
    for i in idle:
        if i != 1:
            sync_api.expect(rows[i]).to_contain_text("idle")
    page.locator(".pxpool-panel").screenshot(path=str(screenshot))
    # the dead row's log button shows how its engine ended, under the table
    page.locator(".pxpool-row-1 .pxpool-log-button").click()
    sync_api.expect(page.locator(".pxpool-log")).to_contain_text("killed by SIGKILL")
    # the row's own restart button brings the engine back under the same id
    page.locator(".pxpool-row-1 .pxpool-restart").click()
    sync_api.expect(rows[1]).to_contain_text("idle", timeout=60_000)
    sync_api.expect(page.locator(".pxpool-error")).not_to_contain_text("failed")
    run_cell(page, 2)
    # engine 0 is busy in a 120 s task: the stop may take its graceful bound (the
    # profile's 15 s stop timeout, twice) and the SIGKILL grace before the row says so
    sync_api.expect(rows[0]).to_contain_text("stopped", timeout=60_000)

    assert screenshot.stat().st_size > 10_000
    if front.name == "jupyterlab" and os.environ.get("PXPOOL_UPDATE_DOCS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(screenshot, REPO / "docs" / "panel.png")
