"""The panel in a real JupyterLab, in Debian's Chromium driven by Playwright.

The test starts JupyterLab on 127.0.0.1 with a random token, opens a notebook that
starts a local pool and shows ``pool.panel()``, kills engine 1 with SIGKILL from a
second cell and reads the page's DOM until engine 1's row says ``dead``. A screenshot
goes to ``test-output/panel.png``; with ``PXPOOL_UPDATE_DOCS=1`` it is also copied to
``docs/panel.png`` for the README.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import pytest

import pxpool
from pxpool import _runtime

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
POOL_NAME = f"browser-{os.getpid()}"
SERVER_START_TIMEOUT = 60.0
CELLS = [
    "import os, signal, time, pxpool\n"
    f"pool = pxpool.Pool.from_profile('local', engines=3, pool_name={POOL_NAME!r})\n"
    "pool.start_sync()\n"
    "panel = pool.panel(refresh=0.5)\n"
    "slow = pool.client[0].apply_async(time.sleep, 120)\n"
    "panel",
    "pid = int(pool.health().set_index('engine_id').loc[1, 'pid'])\nos.kill(pid, signal.SIGKILL)",
    "pool.stop_sync()",
]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing; infra/install.sh installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def api(base: str, token: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(
        f"{base}{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def wait_for_idle_kernel(base: str, token: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kernels = api(base, token, "/api/kernels")
        if kernels and kernels[0].get("execution_state") == "idle":
            return
        time.sleep(0.2)
    pytest.fail(f"the notebook's kernel was not idle within {timeout:g}s")


def write_notebook(path: Path) -> None:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
        for s in CELLS
    ]
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook))


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A JupyterLab server in its own process group, stopped with its kernels."""
    token = secrets.token_hex(16)
    port = free_port()
    root = tmp_path / "root"
    root.mkdir()
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    )
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
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
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                api(base, token, "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer within {SERVER_START_TIMEOUT:g}s:\n"
                        + (tmp_path / "jupyter.log").read_text()[-3000:]
                    )
                time.sleep(0.2)
        yield base, token, root
    finally:
        if _runtime.read_record(POOL_NAME) is not None:
            pxpool.Pool.stop_by_name(POOL_NAME)  # the kernel's pool, if a cell failed
        try:
            for kernel in api(base, token, "/api/kernels"):
                api(base, token, f"/api/kernels/{kernel['id']}", method="DELETE")
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(server.pid, signum)  # the server and any kernel it left
                server.wait(timeout=10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def test_panel_row_turns_dead_in_the_browser_when_its_engine_is_killed(
    jupyterlab: tuple[str, str, Path],
) -> None:
    base, token, root = jupyterlab
    write_notebook(root / "panel.ipynb")
    OUTPUT.mkdir(exist_ok=True)
    screenshot = OUTPUT / "panel.png"
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(f"{base}/lab/tree/panel.ipynb?token={token}", timeout=60_000)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
            wait_for_idle_kernel(base, token, timeout=30.0)

            def run_cell(index: int) -> None:
                page.locator(".jp-Notebook .jp-Cell").nth(index).locator(
                    ".jp-InputArea-editor"
                ).click()
                page.keyboard.press("Shift+Enter")

            run_cell(0)
            rows = [page.locator(f".pxpool-row-{i} .pxpool-state") for i in (0, 1, 2)]
            sync_api.expect(rows[0]).to_contain_text("busy", timeout=60_000)
            sync_api.expect(page.locator(".pxpool-row-0 .pxpool-task")).to_contain_text("sleep")
            for row in rows[1:]:
                sync_api.expect(row).to_contain_text("idle", timeout=10_000)
            run_cell(1)
            killed = time.monotonic()
            sync_api.expect(rows[1]).to_contain_text("dead", timeout=10_000)
            assert time.monotonic() - killed < 10.0
            sync_api.expect(page.locator(".pxpool-row-1 .pxpool-state-dead")).to_have_count(1)
            sync_api.expect(rows[2]).to_contain_text("idle")
            page.locator(".pxpool-panel").screenshot(path=str(screenshot))
            run_cell(2)
            sync_api.expect(rows[0]).to_contain_text("stopped", timeout=30_000)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("PXPOOL_UPDATE_DOCS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(screenshot, REPO / "docs" / "panel.png")
