"""What ``%px`` runs on while no pxpool pool is current: ipyparallel's own magics.

Without pxpool, the first ipyparallel ``Client`` made in IPython registers
ipyparallel's ``%px`` family for itself. Once ``%load_ext pxpool`` has taken those
names, ipyparallel sees them taken and registers nothing, so a user who made a plain
cluster (``ipp.Cluster(n=2).start_and_connect_sync()``) was told that no pool runs.
:class:`PlainClients` finds that client instead: the most recent open ipyparallel
``Client`` of this process that no pxpool pool owns, and an unregistered instance of
ipyparallel's ``ParallelMagics`` on its view (all engines, blocking, as
``Client.activate`` makes it) runs the magic: its flags, its ``eval`` of targets, its
output, exactly as without pxpool. A pxpool pool started later takes over; when it
stops, the plain client is used again, with its ``%pxconfig`` and ``%pxresult`` kept.

ipyparallel keeps no list of its clients, so they are found among the objects the
garbage collector tracks, once per ``%px`` without a pool (about 80 ms among the 150,000 objects of a process
holding pandas and matplotlib); a pxpool pool's ``%px`` never looks.
"""

from __future__ import annotations

import gc
import itertools
import weakref
from typing import Any

import ipyparallel as ipp
from ipyparallel.client.magics import ParallelMagics

from .._core.client import PxClient

__all__ = ["PlainClients"]


class PlainClients:
    """The plain ipyparallel clients of this process, newest first, and the magics on
    the newest."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self._order = itertools.count()
        self._seen: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._magics: _Plain | None = None  # on the newest client, once used

    def newest(self) -> Any | None:
        """The most recent plain ipyparallel Client still open, or None.

        A client is stamped when first found; clients found together are ordered as
        the collector lists them, which is the order they were made in."""
        for obj in gc.get_objects():
            kind = type(obj)  # not isinstance: on a dead weakref.proxy that raises
            if issubclass(kind, ipp.Client) and not issubclass(kind, PxClient):
                if obj not in self._seen:
                    self._seen[obj] = next(self._order)
        open_clients = [c for c in self._seen.keys() if not _closed(c)]
        return max(open_clients, key=self._seen.__getitem__, default=None)

    def magics(self) -> ParallelMagics | None:
        """ipyparallel's magics on the newest plain client (kept while it stays the
        newest, so ``%pxconfig`` and ``%pxresult`` hold), or None if there is none."""
        client = self.newest()
        if client is None:
            return None
        if self._magics is None or self._magics.view.client is not client:
            self.disable_autopx()
            view = client.direct_view("all")
            view.block = True
            self._magics = _Plain(self.shell, view)
        return self._magics

    def disable_autopx(self) -> None:
        """Leave ``%autopx`` mode of the plain client's magics, if it is on."""
        if self._magics is not None:
            self._magics.disable_autopx()


class _Plain(ParallelMagics):  # type: ignore[misc]  # ipyparallel ships no type information
    """ipyparallel's magics unchanged, never registered: PxMagics calls them."""

    def disable_autopx(self) -> None:
        self._disable_autopx()


def _closed(client: Any) -> bool:
    """A closed Client fails every call; ipyparallel marks it only privately."""
    return bool(getattr(client, "_closed", False))
