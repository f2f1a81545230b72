"""Environment check: how each engine differs from the client, before a task fails on it.

Two parts:

- ``pool.doctor()`` (and ``pxpool doctor NAME``) asks every engine, in one apply, for its
  Python version, interpreter path, ``sys.prefix``, platform, working directory,
  selected environment variables and the versions of the packages imported in the
  client, and returns one row per difference (``engine_id, check, client, engine``).
- At pool start, and whenever engines join later (an engine hook), pxpool compares the
  Python minor version and the versions of ipyparallel, pxpool and cloudpickle, and
  emits one :class:`EnvironmentMismatchWarning` per difference. Functions and objects
  pickled by one version may not unpickle under another; the warning comes before the
  first task fails with an obscure error.

The function that gathers facts on an engine is self-contained (it imports what it
needs inside itself) and is sent under a private module name, so ipyparallel does not
import ``pxpool`` to run it: an engine without pxpool is reported as such instead of
failing the check. The client runs the same function, so both sides use one rule for
versions.
"""

from __future__ import annotations

import logging
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import EnvironmentCheckError, PxpoolError

if TYPE_CHECKING:
    import pandas

    from ._core.core import PoolCore

__all__ = ["doctor_frame", "EnvironmentMismatchWarning", "warn_on_version_mismatch"]

log = logging.getLogger("pxpool.doctor")
DOCTOR_TIMEOUT = 30.0  # seconds for every engine to report its facts
VERSION_CHECK_TIMEOUT = 10.0
DEFAULT_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "OMP_NUM_THREADS")
START_PACKAGES = ("ipyparallel", "pxpool", "cloudpickle")
COLUMNS = ["engine_id", "check", "client", "engine"]
MISSING, UNSET = "missing", "(unset)"
SHOW_WIDTH = 70  # longest cell `show=True` prints; the DataFrame keeps whole values


class EnvironmentMismatchWarning(UserWarning):
    """An engine runs another Python minor version or another ipyparallel, pxpool or
    cloudpickle version than the client; ``pool.doctor()`` lists every difference."""


# What runs on an engine: _facts and the helpers it calls, each self-contained (it
# imports what it needs inside itself and reads no module global). They are sent without
# their module (see _portable), so a helper travels as a keyword default of its caller,
# which _portable copies along; they are module functions, not nested ones, to stay small.
OwnersCache = list[Mapping[str, list[str]]]  # packages_distributions(), read on first need


def _module_paths(name: str) -> list[str]:
    """Where module ``name`` is imported from (or would be); [] when it cannot be found."""
    import importlib.util
    import sys

    module = sys.modules.get(name)
    if module is not None:
        found = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []))]
    else:
        spec = importlib.util.find_spec(name)
        if spec is None:
            return []
        found = [spec.origin, *list(spec.submodule_search_locations or [])]
    return [str(p) for p in found if p and p not in ("built-in", "frozen")] or ["?"]


def _metadata_version(name: str, paths: list[str], owners: OwnersCache) -> str | None:
    """The installed distribution's version, if that distribution owns the module
    that imports (a directory earlier on sys.path can shadow it)."""
    import importlib.metadata as metadata
    from pathlib import Path

    try:
        dists = [metadata.distribution(name)]
    except metadata.PackageNotFoundError:
        if not owners:
            owners.append(metadata.packages_distributions())
        dists = []
        for dist_name in owners[0].get(name, []):
            try:
                dists.append(metadata.distribution(dist_name))
            except metadata.PackageNotFoundError:
                continue
    for dist in dists:
        base = Path(str(dist.locate_file(""))).resolve()
        for path in paths:
            resolved = Path(path).resolve()
            if resolved == base / name or base / name in resolved.parents:
                return str(dist.version)
            if resolved.parent == base and resolved.name.split(".")[0] == name:
                return str(dist.version)
    return None


def _version(
    name: str,
    owners: OwnersCache,
    *,
    module_paths: Callable[[str], list[str]] = _module_paths,
    metadata_version: Callable[[str, list[str], OwnersCache], str | None] = _metadata_version,
) -> str | None:
    """Module ``name``'s version: ``"missing"``, ``"import fails (...)"`` or None (none)."""
    import importlib
    import sys

    try:
        paths = module_paths(name)
    except (ImportError, ValueError):
        paths = []
    if not paths:
        return "missing"
    if name == "pxpool":  # its engine side (map runners) needs numpy: it must import
        try:
            importlib.import_module("pxpool._data.agent")
        except BaseException as exc:  # noqa: BLE001 - a broken package is a finding
            return f"import fails ({type(exc).__name__}: {exc})"
    found = metadata_version(name, paths, owners)
    if found is not None:
        return found
    module = sys.modules.get(name)
    if module is None:
        try:  # no metadata for it: its __version__ is the only answer
            module = importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - a broken package is a finding
            return f"import fails ({type(exc).__name__}: {exc})"
    value = getattr(module, "__version__", None)
    return value if isinstance(value, str) else None


