"""Precedence of profile layers: keyword > ``PXPOOL_*`` environment variable > user
profile > built-in, table by table and key by key; user-only profiles; and what
list_profiles reports about each layer (origin, path, description).

Each test runs with an empty temporary user profile directory and without any
``PXPOOL_*`` setting from the host environment (the ``user_dir`` fixture).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pxpool.profile import ProfileInfo, list_profiles, load_profile

from .profile_helpers import BUILTIN_NAMES, builtin_path, write_profile

pytestmark = pytest.mark.usefixtures("user_dir")


# --------------------------------------------------------------------------------------
# Precedence: keyword > PXPOOL_* environment variable > user profile > built-in
# --------------------------------------------------------------------------------------


def test_user_profile_overrides_the_builtin(user_dir: Path) -> None:
    path = write_profile(user_dir, "local", "engines = 3\n")
    profile = load_profile("local")
    assert profile.engines == 3
    assert profile.source == str(path)


def test_user_profile_over_a_builtin_keeps_the_builtins_other_keys(user_dir: Path) -> None:
    write_profile(user_dir, "local", "engines = 3\n")
    raw = tomllib.loads(builtin_path("local").read_text())
    profile = load_profile("local")
    assert profile.description == raw["description"]
    assert profile.controller.heartbeat_ms == 100
    assert profile.engine.env["OMP_NUM_THREADS"] == "1"
    assert profile.timeouts.start == 60.0


def test_user_table_key_overrides_only_that_key_of_the_builtin_table(user_dir: Path) -> None:
    write_profile(
        user_dir,
        "slurm",
        """\
        [slurm]
        walltime = "02:30:00"
        account = "proj42"
        """,
    )
    batch = load_profile("slurm").batch
    assert batch.walltime_seconds == 2 * 3600 + 30 * 60
    assert batch.account == "proj42"
    assert batch.launcher == "srun"  # from the built-in
    assert batch.engines_per_job == 1


def test_env_var_overrides_the_user_profile(
    user_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profile(user_dir, "local", "engines = 3\n")
    monkeypatch.setenv("PXPOOL_ENGINES", "5")
    assert load_profile("local").engines == 5


def test_env_var_overrides_the_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPOOL_HEARTBEAT_MS", "250")
    assert load_profile("local").controller.heartbeat_ms == 250


def test_keyword_overrides_the_env_var(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_profile(user_dir, "local", "engines = 3\n")
    monkeypatch.setenv("PXPOOL_ENGINES", "5")
    assert load_profile("local", engines=7).engines == 7


def test_env_vars_reach_nested_settings_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPOOL_START_TIMEOUT", "12.5")
    monkeypatch.setenv("PXPOOL_ENV", "A=1, B = 2")
    monkeypatch.setenv("PXPOOL_ENGINE_ARGS", "--log-level=DEBUG,--quiet")
    monkeypatch.setenv("PXPOOL_WALLTIME", "00:10:00")
    monkeypatch.setenv("PXPOOL_MEMORY", "512M")
    profile = load_profile("slurm")
    assert profile.timeouts.start == 12.5
    assert profile.engine.env == {"A": "1", "B": "2"}
    assert profile.engine.args == ("--log-level=DEBUG", "--quiet")
    assert profile.batch.walltime_seconds == 600
    assert profile.batch.memory_bytes == 512 * 1024**2


def test_provider_env_var_applies_before_batch_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    # "partition" sorts before "provider": the loader must still apply provider first.
    monkeypatch.setenv("PXPOOL_PARTITION", "debug")
    monkeypatch.setenv("PXPOOL_PROVIDER", "slurm")
    monkeypatch.setenv("PXPOOL_ENGINES", "2")
    profile = load_profile("local")
    assert profile.provider == "slurm"
    assert profile.batch.queue == "debug"


def test_provider_keyword_applies_before_batch_keywords() -> None:
    profile = load_profile("local", partition="debug", engines=2, provider="slurm")
    assert profile.provider == "slurm"
    assert profile.batch.queue == "debug"


def test_pxpool_env_vars_that_are_not_settings_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PXPOOL_NOT_A_SETTING", "x")
    assert load_profile("local") == load_profile("local")


def test_user_only_profile_loads_without_a_builtin(user_dir: Path) -> None:
    path = write_profile(
        user_dir,
        "mycluster",
        """\
        description = "my PBS"
        provider = "pbs"
        engines = 2
        [pbs]
        queue = "short"
        walltime = "1-02:03:04"
        memory = "512M"
        """,
    )
    profile = load_profile("mycluster")
    assert profile.name == "mycluster"
    assert profile.source == str(path)
    assert profile.provider == "pbs"
    assert profile.engines == 2
    assert profile.batch.queue == "short"
    assert profile.batch.walltime_seconds == 93784
    assert profile.batch.memory_bytes == 512 * 1024**2
    assert profile.controller.heartbeat_ms == 500  # dataclass default, no built-in below


def test_list_profiles_reports_origins_and_paths(user_dir: Path) -> None:
    layered = write_profile(user_dir, "local", "engines = 3\n")
    own = write_profile(user_dir, "mine", 'description = "mine"\nengines = 1\n')
    infos = {i.name: i for i in list_profiles()}
    assert sorted(infos) == sorted((*BUILTIN_NAMES, "mine"))
    assert infos["local"].origin == "user over built-in"
    assert infos["local"].path == str(layered)
    assert infos["mine"] == ProfileInfo("mine", "user", str(own), "mine")
    assert infos["slurm"].origin == "built-in"
    assert infos["slurm"].path == str(builtin_path("slurm"))


def test_list_profiles_sorts_by_name(user_dir: Path) -> None:
    write_profile(user_dir, "aaa", "")
    write_profile(user_dir, "zzz", "")
    names = [i.name for i in list_profiles()]
    assert names == sorted(names)
    assert names[0] == "aaa" and names[-1] == "zzz"


def test_list_profiles_describes_an_unreadable_profile_instead_of_raising(
    user_dir: Path,
) -> None:
    write_profile(user_dir, "broken", 'engines = 2\nprovider = "local\n')
    info = {i.name: i for i in list_profiles()}["broken"]
    assert info.origin == "user"
    assert info.description.startswith("(cannot be read: ")
    assert "invalid TOML at line 2" in info.description


def test_list_profiles_description_of_a_layered_profile_matches_load_profile(
    user_dir: Path,
) -> None:
    write_profile(user_dir, "local", "engines = 3\n")
    info = {i.name: i for i in list_profiles()}["local"]
    assert info.description == load_profile("local").description
