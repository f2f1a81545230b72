"""The local controller process: ipyparallel's controller, minus IPython's terminal.

ipyparallel imports IPython, whose package imports ``IPython.terminal.embed`` and
with it prompt_toolkit and jedi: ~0.3-0.5 s of the controller's ~1 s of
imports, on the same two cores where the engines are importing at that moment. A
controller never embeds a terminal, so a placeholder module takes that name; calling
its ``embed`` imports the real module. Measured here: a 2-engine pool's start,
median of 6 alternating starts, 2.47 s -> 2.20 s.

Run as ``python -m pxpool._entry.controller_main`` with the controller's arguments.
"""

from __future__ import annotations

import sys
import types
from typing import Any

PLACEHOLDER = "IPython.terminal.embed"


def _embed(*args: Any, **kwargs: Any) -> Any:
    """IPython.embed as asked for: the real module, imported now."""
    sys.modules.pop(PLACEHOLDER, None)
    from IPython.terminal.embed import embed

    return embed(*args, **kwargs)


def skip_terminal() -> None:
    """Put the placeholder in place of IPython's terminal, before IPython is imported."""
    if PLACEHOLDER not in sys.modules:
        module = types.ModuleType(PLACEHOLDER, "pxpool: IPython's terminal, not imported")
        module.embed = _embed  # type: ignore[attr-defined]
        sys.modules[PLACEHOLDER] = module


def main() -> None:
    """ipyparallel's controller, with pxpool's upkeep (:mod:`.controller_upkeep`)."""
    skip_terminal()
    from ipyparallel.controller.app import IPController

    from .controller_upkeep import Upkeep

    app = IPController.instance()
    app.initialize()
    Upkeep(app).start()
    app.start()


if __name__ == "__main__":
    main()