def _facts(
    packages: list[str],
    env: list[str],
    *,
    version: Callable[[str, OwnersCache], str | None] = _version,
) -> dict[str, Any]:
    """Runs on an engine (and on the client): Python, prefix, platform, cwd, variables
    and package versions. Self-contained: it is sent without its module."""
    import os
    import platform
    import sys

    owners: OwnersCache = []
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "platform": f"{sys.platform} {platform.machine()}",
        "cwd": os.getcwd(),
        "env": {name: os.environ.get(name) for name in env},
        "packages": {name: version(name, owners) for name in packages},
    }


def _portable(f: Callable[..., Any]) -> types.FunctionType:
    """A copy of ``f`` that ipyparallel runs without importing its module (names
    starting with ``__`` are not imported; see ``CannedFunction.get_object``). The
    functions among its keyword defaults (its helpers) are copied the same way."""
    if not isinstance(f, types.FunctionType):
        raise TypeError(f"not a plain function: {f!r}")
    copy = types.FunctionType(f.__code__, {}, f.__name__, f.__defaults__, f.__closure__)
    if f.__kwdefaults__:
        copy.__kwdefaults__ = {
            key: _portable(value) if isinstance(value, types.FunctionType) else value
            for key, value in f.__kwdefaults__.items()
        }
    copy.__module__ = "__pxpool__"
    return copy


def client_packages(extra: Iterable[str] = ()) -> dict[str, str | None]:
    """Versions of the top-level, non-standard-library packages imported here that
    have a version, plus the ``extra`` names (``"missing"`` when not importable)."""
    names = sorted(
        name
        for name, module in list(sys.modules.items())
        if "." not in name
        and not name.startswith("_")
        and name not in sys.stdlib_module_names
        and module is not None
    )
    versions = _facts(names, [])["packages"]
    found = {name: v for name, v in versions.items() if v is not None}
    extra = [name for name in extra if name not in found]
    found.update(_facts(extra, [])["packages"])
    return found


