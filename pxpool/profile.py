"""Profiles: TOML files that say where engines run and how many, validated into
frozen dataclasses.

Precedence, highest first: keyword arguments > ``PXPOOL_*`` environment variables >
user profile (``$PXPOOL_PROFILE_DIR`` or ``~/.config/pxpool/profiles/NAME.toml``) >
built-in profile (``profiles/NAME.toml``, shipped in the wheel). A user profile with a
built-in's name is laid over it key by key, so it only needs the keys it changes.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._profile import schema
from ._profile.kubernetes import kubernetes_settings
from ._profile.settings import (
    BatchSettings,
    ControllerSettings,
    EngineSettings,
    MPISettings,
    Profile,
    ProfileInfo,
    SSHHost,
    SSHSettings,
    Timeouts,
)
from .errors import ProfileError, ProfileValidationError, UnknownProfileError

__all__ = [
    "Profile",
    "ControllerSettings",
    "EngineSettings",
    "Timeouts",
    "SSHHost",
    "SSHSettings",
    "BatchSettings",
    "MPISettings",
    "ProfileInfo",
    "load_profile",
    "list_profiles",
    "builtin_profile_dir",
    "user_profile_dir",
]


def builtin_profile_dir() -> Path:
    """In a wheel the profiles sit inside the package; in a checkout, at its root."""
    packaged = Path(__file__).parent / "_builtin_profiles"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "profiles"


def user_profile_dir() -> Path:
    if os.environ.get("PXPOOL_PROFILE_DIR"):
        return Path(os.environ["PXPOOL_PROFILE_DIR"]).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "pxpool" / "profiles"


def _names_in(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.toml")} if folder.is_dir() else set()


def list_profiles() -> list[ProfileInfo]:
    """Every profile this process can load, with where it comes from."""
    builtin, user = _names_in(builtin_profile_dir()), _names_in(user_profile_dir())
    found = []
    for name in sorted(builtin | user):
        path = (user_profile_dir() if name in user else builtin_profile_dir()) / f"{name}.toml"
        origin = (
            "user over built-in"
            if name in user and name in builtin
            else ("user" if name in user else "built-in")
        )
        try:  # layered like load_profile: the user file's description, else the built-in's
            description = ""
            for folder, names in ((builtin_profile_dir(), builtin), (user_profile_dir(), user)):
                if name in names:
                    description = str(
                        _read_toml(folder / f"{name}.toml").get("description", description)
                    )
        except ProfileError as exc:
            description = f"(cannot be read: {exc})"
        found.append(ProfileInfo(name, origin, str(path), description))
    return found


_PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        position = _TOML_POSITION.search(str(exc))
        where = f"line {position[1]}, column {position[2]}" if position else "unknown position"
        reason = _TOML_POSITION.sub("", str(exc)).strip()
        raise ProfileError(
            f"{path}: invalid TOML at {where}: {reason}. Fix the file and load it again."
        ) from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.strerror}") from None


class _Layers:
    """Raw settings merged from several sources, remembering each key's source."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}
        self.origins: dict[tuple[str, str], str] = {}

    def add_file(self, path: Path) -> None:
        source = str(path)
        for top_key, value in _read_toml(path).items():
            if top_key in schema.SECTIONS:
                if not isinstance(value, dict):
                    raise ProfileValidationError(source, top_key, "must be a table like [engine]")
                for key, inner in value.items():
                    self._set_checked(top_key, key, inner, source)
            else:
                self._set_checked("", top_key, value, source)

    def _set_checked(self, section: str, key: str, value: Any, source: str) -> None:
        table = "batch" if section in schema.BATCH_PROVIDERS else section
        known = schema.keys_in(table)
        if key not in known:
            where = f"{section}.{key}" if section else key
            allowed = tuple(known) + (() if section else tuple(f"[{s}]" for s in schema.SECTIONS))
            raise ProfileValidationError(
                source, where, f"unknown key; {schema.did_you_mean(key, allowed)}"
            )
        self._store(section, key, value, source)

    def _store(self, section: str, key: str, value: Any, source: str) -> None:
        """Set one value; ``partition`` and ``queue`` name the same SLURM setting, so a
        later layer's one replaces an earlier layer's other, while one layer giving
        both is a mistake."""
        alias = {"partition": "queue", "queue": "partition"}.get(key)
        if section == "slurm" and alias is not None and (section, alias) in self.values:
            if _layer_of(self.origins[(section, alias)]) == _layer_of(source):
                raise ProfileValidationError(
                    source, "slurm.partition", "set either partition or queue, not both"
                )
            del self.values[(section, alias)], self.origins[(section, alias)]
        self.values[(section, key)] = value
        self.origins[(section, key)] = source

    def add_flat(self, flat: str, value: Any, source: str) -> None:
        key = schema.BY_FLAT.get(flat)
        if key is None:
            raise ProfileValidationError(
                source, flat, f"unknown setting; {schema.did_you_mean(flat, tuple(schema.BY_FLAT))}"
            )
        section = self.provider if key.section == "batch" else key.section
        if key.section == "batch" and section not in schema.BATCH_PROVIDERS:
            raise ProfileValidationError(
                source,
                flat,
                f"applies to batch profiles ({', '.join(schema.BATCH_PROVIDERS)}); "
                f"this profile's provider is {section!r}",
            )
        if flat == "provider":  # checked now: the batch keys that follow depend on it
            schema.check_value(key, value, source, flat)
        self._store(section, key.name, value, source)

    @property
    def provider(self) -> str:
        return str(self.values.get(("", "provider"), "local"))


