"""The cluster files ipyparallel's sidebar reads: one per running pool, one per profile.

They live in ``IPYTHONDIR/profile_pxpool/security/``, a profile directory pxpool makes
and marks (``MARKER``) as its own; any other ``profile_pxpool`` is a user's and is never
written to. A pool's file is written when it starts and removed by its teardown, also
when another process stops it; a file left by a pool whose owner died shows as stopped
until the sidebar's button or ``pxpool stop NAME`` cleans up after it, and goes by
itself once the pool's record is gone too.
Writing these files never fails a pool: a problem is logged and the pool runs unlisted.
``PXPOOL_JUPYTER_SIDEBAR=0`` turns the listing off.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .._core import runtime
from ..engines import provider_for
from ..errors import PxpoolError
from ..profile import list_profiles, load_profile

__all__ = ["profile_dir", "publish", "withdraw", "publish_profiles", "NEW_PREFIX"]

log = logging.getLogger("pxpool.jupyter")

PROFILE_NAME = "pxpool"  # the IPython profile: sidebar entries read "pxpool:<cluster id>"
MARKER = "made-by-pxpool.txt"
NEW_PREFIX = "new:"  # cluster id of a profile's entry; pool names never hold ":"
CLUSTER_CLASS = "pxpool._jupyter.cluster.PoolCluster"
README = (
    "pxpool made this IPython profile directory so that JupyterLab's IPython Parallel\n"
    "sidebar lists pxpool's pools: security/cluster-NAME.json points at running pool NAME,\n"
    "security/cluster-new:PROFILE.json starts a pool from a pxpool profile. pxpool writes\n"
    "and removes those files; remove the directory to reset it.\n"
)
_warned: set[Path] = set()


def profile_dir() -> Path:
    """``IPYTHONDIR/profile_pxpool`` (``IPYTHONDIR`` as IPython finds it)."""
    from IPython.paths import get_ipython_dir

    return Path(get_ipython_dir()) / f"profile_{PROFILE_NAME}"


def publish(name: str) -> None:
    """List running pool ``name`` in the sidebar (and every profile's Start entry)."""
    directory = _own_dir()
    if directory is not None:
        _write_profiles(directory)
        _write(directory, name, {"pool": name})


def withdraw(name: str) -> None:
    """Remove pool ``name``'s entry (a teardown hook: the pool is gone)."""
    directory = _own_dir(create=False)
    if directory is None:
        return
    try:
        _file(directory, name).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("pxpool: could not remove pool %r from the Jupyter sidebar: %s", name, exc)


def publish_profiles() -> None:
    """Write the Start entries of pxpool's profiles (before any pool ran)."""
    directory = _own_dir()
    if directory is not None:
        _write_profiles(directory)


def _file(directory: Path, cluster_id: str) -> Path:
    return directory / "security" / f"cluster-{cluster_id}.json"


def _write(directory: Path, cluster_id: str, fields: dict[str, str]) -> None:
    cluster = {"class": CLUSTER_CLASS, "cluster_id": cluster_id, "profile_dir": str(directory)}
    try:
        runtime.write_private_json(_file(directory, cluster_id), {"cluster": cluster | fields})
    except OSError as exc:
        log.warning("pxpool: could not list %r in the Jupyter sidebar: %s", cluster_id, exc)


def _write_profiles(directory: Path) -> None:
    """A Start entry per profile that could start here; entries of others are removed,
    and so are entries of pools that left no record (nothing is left to stop)."""
    _prune_gone(directory)
    wanted = {info.name for info in list_profiles() if _startable(info.name)}
    for name in wanted:
        if not _file(directory, NEW_PREFIX + name).exists():
            _write(directory, NEW_PREFIX + name, {"pxpool_profile": name})
    for path in (directory / "security").glob(f"cluster-{NEW_PREFIX}*.json"):
        if path.name[len("cluster-" + NEW_PREFIX) : -len(".json")] not in wanted:
            path.unlink(missing_ok=True)


def _prune_gone(directory: Path) -> None:
    for path in (directory / "security").glob("cluster-*.json"):
        name = path.name[len("cluster-") : -len(".json")]
        if not name.startswith(NEW_PREFIX) and runtime.read_record(name) is None:
            path.unlink(missing_ok=True)


def _startable(name: str) -> bool:
    """Whether profile ``name`` loads as it is (an ssh profile without hosts does not),
    names valid pools, and its provider can start here (a batch system's submit command
    on PATH, a Kubernetes cluster to talk to): a laptop's sidebar offers no SLURM pools."""
    try:
        runtime.check_pool_name(name)  # it names the pools it starts
        provider = provider_for(load_profile(name))
    except PxpoolError:
        return False
    return provider.startable_here()


def _own_dir(create: bool = True) -> Path | None:
    """``profile_pxpool`` if it is pxpool's (made now when missing and ``create``); None
    when the listing is off, or the directory is a user's or cannot be made."""
    if os.environ.get("PXPOOL_JUPYTER_SIDEBAR", "1").strip().lower() in ("0", "false", "no"):
        return None
    path = profile_dir()
    if (path / MARKER).is_file():
        return path
    if path.exists():
        if path not in _warned:
            _warned.add(path)
            log.warning(
                "pxpool: %s is an IPython profile pxpool did not make; it is left alone and "
                "pools are not listed in JupyterLab's sidebar (rename that profile to list them)",
                path,
            )
        return None
    return _make_dir(path) if create else None


def _make_dir(path: Path) -> Path | None:
    """Make the marked directory whole beside its place, then move it there, so no
    other process ever sees it without its marker (which would make it a user's)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pxpool-", dir=path.parent))
        (staging / "security").mkdir(mode=0o700)
        (staging / MARKER).write_text(README)
        try:
            staging.rename(path)
        except OSError:  # another process made it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        log.warning("pxpool: cannot make %s for the Jupyter sidebar: %s", path, exc)
        return None
    return path if (path / MARKER).is_file() else None
