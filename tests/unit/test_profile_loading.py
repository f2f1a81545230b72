"""Loading profiles: the built-in profiles and the values of their files, where user
profiles are looked for, the defaults a profile leaves unset, and the frozen results that
load_profile and list_profiles return.

Each test runs with an empty temporary user profile directory and without any
``PXPOOL_*`` setting from the host environment (the ``user_dir`` fixture).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pxpool.profile import (
    BatchSettings,
    Profile,
    ProfileInfo,
    SSHHost,
    builtin_profile_dir,
    list_profiles,
    load_profile,
    user_profile_dir,
)

from .profile_helpers import BUILTIN_NAMES, builtin_path, load_builtin

pytestmark = pytest.mark.usefixtures("user_dir")


# --------------------------------------------------------------------------------------
# Built-in profiles
# --------------------------------------------------------------------------------------


def test_builtin_profile_dir_holds_exactly_the_documented_profiles() -> None:
    assert sorted(p.stem for p in builtin_profile_dir().glob("*.toml")) == list(BUILTIN_NAMES)


def test_user_profile_dir_is_pxpool_profile_dir(user_dir: Path) -> None:
    assert user_profile_dir() == user_dir


def test_user_profile_dir_falls_back_to_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PXPOOL_PROFILE_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert user_profile_dir() == tmp_path / "cfg" / "pxpool" / "profiles"


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_profile_loads_with_the_values_of_its_file(name: str) -> None:
    raw = tomllib.loads(builtin_path(name).read_text())
    profile = load_builtin(name)
    assert isinstance(profile, Profile)
    assert profile.name == name
    assert profile.provider == raw["provider"] == name
    assert profile.engines == raw["engines"]
    assert profile.description == raw["description"]
    assert profile.source == str(builtin_path(name))
    assert profile.timeouts.start == float(raw["timeouts"]["start"])


def test_local_builtin_has_one_engine_per_core_loopback_and_single_threaded_blas() -> None:
    profile = load_profile("local")
    assert profile.provider == "local"
    assert profile.engines == 0
    assert profile.controller.ip == "127.0.0.1"
    assert profile.controller.heartbeat_ms == 100
    assert profile.engine.python == ""
    assert profile.engine.work_dir == ""
    assert profile.engine.env == {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    assert profile.timeouts.start == 60.0
    assert profile.timeouts.stop == 15.0
    assert isinstance(profile.timeouts.start, float)
    assert profile.batch == BatchSettings()
    assert profile.ssh.hosts == ()


def test_local_is_the_default_profile_name() -> None:
    assert load_profile() == load_profile("local")


def test_slurm_builtin_runs_one_hour_jobs_started_with_srun() -> None:
    profile = load_profile("slurm")
    assert profile.provider == "slurm"
    assert profile.engines == 4
    assert profile.batch.walltime == "01:00:00"
    assert profile.batch.walltime_seconds == 3600
    assert profile.batch.launcher == "srun"
    assert profile.batch.queue == ""  # partition is stored as queue
    assert profile.batch.account == ""
    assert profile.batch.memory == ""
    assert profile.batch.memory_bytes is None
    assert profile.batch.cores_per_engine == 1
    assert profile.batch.engines_per_job == 1
    assert profile.batch.directives == ()
    assert profile.engine.prologue == ()
    assert profile.timeouts.start == 300.0
    assert profile.timeouts.submit == 30.0


@pytest.mark.parametrize("name", ["sge", "pbs", "lsf"])
def test_queue_builtins_run_one_hour_jobs_with_the_plain_launcher(name: str) -> None:
    batch = load_profile(name).batch
    assert batch.walltime_seconds == 3600
    assert batch.launcher == "plain"
    assert batch.queue == ""


def test_sge_builtin_uses_the_smp_parallel_environment() -> None:
    assert load_profile("sge").batch.pe == "smp"


def test_htcondor_builtin_has_no_walltime() -> None:
    batch = load_profile("htcondor").batch
    assert batch.walltime == ""
    assert batch.walltime_seconds is None
    assert batch.launcher == "plain"


def test_mpi_builtin_starts_four_ranks_with_mpiexec() -> None:
    profile = load_profile("mpi")
    assert profile.engines == 4
    assert profile.mpi.mpiexec == "mpiexec"
    assert profile.mpi.args == ()
    assert profile.engine.env == {"OMP_NUM_THREADS": "1"}
    assert profile.timeouts.start == 90.0


def test_ssh_builtin_uses_batch_mode_ssh_and_python3() -> None:
    profile = load_profile("ssh", hosts=["node1"])
    assert profile.engines == 0
    assert profile.ssh.command == "ssh"
    assert profile.ssh.options == ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10")
    assert profile.ssh.hosts == (SSHHost(host="node1"),)
    assert profile.engine.python == "python3"
    assert profile.engine.env == {"OMP_NUM_THREADS": "1"}
    assert profile.timeouts.start == 90.0


def test_list_profiles_reports_every_builtin_with_its_path_and_description() -> None:
    infos = list_profiles()
    assert [i.name for i in infos] == list(BUILTIN_NAMES)
    for info in infos:
        assert isinstance(info, ProfileInfo)
        assert info.origin == "built-in"
        assert info.path == str(builtin_path(info.name))
        assert info.description == load_builtin(info.name).description
        assert info.description


def test_restart_policy_and_encryption_have_safe_defaults() -> None:
    profile = load_profile("local")
    assert profile.restart == "never"
    # a crash loop is 5 failed replacements of one engine within 60 s (issue #18)
    assert (profile.max_restarts, profile.restart_window, profile.restart_backoff) == (5, 60.0, 0.1)
    assert profile.controller.encrypt is False


# --------------------------------------------------------------------------------------
# Frozen results and read-only settings
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("engines", 9),
        ("provider", "slurm"),
        ("controller.port", 1),
        ("engine.python", "x"),
        ("timeouts.start", 1.0),
        ("ssh.command", "x"),
        ("ssh.hosts.0.host", "x"),
        ("batch.queue", "x"),
        ("mpi.mpiexec", "x"),
    ],
)
def test_profile_and_nested_settings_are_frozen(path: str, value: Any) -> None:
    target: Any = load_profile("ssh", hosts=["node1"])
    *parents, attribute = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else getattr(target, part)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(target, attribute, value)


def test_list_profiles_entries_are_frozen() -> None:
    info = list_profiles()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.origin = "user"  # type: ignore[misc]


def test_engine_env_of_a_loaded_profile_is_read_only() -> None:
    profile = load_profile("local", env={"A": "1"})
    assert dict(profile.engine.env) == {"A": "1"}
    with pytest.raises(TypeError):
        profile.engine.env["B"] = "2"  # type: ignore[index]
