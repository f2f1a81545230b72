"""The per-user runtime directory where pools keep their connection files.

Layout: ``RUNTIME/NAME/`` is the pool's ipyparallel profile directory (``security/``
holds the connection files with the pool's key, ``log/`` the process output), and
``RUNTIME/NAME/pool.json`` records what pxpool needs to attach to or stop the pool.
Directories are 0700 and files 0600: the connection files carry the key that lets
anyone who reads them run code on the engines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import typing
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psutil

from ..errors import InvalidArgumentError, RuntimeDirectoryError
from ..profile import Profile, load_profile

__all__ = [
    "runtime_dir",
    "pool_dir",
    "write_private_json",
    "read_record",
    "record_names",
    "check_pool_name",
    "profile_record",
    "record_profile",
]

RECORD_FILE = "pool.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise RuntimeDirectoryError(
            f"Runtime directory {path} belongs to uid {info.st_uid}, not you (uid {os.getuid()}); "
            "set PXPOOL_RUNTIME_DIR to a directory of your own."
        )
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def runtime_dir() -> Path:
    """``$PXPOOL_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/pxpool``, else ``~/.local/state/pxpool``."""
    if os.environ.get("PXPOOL_RUNTIME_DIR"):
        base = Path(os.environ["PXPOOL_RUNTIME_DIR"]).expanduser().absolute()
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "pxpool"
    else:
        base = Path.home() / ".local" / "state" / "pxpool"
    return _private_dir(base)


def check_pool_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidArgumentError(
            f"Invalid pool name {name!r}: use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def pool_dir(name: str, create: bool = False) -> Path:
    path = runtime_dir() / check_pool_name(name)
    return _private_dir(path) if create else path


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only, atomically (readers never see half a file)."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(temporary, path)


def read_record(name: str) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads((pool_dir(name) / RECORD_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return record


def profile_record(profile: Profile) -> dict[str, Any]:
    """The pool's whole profile as JSON values, for its record: a pool stopped or
    attached from another process uses the settings it was started with (keyword
    and environment overrides too, such as ``hosts=[...]``), not the profile file."""
    return dict(_plain(profile))


def record_profile(record: dict[str, Any]) -> Profile:
    """The profile a record was written with (see :func:`profile_record`); records
    without one load the named profile."""
    settings = record.get("profile_settings")
    if not isinstance(settings, dict):
        return load_profile(record["profile"])
    return typing.cast(Profile, _rebuild(Profile, settings))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _rebuild(cls: type, data: dict[str, Any]) -> Any:
    """A profile dataclass from :func:`_plain` output; keys it does not know are skipped."""
    hints = typing.get_type_hints(cls)
    values = {
        f.name: _typed(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)
        if f.name in data
    }
    return cls(**values)


def _typed(hint: Any, value: Any) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _rebuild(hint, value)
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        item = typing.get_args(hint)[0]
        return tuple(_typed(item, v) for v in value)
    if origin is Mapping and isinstance(value, dict):
        return MappingProxyType(dict(value))
    return value


def record_names() -> list[str]:
    return sorted(p.parent.name for p in runtime_dir().glob(f"*/{RECORD_FILE}"))


def remove_pool_dir(name: str) -> None:
    shutil.rmtree(pool_dir(name), ignore_errors=True)


def controller_state(name: str) -> dict[str, Any] | None:
    """The controller's launcher state from the pool's cluster file: a ``pid`` for a
    local process; a ``job_id`` and ``provider_name`` (with its profile directory and
    cluster id) for a controller in a batch job. None without a record or a readable
    cluster file."""
    record = read_record(name)
    if record is None:
        return None
    try:
        with open(record["cluster_file"]) as handle:
            state = json.load(handle)["controller"]["state"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def controller_in_job(state: dict[str, Any]) -> bool:
    """Whether a controller state (:func:`controller_state`) is a controller running in
    a batch job (``controller.location = "job"``): its scheduler knows if it still runs,
    see :func:`pxpool.engines.controller_alive`."""
    return bool(state.get("job_id") and state.get("provider_name"))


def controller_process_alive(state: dict[str, Any]) -> bool:
    """Whether the local controller process a controller state names still runs."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def local_controller_alive(name: str) -> bool:
    """Whether the pool's controller runs as a process on this machine (from its
    cluster file). A controller in a batch job is not one: whether it still runs only
    its scheduler can say (:func:`pxpool.engines.controller_alive`)."""
    state = controller_state(name)
    return state is not None and not controller_in_job(state) and controller_process_alive(state)
