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

ipyparallel keeps no list of its clients. Those made before ``%load_ext pxpool`` are
found once among the objects the garbage collector tracks (about 80 ms among the
150,000 objects of a process holding pandas and matplotlib); those made afterwards are
noted as they are made, by a wrapper around ``Client.__init__`` that calls it
unchanged. So a ``%px`` without a pool no longer pays for a scan each time.
"""

from __future__ import annotations

import functools
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
        self._scanned = False
        _TRACKERS.add(self)
        _note_new_clients()

    def stamp(self, client: Any) -> None:
        """Note a plain client (in the order clients are made); a pool's are not."""
        if not isinstance(client, PxClient) and client not in self._seen:
            self._seen[client] = next(self._order)

    def newest(self) -> Any | None:
        """The most recent plain ipyparallel Client still open, or None.

        Clients made before this object are found in one scan, ordered as the
        collector lists them, which is the order they were made in."""
        if not self._scanned:
            self._scanned = True
            for obj in gc.get_objects():
                kind = type(obj)  # not isinstance: on a dead weakref.proxy that raises
                if issubclass(kind, ipp.Client) and not issubclass(kind, PxClient):
                    self.stamp(obj)
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


_TRACKERS: weakref.WeakSet[PlainClients] = weakref.WeakSet()


def _note_new_clients() -> None:
    """Wrap ``ipp.Client.__init__`` once: every client made from now on is stamped by
    each :class:`PlainClients` (subclasses' too; pxpool's own are skipped)."""
    init = ipp.Client.__init__
    if getattr(init, "pxpool_notes_clients", False):
        return

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for tracker in list(_TRACKERS):
            tracker.stamp(self)

    __init__.pxpool_notes_clients = True  # type: ignore[attr-defined]
    ipp.Client.__init__ = __init__


def _closed(client: Any) -> bool:
    """A closed Client fails every call; ipyparallel marks it only privately."""
    return bool(getattr(client, "_closed", False))