def gather(
    pool: PoolCore,
    engine_ids: Sequence[int],
    packages: Sequence[str],
    env: Sequence[str],
    timeout: float,
) -> dict[int, dict[str, Any]]:
    """Facts from ``engine_ids`` in one apply; a PxpoolError names engines that fail."""
    client = pool.live_client()
    ids = list(engine_ids)
    if not ids:
        return {}
    ar = client.direct_view(ids).apply_async(_portable(_facts), list(packages), list(env))
    try:
        replies = ar.get(timeout=timeout)
    except TimeoutError:
        silent = [i for i, m in zip(ids, ar.msg_ids, strict=True) if m in client.outstanding]
        raise EnvironmentCheckError(
            f"Engines {silent} of pool {pool.name!r} did not report their environment within "
            f"{timeout:g}s (busy or hung); see `pxpool status {pool.name}`, then retry or "
            "restart them with `pool.restart_sync(engine_id)`."
        ) from None
    except Exception as exc:  # RemoteError, CompositeError, EngineError
        raise EnvironmentCheckError(
            f"Checking the environment of engines {ids} of pool {pool.name!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return dict(zip(ids, replies, strict=True))


def _path_entries(value: str | None, skip: set[str]) -> str | None:
    """PYTHONPATH without the entries on the client's sys.path: local engines get the
    client's path on purpose (so they unpickle the same modules); that is no difference."""
    if value is None:
        return None
    kept = [p for p in value.split(os.pathsep) if p and os.path.abspath(p) not in skip]
    return os.pathsep.join(kept) or None


def differences(
    client: dict[str, Any], engines: dict[int, dict[str, Any]], env: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per (engine, check) where the engine differs from the client."""
    on_path = {os.path.abspath(p) for p in sys.path if p}
    rows = []
    for engine_id, facts in sorted(engines.items()):
        pairs: list[tuple[str, Any, Any]] = [
            (check, client[check], facts.get(check))
            for check in ("python", "executable", "prefix", "platform", "cwd")
        ]
        engine_packages = facts.get("packages", {})
        for name, wanted in sorted(client["packages"].items()):
            pairs.append((f"package {name}", wanted, engine_packages.get(name, MISSING)))
        for name in env:
            ours, theirs = client["env"].get(name), facts.get("env", {}).get(name)
            if name == "PYTHONPATH":
                ours, theirs = _path_entries(ours, on_path), _path_entries(theirs, on_path)
            pairs.append((f"env {name}", ours, theirs))
        for check, ours, theirs in pairs:
            if ours != theirs:
                rows.append(
                    {
                        "engine_id": engine_id,
                        "check": check,
                        "client": UNSET if ours is None else str(ours),
                        "engine": UNSET if theirs is None else str(theirs),
                    }
                )
    return rows


def format_differences(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table, long values cut to fit a notebook cell."""
    from .health import format_table

    if not rows:
        return "no differences"

    def cut(value: Any) -> str:
        text = str(value)
        return text if len(text) <= SHOW_WIDTH else text[: SHOW_WIDTH - 3] + "..."

    return format_table([{c: cut(row[c]) for c in COLUMNS} for row in rows], COLUMNS)


def diagnose(
    pool: PoolCore,
    packages: Sequence[str] = (),
    env: Sequence[str] = DEFAULT_ENV,
    timeout: float = DOCTOR_TIMEOUT,
) -> list[dict[str, Any]]:
    """Rows of differences between this client and every engine of ``pool``."""
    env = list(env)
    client = _facts([], env)
    # the start check's packages too, also when this process has not imported them
    client["packages"] = client_packages([*START_PACKAGES, *packages])
    engines = gather(pool, pool.registered_ids(), list(client["packages"]), env, timeout)
    return differences(client, engines, env)


def doctor_frame(
    pool: PoolCore,
    packages: Sequence[str] = (),
    env: Sequence[str] = DEFAULT_ENV,
    show: bool = True,
) -> pandas.DataFrame:
    """``pool.doctor()``: compare every engine with this client; one row per difference.

    Checks: ``python`` (version), ``executable`` (the interpreter's path),
    ``prefix`` (``sys.prefix``: another venv or conda env), ``platform``, ``cwd``,
    ``package NAME`` for the packages imported here, ipyparallel, pxpool and
    cloudpickle, and those in ``packages`` (``missing`` when an engine cannot import
    one), and ``env NAME`` for the variables in ``env``. With ``show``, prints the table
    (or ``no differences``). Columns: ``engine_id, check, client, engine``.
    """
    import pandas

    if isinstance(packages, str) or isinstance(env, str):
        raise TypeError("doctor(packages=..., env=...) take lists of names, not one string")
    rows = diagnose(pool, packages, env)
    if show:
        print(format_differences(rows))
    return pandas.DataFrame(rows, columns=COLUMNS)


def version_mismatches(client: dict[str, Any], engines: dict[int, dict[str, Any]]) -> list[str]:
    """Warning lines: engines grouped by what they run, for the start check."""

    def minor(version: str | None) -> str:
        return ".".join(str(version).split(".")[:2])

    groups: dict[tuple[str, str, str], list[int]] = {}
    for engine_id, facts in sorted(engines.items()):
        if minor(facts.get("python")) != minor(client["python"]):
            key = ("Python", minor(facts.get("python")), minor(client["python"]))
            groups.setdefault(key, []).append(engine_id)
        for name in START_PACKAGES:
            ours = client["packages"].get(name)
            theirs = facts.get("packages", {}).get(name, MISSING)
            if ours != theirs:
                groups.setdefault((name, str(theirs), str(ours)), []).append(engine_id)
    lines = []
    for (what, theirs, ours), ids in groups.items():
        which = f"engine {ids[0]}" if len(ids) == 1 else f"engines {ids}"
        if theirs == MISSING or theirs.startswith("import fails"):
            found = f"cannot import {what}" + (f" ({theirs[14:-1]})" if theirs != MISSING else "")
        else:
            found = f"run{'s' if len(ids) == 1 else ''} {what} {theirs}"
        lines.append(
            f"pxpool: {which} {found}, this client runs {what} {ours}; "
            "objects may not unpickle alike. See `pool.doctor()`."
        )
    return lines


def warn_on_version_mismatch(pool: PoolCore, engine_ids: list[int]) -> None:
    """Engine hook: one :class:`EnvironmentMismatchWarning` per difference in Python
    minor version or ipyparallel/pxpool/cloudpickle version; one apply, bounded."""
    client = _facts(list(START_PACKAGES), [])
    try:
        engines = gather(pool, engine_ids, START_PACKAGES, [], VERSION_CHECK_TIMEOUT)
    except PxpoolError as exc:
        log.warning("pxpool: could not compare versions with engines %s: %s", engine_ids, exc)
        return
    for line in version_mismatches(client, engines):
        warnings.warn(line, EnvironmentMismatchWarning, stacklevel=2)
