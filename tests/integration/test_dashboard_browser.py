"""The dashboard page and the panel's task stream in a real JupyterLab and Chromium.

One Jupyter server with pxpool's server extension enabled (as the installed
``jupyter-config`` file enables it) serves JupyterLab and the dashboard. A notebook
starts a local pool and shows its panel; the panel's link opens the dashboard page,
which shows engine rows and task-stream bars after a ``pool.map``, turns a killed
engine's row ``dead``, restarts it from its row's button and shows an engine's logs.
ipyparallel's IPython Parallel sidebar lists the pool. The server refuses the dashboard's
API without Jupyter's token. Screenshots go to
``test-output/``; with ``PXPOOL_UPDATE_DOCS=1`` also to ``docs/images/`` for the README.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pxpool
from pxpool._core import runtime as _runtime

from .test_panel_browser import (
    OUTPUT,
    REPO,
    FrontEnd,
    Server,
    api,
    browser,  # noqa: F401 (the module's Chromium fixture)
    open_notebook,
    run_cell,
    serve_jupyter,
    write_notebook,
)

pytestmark = pytest.mark.integration
pytest.importorskip("plotly")
pytest.importorskip("anywidget")
sync_api = pytest.importorskip("playwright.sync_api")

LAB = FrontEnd("jupyterlab", "/lab/tree/{}", ".jp-LabShell", engines=2, busy=False)
POOL = f"dashboard-{os.getpid()}"
CELLS = [
    "import os, signal, time, pxpool\n"
    f"pool = pxpool.Pool.from_profile('local', engines=2, pool_name={POOL!r})\n"
    "pool.start_sync()\n"
    "panel = pool.panel(refresh=0.5)\n"
    "panel",
    "def square(x):\n"
    "    import time\n"
    "    print('square of', x)\n"
    "    time.sleep(0.05)\n"
    "    return x * x\n"
    "def fails(x):\n"
    "    raise ValueError(x)\n"
    "assert pool.map(square, range(40)) == [x * x for x in range(40)]\n"
    "futures = [pool.submit(fails, i, retries=0) for i in range(3)]\n"
    "pxpool.wait(futures, timeout=30)\n"
    "pool.lbview().map(abs, range(-6, 0))",
    "pid = int(pool.health().set_index('engine_id').loc[1, 'pid'])\nos.kill(pid, signal.SIGKILL)",
    "pool.stop_sync()",
]


def docs_copy(shot: Path, name: str) -> None:
    if os.environ.get("PXPOOL_UPDATE_DOCS") == "1":
        (REPO / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, REPO / "docs" / "images" / name)


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """JupyterLab with pxpool's server extension enabled as the wheel's file enables it."""
    tmp = tmp_path_factory.mktemp("jupyter-dashboard")
    shutil.copytree(REPO / "jupyter-config", tmp / "config")
    with serve_jupyter(tmp, tmp / "config", ready="/pxpool/api/pools") as server:
        yield server


def status_without_token(url: str, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect to the login page is the answer itself


def test_dashboard_refuses_requests_without_jupyters_token(dashboard_server: Server) -> None:
    base = f"{dashboard_server.base}/pxpool"
    assert isinstance(api(dashboard_server, "/pxpool/api/pools"), list)  # with the token
    assert status_without_token(f"{base}/api/pools") == 403
    assert status_without_token(f"{base}/api/pools/any-pool") == 403
    assert status_without_token(f"{base}/api/pools/any-pool/actions", "POST") == 403
    assert status_without_token(f"{base}/static/plotly.js") in (302, 403)
    assert status_without_token(f"{base}/dashboard/any-pool") == 302  # to Jupyter's login
    wrong = urllib.request.Request(f"{base}/api/pools", headers={"Authorization": "token nope"})
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(wrong, timeout=10)
    # with the token: the list page, plotly.js from the installed package, a clear 404
    assert "pxpool" in fetch(dashboard_server, "/pxpool/dashboard/")
    assert "Plotly" in fetch(dashboard_server, "/pxpool/static/plotly.js")[:100_000]
    with pytest.raises(urllib.error.HTTPError, match="404") as missing:
        fetch(dashboard_server, "/pxpool/api/pools/no-such-pool")
    assert "No pool named 'no-such-pool'" in missing.value.read().decode()


def fetch(server: Server, path: str) -> str:
    request = urllib.request.Request(
        f"{server.base}{path}", headers={"Authorization": f"token {server.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def test_dashboard_opens_from_the_panel_and_follows_the_pool(
    dashboard_server: Server,
    browser: Any,  # noqa: F811
) -> None:
    write_notebook(dashboard_server.root / "dashboard.ipynb", CELLS)
    OUTPUT.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        notebook = context.new_page()
        open_notebook(notebook, dashboard_server, LAB, "dashboard.ipynb")
        run_cell(notebook, 0)
        link = notebook.locator("a.pxpool-dashboard-link")
        sync_api.expect(link).to_have_count(1, timeout=60_000)
        check_sidebar(notebook)
        run_cell(notebook, 1)
        square = notebook.locator(".pxpool-panel .legendtext", has_text="square")
        sync_api.expect(square).to_have_count(1, timeout=60_000)  # the map's bars, live
        points = notebook.locator(".pxpool-panel .barlayer .point")
        sync_api.expect(points.nth(9)).to_be_attached(timeout=10_000)  # 10 bars at least
        panel_shot = OUTPUT / "panel-task-stream.png"
        notebook.locator(".pxpool-panel").screenshot(path=str(panel_shot))

        with context.expect_page(timeout=30_000) as opened:
            link.click()
        page = opened.value
        check_page(page, notebook, dashboard_server)
    finally:
        context.close()
        if _runtime.read_record(POOL) is not None:
            pxpool.Pool.stop_by_name(POOL)  # the kernel's pool, if a cell failed
        for kernel in api(dashboard_server, "/api/kernels"):
            api(dashboard_server, f"/api/kernels/{kernel['id']}", method="DELETE")
    docs_copy(panel_shot, "panel-task-stream.png")


def check_sidebar(notebook: Any) -> None:
    """ipyparallel's IPython Parallel sidebar in JupyterLab lists the notebook's pool,
    running with its 2 engines, and offers its Stop button (:mod:`pxpool._jupyter`)."""
    notebook.locator('.jp-SideBar [data-id="ipp-cluster-launcher"]').click()
    entry = notebook.locator(f'li.ipp-ClusterListingItem[data-cluster-id="pxpool:{POOL}"]')
    sync_api.expect(entry).to_contain_text("running", timeout=30_000)
    sync_api.expect(entry).to_contain_text("Number of engines: 2", timeout=30_000)
    sync_api.expect(entry.get_by_role("button", name="Stop")).to_have_count(1)
    shot = OUTPUT / "sidebar.png"
    notebook.screenshot(path=str(shot))
    docs_copy(shot, "sidebar.png")
    notebook.locator('.jp-SideBar [data-id="ipp-cluster-launcher"]').click()  # closed again


def check_page(page: Any, notebook: Any, server: Server) -> None:
    """The page's rows, bars, a killed engine, a restart and logs, from its own buttons."""
    rows = [page.locator(f"tr.pxpool-row-{i} .pxpool-state") for i in range(2)]
    for row in rows:
        sync_api.expect(row).to_contain_text("idle", timeout=30_000)
    stream = page.locator("#stream .barlayer .point")
    sync_api.expect(stream.first).to_be_visible(timeout=15_000)
    assert stream.count() >= 10  # 40 items in chunks, 3 failed tasks, 6 through the hub
    sync_api.expect(page.locator("#maps")).to_contain_text("pool.map(square): 40/40 (done)")
    legend = " ".join(page.locator("#stream .legendtext").all_text_contents())
    assert "square" in legend and "fails" in legend and "abs" in legend, legend

    run_cell(notebook, 2)  # SIGKILL engine 1
    killed = time.monotonic()
    sync_api.expect(rows[1]).to_contain_text("dead", timeout=15_000)
    assert time.monotonic() - killed < 15.0
    sync_api.expect(rows[0]).to_contain_text("idle")
    shot = OUTPUT / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)

    if page.locator("tr.pxpool-row-0 .pxpool-logs").count():  # pool.logs exists
        page.locator("tr.pxpool-row-0 .pxpool-logs").click()
        sync_api.expect(page.locator("#logs")).to_contain_text("square of", timeout=20_000)
    page.locator("tr.pxpool-row-1 .pxpool-restart").click()
    sync_api.expect(rows[1]).to_contain_text("idle", timeout=60_000)
    sync_api.expect(page.locator("#message")).not_to_contain_text("failed")

    run_cell(notebook, 3)  # the pool stops: the page says so
    sync_api.expect(page.locator("#message")).to_contain_text("No pool named", timeout=30_000)
    assert POOL not in [p["name"] for p in api(server, "/pxpool/api/pools")]
    docs_copy(shot, "dashboard.png")