def _environment_overrides() -> dict[str, str]:
    return {
        flat: os.environ[f"PXPOOL_{flat.upper()}"]
        for flat in schema.BY_FLAT
        if f"PXPOOL_{flat.upper()}" in os.environ
    }


def load_profile(name: str = "local", /, **overrides: Any) -> Profile:
    """Load profile ``name`` and apply environment and keyword overrides.

    Keyword names are the flat setting names (``engines``, ``python``, ``partition``,
    ``walltime``, ``start_timeout``, ...); a string value for a number, list or table
    setting is read as on a command line (``"4"``, ``"a,b"``, ``"K=V,K2=V2"``).
    """
    if not _PROFILE_NAME.match(name):
        raise ProfileError(
            f"Invalid profile name {name!r}: use letters, digits, '_', '-' and '.', not "
            "starting with '.' (a profile is a file NAME.toml in a profile folder, not a path)."
        )
    builtin = builtin_profile_dir() / f"{name}.toml"
    user = user_profile_dir() / f"{name}.toml"
    if not builtin.is_file() and not user.is_file():
        known = _names_in(builtin_profile_dir()) | _names_in(user_profile_dir())
        raise UnknownProfileError(
            name, known, [str(builtin_profile_dir()), str(user_profile_dir())]
        )
    layers = _Layers()
    for path in (builtin, user):
        if path.is_file():
            layers.add_file(path)
    # provider first (environment, then keyword): which table the batch keys of
    # every layer belong to depends on the provider that finally applies
    env = _environment_overrides()
    if "provider" in env:
        _add_env(layers, "provider", env.pop("provider"))
    overrides = dict(overrides)
    if "provider" in overrides:
        _add_keyword(layers, "provider", overrides.pop("provider"))
    for flat, text in sorted(env.items()):
        _add_env(layers, flat, text)
    for flat, value in overrides.items():
        _add_keyword(layers, flat, value)
    return _build(name, layers, str(user if user.is_file() else builtin))


def _add_env(layers: _Layers, flat: str, text: str) -> None:
    source = f"environment variable PXPOOL_{flat.upper()}"
    layers.add_flat(flat, schema.coerce_text(flat, text, source), source)


def _add_keyword(layers: _Layers, flat: str, value: Any) -> None:
    source = f"keyword argument {flat}="
    if isinstance(value, str) and flat in schema.BY_FLAT and schema.BY_FLAT[flat].kind != "str":
        value = schema.coerce_text(flat, value, source)
    layers.add_flat(flat, value, source)


def _layer_of(source: str) -> str:
    """The layer a value came from: a file path, the environment, or the keywords."""
    for prefix in ("environment variable", "keyword argument"):
        if source.startswith(prefix):
            return prefix
    return source


def _hosts(raw: tuple[Any, ...], source: str) -> tuple[SSHHost, ...]:
    hosts = []
    for index, entry in enumerate(raw):
        where = f"ssh.hosts[{index}]"
        if isinstance(entry, str):
            fields: dict[str, Any] = schema.parse_host_text(entry, source, where)
        elif isinstance(entry, Mapping):
            unknown = [k for k in entry if k not in schema.HOST_KEYS]
            if unknown:
                raise ProfileValidationError(
                    source,
                    f"{where}.{unknown[0]}",
                    f"unknown key; {schema.did_you_mean(unknown[0], schema.HOST_KEYS)}",
                )
            if not isinstance(entry.get("host"), str) or not entry["host"]:
                raise ProfileValidationError(
                    source, f"{where}.host", 'each host table needs host = "name"'
                )
            fields = dict(entry)
        else:
            raise ProfileValidationError(
                source, where, f"must be a string like 'user@node:22' or a table; got {entry!r}"
            )
        for number in ("port", "engines"):
            value = fields.get(number)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ProfileValidationError(
                    source, f"{where}.{number}", f"must be a non-negative integer; got {value!r}"
                )
        if "activate" in fields:
            fields["activate"] = tuple(
                schema.check_value(
                    schema.Key("ssh", "activate", "list", "activate"),
                    fields["activate"],
                    source,
                    f"{where}.activate",
                )
            )
        hosts.append(SSHHost(**fields))
    return tuple(hosts)


