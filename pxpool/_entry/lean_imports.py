"""pxpool's own processes import ipyparallel with less work than a notebook does.

Every controller, fork server and engine imports ipyparallel before it serves, on the
same cores where the others are starting. Two parts of that import are work these
processes never use, ~0.25-0.35 s of CPU each:

- IPython's package imports ``IPython.terminal.embed`` and with it prompt_toolkit and
  the terminal shell. :func:`skip_terminal` puts a placeholder module under that name
  before IPython is imported. It is lazy, not empty: ``IPython.embed()``, or any name
  a user's code takes from ``IPython.terminal.embed`` on an engine, imports the real
  module then and answers from it.
- ipyparallel's launcher traits list the installed launchers as they are defined,
  which reads every installed package's entry points four times (~20 ms each with a
  few hundred packages). :func:`import_ipyparallel` reads them once for that import;
  afterwards every module sees the standard ``importlib.metadata.entry_points`` again.
"""

from __future__ import annotations

import importlib
import importlib.metadata
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


def import_ipyparallel() -> None:
    """Import ipyparallel (its package imports all of it) without IPython's terminal,
    reading the installed entry points once."""
    skip_terminal()
    if "ipyparallel" in sys.modules:
        return
    real = importlib.metadata.entry_points
    scanned: list[Any] = []

    def scanned_once(**params: Any) -> Any:
        if not scanned:
            scanned.append(real())
        return scanned[0].select(**params) if params else scanned[0]

    importlib.metadata.entry_points = scanned_once
    try:
        importlib.import_module("ipyparallel")
    finally:
        importlib.metadata.entry_points = real
        for module in list(sys.modules.values()):  # modules that took the name meanwhile
            names = getattr(module, "__dict__", {})  # not getattr: the placeholder's is lazy
            if names.get("entry_points") is scanned_once:
                names["entry_points"] = real
