"""The engine process every provider starts: ipyparallel's engine with pxpool's nanny.

``python -m pxpool._entry.engine_main`` takes the same arguments as ``python -m
ipyparallel.engine`` and runs the same engine, without IPython's terminal imports
(:mod:`.lean_imports`); only the nanny beside it is
:mod:`pxpool._entry.nanny`, which starts in a tenth of the time (ipyparallel's nanny
imports all of ipyparallel before the engine may serve). Upstream, ipyparallel
offers no hook to choose the nanny; :meth:`PxpoolEngine.start_nanny` is the one
method replaced.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import time
from typing import Any

from .lean_imports import import_ipyparallel

if __name__ == "__main__":  # an engine of its own (a fork server skipped it for its engines)
    import_ipyparallel()

from ipyparallel.engine.app import IPEngine  # noqa: E402  # after the lean import

from . import heap  # noqa: E402
from . import nanny as _nanny  # noqa: E402

PRELOAD_VARIABLE = "PXPOOL_PRELOAD"
CONNECTION_FILE_POLL = 0.01  # ipyparallel's engine looks every 0.1 s


class PxpoolEngine(IPEngine):  # type: ignore[misc]  # ipyparallel ships no type information
    """An ipyparallel engine whose nanny is pxpool's light one, and which reads the
    controller's connection file as soon as it appears."""

    def init_engine(self) -> None:
        """Engines forked or started while the controller starts wait for its file;
        look for it often (a stat each time) instead of ipyparallel's every 0.1 s."""
        app: Any = self  # ipyparallel's traits, untyped
        if not app.connection_info_env:
            app.find_connection_file()
            deadline = time.monotonic() + float(app.wait_for_url_file)
            while not os.path.exists(app.url_file) and time.monotonic() < deadline:
                time.sleep(CONNECTION_FILE_POLL)
            if not os.path.exists(app.url_file):
                app.wait_for_url_file = 0  # waited already: ipyparallel reports it now
        super().init_engine()

    def start_nanny(self, control_url: str) -> tuple[str, subprocess.Popen[bytes]]:
        session: Any = self.session
        key = session.key if isinstance(session.key, bytes) else str(session.key).encode()
        return _nanny.start(
            {
                "engine_id": self.id,
                "identity": self.bident.decode("latin-1"),
                "control_url": control_url,
                "registration_url": self.registration_url,
                "serverkey": _text(self.curve_serverkey),
                "publickey": _text(self.curve_publickey),
                "secretkey": _text(self.curve_secretkey),
                "key": key.hex(),
                "scheme": session.signature_scheme,
                "username": session.username,
            }
        )


def _text(value: bytes | str | None) -> str:
    if not value:
        return ""
    return value.decode("ascii") if isinstance(value, bytes) else value


def main() -> None:
    """Import the profile's ``preload`` modules (``PXPOOL_PRELOAD``, comma-separated:
    a fork server imported them already; an exec'd engine does it here, so a module that
    fails names itself in the engine's output), fork the nanny ahead, keep freed memory
    for reuse (:mod:`.heap`), run the engine."""
    for name in filter(None, os.environ.get(PRELOAD_VARIABLE, "").split(",")):
        importlib.import_module(name.strip())
    _nanny.prepare()
    heap.keep_freed_memory()  # after the nanny's fork: chunks reuse freed pages
    PxpoolEngine.launch_instance()


if __name__ == "__main__":
    main()
