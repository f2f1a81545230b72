"""Processes that never embed a terminal start without IPython's terminal imports.

IPython's package imports ``IPython.terminal.embed`` and with it prompt_toolkit and
the terminal shell: ~0.2-0.3 s of CPU in every process that imports IPython. pxpool's
controller and engines (and the fork server that preloads engines) never open a
terminal, so before IPython is imported a placeholder module takes that name. It is
lazy, not empty: ``IPython.embed()``, or any name a user's code takes from
``IPython.terminal.embed`` on an engine, imports the real module then and answers
from it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

PLACEHOLDER = "IPython.terminal.embed"


def _real() -> types.ModuleType:
    """The real module, imported now in the placeholder's place."""
    if getattr(sys.modules.get(PLACEHOLDER), "pxpool_placeholder", False):
        del sys.modules[PLACEHOLDER]
    return importlib.import_module(PLACEHOLDER)


def _embed(*args: Any, **kwargs: Any) -> Any:
    """IPython.embed as asked for: the real module, imported now."""
    return _real().embed(*args, **kwargs)


def _attribute(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_real(), name)


def skip_terminal() -> None:
    """Put the placeholder in place of IPython's terminal, before IPython is imported."""
    if PLACEHOLDER not in sys.modules:
        module = types.ModuleType(PLACEHOLDER, "pxpool: IPython's terminal, imported on use")
        module.embed = _embed  # type: ignore[attr-defined]  # what IPython's package takes
        module.__getattr__ = _attribute  # type: ignore[method-assign]  # PEP 562: the rest
        module.pxpool_placeholder = True  # type: ignore[attr-defined]
        sys.modules[PLACEHOLDER] = module
