"""The Jupyter server extension: a dashboard page per pool under the server's base URL.

Enabled by ``jupyter-config/jupyter_server_config.d/pxpool.json`` (installed with
pxpool) or by hand with ``jupyter server extension enable pxpool._dashboard.server``.
Pages and API live under ``BASE_URL/pxpool/``, so they work wherever the server is
reached, also behind JupyterHub's proxy, and every handler requires Jupyter's own
authentication (its token or login cookie; a request without one is refused) and
asks its authorizer. Pool data comes only from the files the pool's process publishes
in the user's runtime directory (:mod:`.files`); the server starts no pool and holds no
connection to one.

Routes: ``pxpool/dashboard/`` (the pools), ``pxpool/dashboard/NAME`` (one pool's page),
``pxpool/api/pools``, ``pxpool/api/pools/NAME`` (its state and task-stream figure, as
JSON), ``pxpool/api/pools/NAME/actions`` (POST an action), ``pxpool/static/plotly.js``.
"""

from __future__ import annotations

import asyncio
import html
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .._core import runtime
from ..errors import InvalidArgumentError
from . import files, stream
from .publisher import ACTIONS, BASE_URL_ENV, SERVER_URL_ENV

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]

STALE = 3.0  # seconds after which a published state is old: its process is gone or busy
FIRST_WAIT = 5.0  # seconds a request waits for a fresh state (a first one measures health)
ACTION_WAIT = {"logs": 15.0, "interrupt": 10.0}  # seconds to wait for an action's outcome
DEFAULT_ACTION_WAIT = 60.0  # restart, scale, stop: engines start and stop
POLL = 0.1
PAGE = Path(__file__).with_name("static") / "dashboard.html"
_plotly_js: bytes | None = None


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "pxpool._dashboard.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the handlers; tell kernels started from now on where the pages are."""
    base = serverapp.web_app.settings["base_url"]
    route = url_path_join(base, "pxpool")
    name = r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(route, "dashboard") + "/?", PageHandler),
            (url_path_join(route, "dashboard", name), PageHandler),
            (url_path_join(route, "api", "pools"), PoolsHandler),
            (url_path_join(route, "api", "pools", name), StateHandler),
            (url_path_join(route, "api", "pools", name, "actions"), ActionHandler),
            (url_path_join(route, "static", "plotly.js"), PlotlyHandler),
        ],
    )
    os.environ[BASE_URL_ENV] = base
    _set_server_url(serverapp)
    # the port is final once the server listens: set it again then
    serverapp.io_loop.add_callback(_set_server_url, serverapp)
    serverapp.log.info("pxpool: pool dashboards at %s", url_path_join(route, "dashboard"))


def _set_server_url(serverapp: Any) -> None:
    try:
        os.environ[SERVER_URL_ENV] = str(serverapp.connection_url)
    except Exception:  # no URL yet (a socket server): kernels get only the base path
        pass


class _Handler(APIHandler):
    auth_resource = "pxpool"

    def check_name(self, name: str) -> dict[str, Any]:
        """The pool's record; 404 naming the running pools when there is none."""
        try:
            runtime.check_pool_name(name)
        except InvalidArgumentError as exc:
            raise web.HTTPError(400, str(exc)) from None
        record = runtime.read_record(name)
        if record is None:
            known = ", ".join(runtime.record_names()) or "none"
            raise web.HTTPError(404, f"No pool named {name!r}; running pools: {known}")
        return record


class PoolsHandler(_Handler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        pools = []
        for name in runtime.record_names():
            record = runtime.read_record(name) or {}
            state = files.read_state(name) or {}
            pools.append(
                {
                    "name": name,
                    "profile": record.get("profile"),
                    "engines": len(state.get("engines") or []) or None,
                    "live": _fresh(state),
                }
            )
        self.finish(json.dumps(pools))


class StateHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        self.check_name(name)
        files.touch_want(name)
        state = files.read_state(name)
        deadline = time.monotonic() + FIRST_WAIT
        while not _fresh(state) and time.monotonic() < deadline:
            await asyncio.sleep(POLL)
            state = files.read_state(name)
        if state is None or not _fresh(state):
            self.finish(json.dumps({"pool": name, "live": False, "message": _NOT_LIVE}))
            return
        events = state.pop("events", [])
        engine_ids = [row["engine_id"] for row in state.get("engines", [])]
        window = float(state.get("window") or stream.WINDOW)
        state["figure"] = stream.figure(events, engine_ids, float(state["written"]), window)
        state["live"] = True
        self.finish(json.dumps(state))


_NOT_LIVE = (
    "No process that uses this pool publishes it: open the dashboard from the notebook "
    "or script that started or attached it (pool.dashboard_url), which publishes while "
    "the page is open."
)


class ActionHandler(_Handler):
    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        self.check_name(name)
        body = self.get_json_body() or {}
        action = body.get("action")
        if action not in ACTIONS:
            raise web.HTTPError(400, f"Unknown action {action!r}; known: {', '.join(ACTIONS)}")
        request: dict[str, Any] = {
            k: body[k] for k in ("action", "engine_id", "n", "tail") if k in body
        }
        files.touch_want(name)
        request_id = files.post_request(name, request)
        if request_id is None:
            raise web.HTTPError(404, f"Pool {name!r} stopped")
        deadline = time.monotonic() + ACTION_WAIT.get(action, DEFAULT_ACTION_WAIT)
        while time.monotonic() < deadline:
            reply = files.read_reply(name, request_id)
            if reply is not None:
                self.finish(json.dumps(reply))
                return
            await asyncio.sleep(POLL)
        self.set_status(202)
        self.finish(json.dumps({"ok": None, "action": action, "error": "no answer yet"}))


class PageHandler(JupyterHandler):
    auth_resource = "pxpool"

    @web.authenticated
    @authorized
    def get(self, name: str = "") -> None:
        config = {
            "base": url_path_join(self.base_url, "pxpool"),
            "pool": name,
            "xsrf": self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else "",
        }
        page = PAGE.read_text().replace("{{CONFIG}}", html.escape(json.dumps(config)))
        plotly = url_path_join(self.base_url, "pxpool", "static", "plotly.js")
        page = page.replace("{{PLOTLY}}", html.escape(plotly))
        page = page.replace("{{TITLE}}", html.escape(f"pxpool {name}" if name else "pxpool"))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)


class PlotlyHandler(JupyterHandler):
    auth_resource = "pxpool"

    @web.authenticated
    @authorized
    def get(self) -> None:
        """plotly.js from the installed plotly package: no CDN, so it works offline."""
        global _plotly_js
        if _plotly_js is None:
            spec = importlib.util.find_spec("plotly")
            if spec is None or not spec.submodule_search_locations:
                raise web.HTTPError(
                    404, "plotly is not installed; `pip install 'pxpool[dashboard]'` adds it"
                )
            js = Path(list(spec.submodule_search_locations)[0], "package_data", "plotly.min.js")
            _plotly_js = js.read_bytes()
        self.set_header("Content-Type", "application/javascript")
        self.set_header("Cache-Control", "private, max-age=86400")
        self.finish(_plotly_js)


def _fresh(state: dict[str, Any] | None) -> bool:
    return bool(state) and time.time() - float(state.get("written") or 0) < STALE  # type: ignore[union-attr]
