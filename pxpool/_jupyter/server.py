"""The Jupyter server extension that lists pxpool's profiles in the sidebar at once.

Without it a profile's Start entry appears once a pool has started or stopped in this
``IPYTHONDIR``; with it, as soon as the server runs. It adds no handler: ipyparallel's
own serve the sidebar. The wheel enables it in every Jupyter server of the environment
(``jupyter-config/jupyter_server_config.d/pxpool-sidebar.json``).
"""

from __future__ import annotations

from typing import Any

from .files import publish_profiles

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "pxpool._jupyter.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Write the profiles' Start entries (never fails the server: problems are logged)."""
    try:
        publish_profiles()
    except Exception as exc:  # the server serves on; only the Start entries are missing
        serverapp.log.warning("pxpool: could not list pxpool profiles in the sidebar: %r", exc)
        return
    serverapp.log.info("pxpool: pxpool profiles listed in the IPython Parallel sidebar")
