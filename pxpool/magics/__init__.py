"""IPython magics: ``%load_ext pxpool`` registers ``%pool`` and binds ``%px`` to the pool.

::

    %load_ext pxpool
    %pool start local -n 4          # %pool alone lists every subcommand

    %%px --targets ::2
    import os; print(os.getpid())

``%px``, ``%%px``, ``%autopx``, ``%pxresult`` and ``%pxconfig`` are ipyparallel's, with
its flags, bound to ``pxpool.current()``: the pool started or attached last, by
``%pool`` or from Python. While no pxpool pool is current they are ipyparallel's own,
on the most recent plain ipyparallel ``Client`` (``ipp.Cluster(...).connect_client_sync()``),
as without pxpool. pxpool changes their defaults:

- ``--targets`` accepts ``0,2-4,::2,-1`` or ``all`` and is parsed, never eval'ed (a
  slice starting with ``-`` needs ``=``: ``--targets=-2:``);
- output streams as it happens under its engine's ``[stdout:N]`` header
  (``--no-stream`` to collect it at the end, grouped by engine), and a progress bar
  appears after 2 s (``--progress-after``);
- **interrupting the kernel interrupts the engines**: the cell's engines get SIGINT
  (``--signal-on-interrupt`` picks another signal), the cell ends with
  ``KeyboardInterrupt`` once they stopped, and the pool stays usable.

``%pxhealth`` shows the live engine-health panel of the current pool (:mod:`pxpool.panel`).

``%pxlogs ENGINE`` prints what an engine printed, also after it died (``pool.logs``).

``%pxdebug`` debugs engines: post-mortem, ``%%pxdebug -e K`` cells stepped from their
first line, and a prompt for ``breakpoint()`` while a cell runs (:mod:`pxpool.magics.debug`).

Loading twice is harmless; ``%unload_ext pxpool`` removes the magics and stops nothing.
"""

from __future__ import annotations

from typing import Any

from .debug import DebugMagics
from .health import HealthMagics
from .logs import LogsMagics
from .pool import PoolMagics
from .px import PxMagics

__all__ = [
    "load_ipython_extension",
    "unload_ipython_extension",
    "PoolMagics",
    "PxMagics",
    "DebugMagics",
    "HealthMagics",
    "LogsMagics",
]

_SAVED = "_pxpool_replaced_magics"  # shell attribute: magics ours replaced, for unload


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%pool`` and pxpool's ``%px`` family on ``ipython`` (once)."""
    manager = ipython.magics_manager
    if isinstance(manager.registry.get(PxMagics.__name__), PxMagics):
        return
    px = PxMagics(ipython)
    pool = PoolMagics(ipython)
    debug = DebugMagics(ipython)  # %pxdebug, and breakpoint() sessions during cells
    health = HealthMagics(ipython)  # %pxhealth
    logs = LogsMagics(ipython)  # %pxlogs
    replaced = {
        (kind, name): manager.magics[kind][name]
        for instance in (px, pool, debug, health, logs)
        for kind, names in (instance.magics or {}).items()
        for name in names
        if name in manager.magics[kind]
    }
    setattr(ipython, _SAVED, replaced)
    manager.register(px, pool, debug, health, logs)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove pxpool's magics (leaving pools running) and restore what they replaced."""
    manager = ipython.magics_manager
    replaced: dict[tuple[str, str], Any] = getattr(ipython, _SAVED, {})
    for cls in (PxMagics, PoolMagics, DebugMagics, HealthMagics, LogsMagics):
        instance = manager.registry.get(cls.__name__)
        if not isinstance(instance, cls):
            continue
        if isinstance(instance, PxMagics):
            instance.disable_autopx()
        if isinstance(instance, DebugMagics):
            instance.unwatch()
        for kind, names in (instance.magics or {}).items():
            for name in names:
                if getattr(manager.magics[kind].get(name), "__self__", None) is instance:
                    del manager.magics[kind][name]
                    if (kind, name) in replaced:
                        manager.magics[kind][name] = replaced[(kind, name)]
        del manager.registry[cls.__name__]
    if hasattr(ipython, _SAVED):
        delattr(ipython, _SAVED)