def _batch(provider: str, values: dict[str, Any], origins: dict[str, str]) -> BatchSettings:
    for key, owners in schema.BATCH_KEY_OWNERS.items():
        if key in values and provider not in owners:
            raise ProfileValidationError(
                origins[key],
                f"{provider}.{key}",
                f"is a {'/'.join(owners)} setting; {provider} profiles use "
                + ("queue" if key == "partition" else "directives"),
            )
    if "partition" in values:  # the loader kept only one of the two
        values["queue"] = values.pop("partition")
    if values.get("walltime"):
        values["walltime_seconds"] = schema.parse_walltime(
            values["walltime"], origins["walltime"], f"{provider}.walltime"
        )
    if values.get("memory"):
        values["memory_bytes"] = schema.parse_memory(
            values["memory"], origins["memory"], f"{provider}.memory"
        )
    return BatchSettings(**values)


def _build(name: str, layers: _Layers, source: str) -> Profile:
    checked: dict[tuple[str, str], Any] = {}
    for (table_name, key), value in layers.values.items():
        table = "batch" if table_name in schema.BATCH_PROVIDERS else table_name
        where = f"{table_name}.{key}" if table_name else key
        spec = schema.keys_in(table)[key]
        checked[(table_name, key)] = schema.check_value(
            spec, value, layers.origins[(table_name, key)], where
        )

    def section(name: str) -> dict[str, Any]:
        return {k: v for (s, k), v in checked.items() if s == name}

    provider = str(checked.get(("", "provider"), "local"))
    ssh_values = section("ssh")
    if "hosts" in ssh_values:
        ssh_values["hosts"] = _hosts(ssh_values["hosts"], layers.origins[("ssh", "hosts")])
    batch_origins = {k: o for (s, k), o in layers.origins.items() if s == provider}
    batch = (
        _batch(provider, section(provider), batch_origins)
        if provider in schema.BATCH_PROVIDERS
        else BatchSettings()
    )
    profile = Profile(
        name=name,
        source=source,
        controller=ControllerSettings(**section("controller")),
        engine=_engine_settings(
            section("engine"), {k: o for (s, k), o in layers.origins.items() if s == "engine"}
        ),
        timeouts=Timeouts(**section("timeouts")),
        ssh=SSHSettings(**ssh_values),
        batch=batch,
        mpi=MPISettings(**section("mpi")),
        kubernetes=kubernetes_settings(
            section("kubernetes"),
            {k: o for (s, k), o in layers.origins.items() if s == "kubernetes"},
        ),
        **section(""),
    )
    _check_provider_needs(profile, layers)
    return profile


def _engine_settings(values: dict[str, Any], origins: dict[str, str]) -> EngineSettings:
    """Engine settings with a read-only ``env``, so a frozen profile stays unchanged,
    and the sizes read into bytes ("0" memory_limit: none; "0" max_result_size: no limit)."""
    if "env" in values:
        values["env"] = MappingProxyType(dict(values["env"]))
    if values.get("memory_limit"):
        limit = schema.parse_memory(
            values["memory_limit"], origins["memory_limit"], "engine.memory_limit"
        )
        values["memory_limit_bytes"] = limit or None
    if "max_result_size" in values:
        values["max_result_bytes"] = schema.parse_memory(
            values["max_result_size"], origins["max_result_size"], "engine.max_result_size"
        )
    return EngineSettings(**values)


def _check_provider_needs(profile: Profile, layers: _Layers) -> None:
    """Cross-key rules: what each provider cannot start without."""
    origin = layers.origins.get(("", "engines"), profile.source)
    if profile.controller.location == "job" and profile.provider not in schema.BATCH_PROVIDERS:
        raise ProfileValidationError(
            layers.origins.get(("controller", "location"), profile.source),
            "controller.location",
            f'"job" runs the controller in a batch job, which provider {profile.provider!r} '
            f"does not submit; use it with {', '.join(schema.BATCH_PROVIDERS)}, or set "
            'location = "local"',
        )
    if profile.provider == "ssh":
        if not profile.ssh.hosts:
            raise ProfileValidationError(
                layers.origins.get(("ssh", "hosts"), profile.source),
                "ssh.hosts",
                'an ssh profile needs at least one host; set hosts = ["node1", "user@node2:2222"] '
                "or pass hosts=[...] to Pool.from_profile",
            )
    elif profile.provider != "local" and profile.engines < 1:
        raise ProfileValidationError(
            origin,
            "engines",
            f"{profile.provider} profiles need engines >= 1; got {profile.engines}",
        )
