"""The controller process: ipyparallel's controller, minus IPython's terminal.

ipyparallel imports IPython, whose package imports ``IPython.terminal.embed`` and
with it prompt_toolkit and jedi: ~0.3-0.5 s of the controller's ~1 s of
imports, on the same two cores where the engines are importing at that moment; a
controller never embeds a terminal, so it skips them (:mod:`.lean_imports`). Measured
here: a 2-engine pool's start, median of 6 alternating starts, 2.47 s -> 2.20 s.
It skips a fixed pause and lets engines join as soon as their heart answers
(:mod:`.fast_start`); the upkeep keeps a long-running controller's memory flat
(:mod:`.controller_upkeep`).

Run as ``python -m pxpool._entry.controller_main`` with the controller's arguments.
"""

from __future__ import annotations

from .lean_imports import import_ipyparallel


def main() -> None:
    """ipyparallel's controller, started sooner, with pxpool's upkeep."""
    import_ipyparallel()
    from ipyparallel.controller.app import IPController

    from . import fast_start
    from .controller_upkeep import Upkeep

    fast_start.install_quick_hearts()  # engines join the hub when their heart first answers
    app = IPController.instance()
    fast_start.initialize_without_settle_sleep(app)
    Upkeep(app).start()
    app.start()


if __name__ == "__main__":
    main()
