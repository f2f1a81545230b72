"""The profile schema: which keys exist, their types, and how text becomes values.

Kept apart from ``profile.py`` so the loader reads as a pipeline and the table of
keys reads as documentation. Every check raises ``ProfileValidationError`` naming
where the value came from, the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ProfileValidationError

PROVIDERS = ("local", "ssh", "slurm", "sge", "pbs", "lsf", "htcondor", "mpi", "kubernetes")
BATCH_PROVIDERS = ("slurm", "sge", "pbs", "lsf", "htcondor")
LAUNCHERS = ("plain", "srun", "mpiexec")
CONTROLLER_LOCATIONS = ("local", "job")
RESTART_POLICIES = ("never", "on-failure")
PULL_POLICIES = ("IfNotPresent", "Always", "Never")


@dataclass(frozen=True)
class Key:
    """One profile key: its TOML section, type, and the flat override name."""

    section: str  # "" for top level, "batch" for the provider's own table
    name: str
    kind: str  # str, int, float, duration, bool, list, table, hosts
    flat: str  # name used by keyword arguments, PXPOOL_* variables and `key=value`
    minimum: float | None = None
    choices: tuple[str, ...] = ()


KEYS: tuple[Key, ...] = (
    Key("", "description", "str", "description"),
    Key("", "provider", "str", "provider", choices=PROVIDERS),
    Key("", "engines", "int", "engines", minimum=0),
    Key("", "restart", "str", "restart", choices=RESTART_POLICIES),
    Key("", "max_restarts", "int", "max_restarts", minimum=0),
    Key("", "restart_backoff", "float", "restart_backoff", minimum=0),
    Key("", "restart_window", "duration", "restart_window", minimum=1),
    Key("", "idle_timeout", "duration", "idle_timeout", minimum=0),
    Key("controller", "ip", "str", "controller_ip"),
    Key("controller", "port", "int", "controller_port", minimum=0),
    Key("controller", "location", "str", "controller_location", choices=CONTROLLER_LOCATIONS),
    Key("controller", "heartbeat_ms", "int", "heartbeat_ms", minimum=50),
    Key("controller", "encrypt", "bool", "encrypt"),
    Key("controller", "args", "list", "controller_args"),
    Key("engine", "python", "str", "python"),
    Key("engine", "work_dir", "str", "work_dir"),
    Key("engine", "env", "table", "env"),
    Key("engine", "prologue", "list", "prologue"),
    Key("engine", "args", "list", "engine_args"),
    Key("engine", "memory_limit", "str", "memory_limit"),
    Key("engine", "max_result_size", "str", "max_result_size"),
    Key("engine", "fork_server", "bool", "fork_server"),
    Key("engine", "preload", "list", "preload"),
    Key("timeouts", "start", "float", "start_timeout", minimum=0.1),
    Key("timeouts", "stop", "float", "stop_timeout", minimum=0.1),
    Key("timeouts", "submit", "float", "submit_timeout", minimum=0.1),
    Key("ssh", "hosts", "hosts", "hosts"),
    Key("ssh", "identity_file", "str", "identity_file"),
    Key("ssh", "options", "list", "ssh_options"),
    Key("ssh", "command", "str", "ssh_command"),
    Key("ssh", "tunnel", "bool", "tunnel"),
    Key("batch", "partition", "str", "partition"),
    Key("batch", "queue", "str", "queue"),
    Key("batch", "account", "str", "account"),
    Key("batch", "walltime", "str", "walltime"),
    Key("batch", "memory", "str", "memory"),
    Key("batch", "cores_per_engine", "int", "cores_per_engine", minimum=1),
    Key("batch", "engines_per_job", "int", "engines_per_job", minimum=1),
    Key("batch", "directives", "list", "directives"),
    Key("batch", "launcher", "str", "launcher", choices=LAUNCHERS),
    Key("batch", "pe", "str", "pe"),
    Key("batch", "walltime_signal", "int", "walltime_signal", minimum=0),
    Key("batch", "replace_on_walltime", "bool", "replace_on_walltime"),
    Key("mpi", "mpiexec", "str", "mpiexec"),
    Key("mpi", "args", "list", "mpi_args"),
    # Kubernetes: flat names that would clash with a batch or engine key carry k8s_
    Key("kubernetes", "namespace", "str", "namespace"),
    Key("kubernetes", "image", "str", "image"),
    Key("kubernetes", "image_pull_policy", "str", "image_pull_policy", choices=PULL_POLICIES),
    Key("kubernetes", "cpu", "str", "cpu"),
    Key("kubernetes", "cpu_limit", "str", "cpu_limit"),
    Key("kubernetes", "memory", "str", "k8s_memory"),
    Key("kubernetes", "memory_limit", "str", "k8s_memory_limit"),
    Key("kubernetes", "gpus", "int", "gpus", minimum=0),
    Key("kubernetes", "node_selector", "table", "node_selector"),
    Key("kubernetes", "tolerations", "list", "tolerations"),
    Key("kubernetes", "service_account", "str", "service_account"),
    Key("kubernetes", "image_pull_secrets", "list", "image_pull_secrets"),
    Key("kubernetes", "walltime", "str", "k8s_walltime"),
    Key("kubernetes", "engines_per_pod", "int", "engines_per_pod", minimum=1),
    Key("kubernetes", "pods_per_job", "int", "pods_per_job", minimum=1),
    Key("kubernetes", "drain_time", "int", "drain_time", minimum=0),
    Key("kubernetes", "unschedulable_wait", "int", "unschedulable_wait", minimum=0),
)

SECTIONS = ("controller", "engine", "timeouts", "ssh", "mpi", "kubernetes", *BATCH_PROVIDERS)
BY_FLAT = {k.flat: k for k in KEYS}
HOST_KEYS = ("host", "port", "user", "engines", "python", "work_dir", "activate")
# The batch table is named after its provider; partition is SLURM's word for queue.
BATCH_KEY_OWNERS = {"partition": ("slurm",), "pe": ("sge",)}


def keys_in(section: str) -> dict[str, Key]:
    return {k.name: k for k in KEYS if k.section == section}


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}allowed: {', '.join(choices)}"


def check_value(key: Key, value: Any, source: str, where: str) -> Any:
    """Validate one raw value against its key; return it normalised (lists as tuples)."""
    check = _CHECKS.get(key.kind)
    if check is None:
        raise AssertionError(key.kind)
    return check(_Checked(key, value, source, where))


@dataclass(frozen=True)
class _Checked:
    """A raw value being checked, with what an error about it names."""

    key: Key
    value: Any
    source: str
    where: str

    @property
    def bad(self) -> str:
        return f"got {self.value!r} ({type(self.value).__name__})"

    def error(self, message: str) -> ProfileValidationError:
        return ProfileValidationError(self.source, self.where, message)


def _check_str(c: _Checked) -> Any:
    if not isinstance(c.value, str):
        raise c.error(f"must be a string; {c.bad}")
    if c.key.choices and c.value not in c.key.choices:
        raise c.error(f"unknown value {c.value!r}; {did_you_mean(c.value, c.key.choices)}")
    return c.value


def _check_bool(c: _Checked) -> Any:
    if not isinstance(c.value, bool):
        raise c.error(f"must be true or false; {c.bad}")
    return c.value


def _check_number(c: _Checked) -> Any:
    kind, value = c.key.kind, c.value
    number_ok = isinstance(value, int) or (kind == "float" and isinstance(value, float))
    if isinstance(value, bool) or not number_ok:
        article = "an integer" if kind == "int" else "a number"
        raise c.error(f"must be {article}; {c.bad}")
    if c.key.minimum is not None and value < c.key.minimum:
        raise c.error(f"must be >= {c.key.minimum:g}; got {value!r}")
    return float(value) if kind == "float" else value


def _check_duration(c: _Checked) -> Any:
    """Seconds, or text as walltimes are written."""
    value = c.value
    if isinstance(value, str):
        value = parse_duration(value, c.source, c.where)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise c.error(f"must be seconds or 'HH:MM:SS', e.g. 600 or '00:10:00'; {c.bad}")
    if value != value or value in (float("inf"), float("-inf")):
        raise c.error(f"must be a finite number; {c.bad}")
    if c.key.minimum is not None and value < c.key.minimum:
        raise c.error(f"must be >= {c.key.minimum:g} seconds; got {value!r}")
    return float(value)


def _check_list(c: _Checked) -> Any:
    value = c.value
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise c.error(f"must be a list of strings; {c.bad}")
    return tuple(value)


def _check_table(c: _Checked) -> Any:
    value = c.value
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise c.error(
            f'must be a table of string values, e.g. {{ OMP_NUM_THREADS = "1" }}; {c.bad}'
        )
    return dict(value)


def _check_hosts(c: _Checked) -> Any:
    if not isinstance(c.value, list | tuple):
        raise c.error(f'must be a list of hosts like ["node1", "user@node2:2222"]; {c.bad}')
    return tuple(c.value)


_CHECKS: dict[str, Callable[[_Checked], Any]] = {
    "str": _check_str,
    "bool": _check_bool,
    "int": _check_number,
    "float": _check_number,
    "duration": _check_duration,
    "list": _check_list,
    "table": _check_table,
    "hosts": _check_hosts,
}


_HOST_RE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>[^@:\s]+)(?::(?P<port>\d+))?$")


def parse_host_text(text: str, source: str, where: str) -> dict[str, Any]:
    """``[user@]host[:port]`` as written in a profile or on a command line."""
    match = _HOST_RE.match(text.strip())
    if not match:
        raise ProfileValidationError(
            source,
            where,
            f"cannot read host {text!r}; write it as 'host', 'user@host' or 'user@host:port'",
        )
    found: dict[str, Any] = {"host": match["host"]}
    if match["user"]:
        found["user"] = match["user"]
    if match["port"]:
        found["port"] = int(match["port"])
    return found


_WALLTIME_RE = re.compile(r"^(?:(?P<days>\d+)-)?(?P<h>\d{1,3}):(?P<m>\d{2})(?::(?P<s>\d{2}))?$")


def parse_walltime(text: str, source: str, where: str) -> int:
    """'HH:MM:SS', 'HH:MM' or 'D-HH:MM:SS' to seconds, as the batch systems write it."""
    match = _WALLTIME_RE.match(text.strip())
    if not match or int(match["m"]) >= 60 or int(match["s"] or 0) >= 60:
        raise ProfileValidationError(
            source,
            where,
            f"cannot read walltime {text!r}; write 'HH:MM:SS' or 'D-HH:MM:SS', "
            "e.g. '01:30:00' for 90 minutes",
        )
    days = int(match["days"] or 0)
    return ((days * 24 + int(match["h"])) * 60 + int(match["m"])) * 60 + int(match["s"] or 0)


def parse_duration(text: str, source: str, where: str) -> float:
    """'600' (seconds), 'HH:MM:SS', 'HH:MM' or 'D-HH:MM:SS' to seconds."""
    try:
        return float(text.strip())
    except ValueError:
        pass
    try:
        return float(parse_walltime(text, source, where))
    except ProfileValidationError:
        raise ProfileValidationError(
            source,
            where,
            f"cannot read duration {text!r}; write seconds or 'HH:MM:SS', "
            "e.g. 600 or '00:10:00' for 10 minutes",
        ) from None


_MEMORY_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?)(?:i?B)?$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_memory(text: str, source: str, where: str) -> int:
    """'4G', '512M', '1.5GB' to bytes (binary units, as SLURM and SGE read them)."""
    match = _MEMORY_RE.match(text.strip())
    if not match:
        raise ProfileValidationError(
            source,
            where,
            f"cannot read memory {text!r}; write a number with K, M, G or T, e.g. '4G'",
        )
    return int(float(match["n"]) * _MEMORY_UNITS[match["unit"].upper()])


def coerce_text(flat: str, text: str, source: str) -> Any:
    """Turn the text of an environment variable or ``key=value`` into a typed value.

    Lists are comma separated; tables are ``K=V,K2=V2``; hosts are comma separated.
    """
    key = BY_FLAT.get(flat)
    if key is None:
        raise ProfileValidationError(
            source, flat, f"unknown setting; {did_you_mean(flat, tuple(BY_FLAT))}"
        )
    text = text.strip()
    if key.kind in ("int", "float"):
        try:
            return int(text) if key.kind == "int" else float(text)
        except ValueError:
            raise ProfileValidationError(
                source,
                flat,
                f"must be {'an integer' if key.kind == 'int' else 'a number'}; got {text!r}",
            ) from None
    if key.kind == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ProfileValidationError(source, flat, f"must be true or false; got {text!r}")
    if key.kind in ("list", "hosts"):
        return [part.strip() for part in text.split(",") if part.strip()]
    if key.kind == "table":
        pairs: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise ProfileValidationError(
                    source,
                    flat,
                    f"cannot read {part!r}; write NAME=VALUE pairs separated by commas",
                )
            pairs[name.strip()] = value.strip()
        return pairs
    return text
