"""Profiles load from TOML into frozen dataclasses, layered and overridden in a fixed
order, and every mistake is reported with its source, key, value and what is allowed.

Each test runs with an empty temporary user profile directory and without any
``PXPOOL_*`` setting from the host environment.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pxpool._profile import schema
from pxpool.errors import (
    ProfileError,
    ProfileValidationError,
    PxpoolError,
    UnknownProfileError,
)
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

BUILTIN_NAMES = ("htcondor", "local", "lsf", "mpi", "pbs", "sge", "slurm", "ssh")
BATCH_NAMES = ("htcondor", "lsf", "pbs", "sge", "slurm")
SSH_HOSTS = ["node1"]


@pytest.fixture(autouse=True)
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user profile directory, and no PXPOOL_* setting from the host."""
    for flat in schema.BY_FLAT:
        monkeypatch.delenv(f"PXPOOL_{flat.upper()}", raising=False)
    folder = tmp_path / "profiles"
    folder.mkdir()
    monkeypatch.setenv("PXPOOL_PROFILE_DIR", str(folder))
    return folder


def write_profile(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path


def builtin_path(name: str) -> Path:
    return builtin_profile_dir() / f"{name}.toml"


def load_builtin(name: str, **overrides: Any) -> Profile:
    if name == "ssh":
        overrides.setdefault("hosts", SSH_HOSTS)
    return load_profile(name, **overrides)


def msg(text: str) -> str:
    """A literal message fragment as a `match=` pattern."""
    return re.escape(text)


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


# --------------------------------------------------------------------------------------
# Unknown profiles and unreadable files
# --------------------------------------------------------------------------------------


def test_unknown_profile_lists_known_names_and_searched_folders(user_dir: Path) -> None:
    write_profile(user_dir, "mine", "")
    known = "htcondor, local, lsf, mine, mpi, pbs, sge, slurm, ssh"
    with pytest.raises(
        UnknownProfileError,
        match=msg(
            f"Unknown profile 'slrum'; known: {known}. "
            f"Searched: {builtin_profile_dir()}, {user_dir}. Create slrum.toml"
        ),
    ) as info:
        load_profile("slrum")
    assert info.value.name == "slrum"
    assert "slurm" in info.value.known
    assert info.value.searched == [str(builtin_profile_dir()), str(user_dir)]


def test_unknown_profile_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="Unknown profile 'nope'"):
        load_profile("nope")


def test_invalid_toml_reports_file_line_and_column(user_dir: Path) -> None:
    path = write_profile(user_dir, "broken", 'engines = 2\nprovider = "local\n')
    with pytest.raises(
        ProfileError,
        match=msg(f"{path}: invalid TOML at line 2, column 18: ")
        + ".*"
        + msg("Fix the file and load it again."),
    ):
        load_profile("broken")


def test_invalid_toml_in_a_user_file_over_a_builtin_is_reported(user_dir: Path) -> None:
    path = write_profile(user_dir, "local", "engines = = 3\n")
    with pytest.raises(ProfileError, match=msg(f"{path}: invalid TOML at line 1, column ")):
        load_profile("local")


# --------------------------------------------------------------------------------------
# Unknown keys
# --------------------------------------------------------------------------------------


def test_unknown_top_level_key_suggests_the_close_one(user_dir: Path) -> None:
    path = write_profile(user_dir, "local", "engnes = 2\n")
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            f"{path}: engnes: unknown key; did you mean 'engines'? "
            "allowed: description, provider, engines, restart, max_restarts, restart_backoff, "
            "idle_timeout, [controller], [engine]"
        ),
    ) as info:
        load_profile("local")
    assert info.value.source == str(path)
    assert info.value.key == "engnes"


def test_unknown_key_in_a_batch_table_suggests_the_close_one(user_dir: Path) -> None:
    path = write_profile(user_dir, "slurm", '[slurm]\npartiton = "x"\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(f"{path}: slurm.partiton: unknown key; did you mean 'partition'? allowed: ")
        + ".*launcher",
    ):
        load_profile("slurm")


def test_unknown_key_in_the_engine_table_suggests_the_close_one(user_dir: Path) -> None:
    path = write_profile(user_dir, "local", '[engine]\npyhton = "/usr/bin/python3"\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            f"{path}: engine.pyhton: unknown key; did you mean 'python'? "
            "allowed: python, work_dir, env, prologue, args"
        ),
    ):
        load_profile("local")


def test_misspelled_table_name_suggests_the_table(user_dir: Path) -> None:
    path = write_profile(user_dir, "mine", '[slrum]\npartition = "x"\n')
    with pytest.raises(
        ProfileValidationError, match=msg(f"{path}: slrum: unknown key; did you mean '[slurm]'?")
    ):
        load_profile("mine")


def test_unknown_key_without_a_close_match_lists_what_is_allowed(user_dir: Path) -> None:
    path = write_profile(user_dir, "local", "[timeouts]\nzzzz = 1\n")
    with pytest.raises(
        ProfileValidationError,
        match=msg(f"{path}: timeouts.zzzz: unknown key; allowed: start, stop, submit"),
    ):
        load_profile("local")


def test_a_section_written_as_a_plain_value_must_be_a_table(user_dir: Path) -> None:
    path = write_profile(user_dir, "local", 'engine = "python3"\n')
    with pytest.raises(
        ProfileValidationError, match=msg(f"{path}: engine: must be a table like [engine]")
    ):
        load_profile("local")


# --------------------------------------------------------------------------------------
# Wrong values in files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('engines = "four"\n', "engines: must be an integer; got 'four' (str)"),
        ("engines = true\n", "engines: must be an integer; got True (bool)"),
        ("engines = 2.5\n", "engines: must be an integer; got 2.5 (float)"),
        ("engines = -1\n", "engines: must be >= 0; got -1"),
        (
            '[engine]\nenv = ["a"]\n',
            "engine.env: must be a table of string values, "
            "e.g. { OMP_NUM_THREADS = \"1\" }; got ['a'] (list)",
        ),
        (
            "[engine]\nenv = { A = 1 }\n",
            "engine.env: must be a table of string values",
        ),
        (
            '[engine]\nargs = "--quiet"\n',
            "engine.args: must be a list of strings; got '--quiet' (str)",
        ),
        (
            '[engine]\nargs = ["--a", 2]\n',
            "engine.args: must be a list of strings; got ['--a', 2] (list)",
        ),
        (
            "[controller]\nargs = [1]\n",
            "controller.args: must be a list of strings; got [1] (list)",
        ),
        ("[engine]\npython = 3\n", "engine.python: must be a string; got 3 (int)"),
        ("[controller]\nheartbeat_ms = 10\n", "controller.heartbeat_ms: must be >= 50; got 10"),
        ("[timeouts]\nstart = 0\n", "timeouts.start: must be >= 0.1; got 0"),
        ('[timeouts]\nstop = "10"\n', "timeouts.stop: must be a number; got '10' (str)"),
        (
            '[controller]\nlocation = "jobs"\n',
            "controller.location: unknown value 'jobs'; did you mean 'job'? allowed: local, job",
        ),
        (
            'provider = "slurn"\n',
            "provider: unknown value 'slurn'; did you mean 'slurm'? "
            "allowed: local, ssh, slurm, sge, pbs, lsf, htcondor, mpi",
        ),
    ],
)
def test_wrong_value_in_a_file_names_file_key_value_and_what_is_allowed(
    user_dir: Path, text: str, expected: str
) -> None:
    path = write_profile(user_dir, "local", text)
    with pytest.raises(ProfileValidationError, match=msg(f"{path}: {expected}")):
        load_profile("local")


def test_unknown_launcher_lists_the_launchers(user_dir: Path) -> None:
    path = write_profile(user_dir, "slurm", '[slurm]\nlauncher = "fork"\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(f"{path}: slurm.launcher: unknown value 'fork'; allowed: plain, srun, mpiexec"),
    ):
        load_profile("slurm")


def test_misspelled_launcher_suggests_the_close_one() -> None:
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            "keyword argument launcher=: slurm.launcher: unknown value 'srn'; did you mean 'srun'?"
        ),
    ):
        load_profile("slurm", launcher="srn")


def test_walltime_in_words_is_rejected_with_the_format_hint(user_dir: Path) -> None:
    path = write_profile(user_dir, "slurm", '[slurm]\nwalltime = "90 minutes"\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            f"{path}: slurm.walltime: cannot read walltime '90 minutes'; "
            "write 'HH:MM:SS' or 'D-HH:MM:SS', e.g. '01:30:00' for 90 minutes"
        ),
    ):
        load_profile("slurm")


@pytest.mark.parametrize("text", ["01:60:00", "01:00:60", "1:2:3", "01-00", "-01:00:00"])
def test_walltime_out_of_range_or_malformed_is_rejected(text: str) -> None:
    with pytest.raises(ProfileValidationError, match=msg(f"cannot read walltime {text!r}")):
        load_profile("slurm", walltime=text)


def test_empty_walltime_means_the_queue_default() -> None:
    batch = load_profile("slurm", walltime="").batch
    assert batch.walltime == ""
    assert batch.walltime_seconds is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("01:00:00", 3600),
        ("1-02:03:04", 86400 + 2 * 3600 + 3 * 60 + 4),
        ("01:30", 90 * 60),  # HH:MM, as documented in parse_walltime
        ("100:00:00", 100 * 3600),
        ("0-00:00:59", 59),
        (" 00:05:00 ", 300),
    ],
)
def test_walltime_text_becomes_seconds(text: str, seconds: int) -> None:
    batch = load_profile("slurm", walltime=text).batch
    assert batch.walltime == text
    assert batch.walltime_seconds == seconds


def test_memory_in_words_is_rejected_with_the_unit_hint(user_dir: Path) -> None:
    path = write_profile(user_dir, "slurm", '[slurm]\nmemory = "lots"\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            f"{path}: slurm.memory: cannot read memory 'lots'; "
            "write a number with K, M, G or T, e.g. '4G'"
        ),
    ):
        load_profile("slurm")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4G", 4 * 1024**3),
        ("512M", 512 * 1024**2),
        ("1.5GB", int(1.5 * 1024**3)),
        ("2 GiB", 2 * 1024**3),
        ("64k", 64 * 1024),
        ("1T", 1024**4),
        ("1000", 1000),
    ],
)
def test_memory_text_becomes_bytes_in_binary_units(text: str, size: int) -> None:
    batch = load_profile("slurm", memory=text).batch
    assert batch.memory == text
    assert batch.memory_bytes == size


# --------------------------------------------------------------------------------------
# Keyword overrides
# --------------------------------------------------------------------------------------


def test_unknown_keyword_suggests_the_close_setting() -> None:
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            "keyword argument engins=: engins: unknown setting; did you mean 'engines'? "
            "allowed: description, provider, engines,"
        ),
    ) as info:
        load_profile("local", engins=2)
    assert info.value.source == "keyword argument engins="
    assert info.value.key == "engins"


def test_partition_keyword_on_a_local_profile_says_it_applies_to_batch_profiles() -> None:
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            "keyword argument partition=: partition: applies to batch profiles "
            "(slurm, sge, pbs, lsf, htcondor); this profile's provider is 'local'"
        ),
    ):
        load_profile("local", partition="debug")


def test_partition_in_an_sge_table_says_to_use_queue(user_dir: Path) -> None:
    path = write_profile(user_dir, "sge", '[sge]\npartition = "all.q"\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(f"{path}: sge.partition: is a slurm setting; sge profiles use queue"),
    ):
        load_profile("sge")


def test_partition_keyword_on_an_sge_profile_says_to_use_queue() -> None:
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            "keyword argument partition=: sge.partition: is a slurm setting; sge profiles use queue"
        ),
    ):
        load_profile("sge", partition="all.q")


def test_pe_on_a_slurm_profile_says_it_is_an_sge_setting() -> None:
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            "keyword argument pe=: slurm.pe: is a sge setting; slurm profiles use directives"
        ),
    ):
        load_profile("slurm", pe="smp")


def test_partition_and_queue_together_are_rejected(user_dir: Path) -> None:
    path = write_profile(user_dir, "slurm", '[slurm]\npartition = "a"\nqueue = "b"\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(f"{path}: slurm.partition: set either partition or queue, not both"),
    ):
        load_profile("slurm")


def test_partition_keyword_on_slurm_becomes_the_queue() -> None:
    assert load_profile("slurm", partition="debug").batch.queue == "debug"


def test_queue_keyword_on_the_builtin_slurm_profile_sets_the_queue() -> None:
    assert load_profile("slurm", queue="debug").batch.queue == "debug"


def test_batch_env_var_applies_to_the_provider_given_as_keyword(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PXPOOL_WALLTIME", "02:00:00")
    profile = load_profile("local", provider="slurm", engines=2)
    assert profile.batch.walltime_seconds == 7200


def test_misspelled_provider_is_reported_even_with_batch_keywords() -> None:
    with pytest.raises(ProfileValidationError, match=msg("did you mean 'slurm'?")):
        load_profile("local", provider="slurn", engines=2, walltime="01:00:00")


def test_misspelled_provider_keyword_suggests_the_close_one() -> None:
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            "keyword argument provider=: provider: unknown value 'slurn'; "
            "did you mean 'slurm'? allowed: local, ssh, slurm,"
        ),
    ):
        load_profile("local", provider="slurn")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"engines": "four"}, "keyword argument engines=: engines: must be an integer; got 'four'"),
        ({"engines": -1}, "keyword argument engines=: engines: must be >= 0; got -1"),
        ({"engines": None}, "keyword argument engines=: engines: must be an integer; got None"),
        ({"engines": True}, "keyword argument engines=: engines: must be an integer; got True"),
        ({"env": ["a"]}, "keyword argument env=: engine.env: must be a table of string values"),
        (
            {"env": "A=1,B"},
            "keyword argument env=: env: cannot read 'B'; write NAME=VALUE pairs separated by commas",
        ),
        (
            {"engine_args": ["--a", 1]},
            "keyword argument engine_args=: engine.args: must be a list of strings; "
            "got ['--a', 1] (list)",
        ),
        (
            {"start_timeout": "soon"},
            "keyword argument start_timeout=: start_timeout: must be a number; got 'soon'",
        ),
        ({"python": 3}, "keyword argument python=: engine.python: must be a string; got 3 (int)"),
    ],
)
def test_wrong_keyword_value_names_the_keyword_value_and_what_is_allowed(
    overrides: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ProfileValidationError, match=msg(expected)):
        load_profile("local", **overrides)


def test_keyword_string_values_are_read_as_on_a_command_line() -> None:
    profile = load_profile(
        "slurm",
        engines="4",
        env="A=1,B=2",
        directives="--a,--b",
        start_timeout="2.5",
        controller_port="5000",
        controller_args="",
    )
    assert profile.engines == 4
    assert profile.engine.env == {"A": "1", "B": "2"}
    assert profile.batch.directives == ("--a", "--b")
    assert profile.timeouts.start == 2.5
    assert profile.controller.port == 5000
    assert profile.controller.args == ()


def test_keyword_string_for_a_string_setting_is_kept_as_is() -> None:
    assert load_profile("local", python="4,5").engine.python == "4,5"


def test_keyword_lists_are_stored_as_tuples() -> None:
    profile = load_profile("local", engine_args=["--a"], prologue=["module load x"])
    assert profile.engine.args == ("--a",)
    assert profile.engine.prologue == ("module load x",)


# --------------------------------------------------------------------------------------
# Environment variable overrides
# --------------------------------------------------------------------------------------


def test_non_integer_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPOOL_ENGINES", "abc")
    with pytest.raises(
        ProfileValidationError,
        match=msg("environment variable PXPOOL_ENGINES: engines: must be an integer; got 'abc'"),
    ) as info:
        load_profile("local")
    assert info.value.source == "environment variable PXPOOL_ENGINES"


def test_negative_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPOOL_ENGINES", "-2")
    with pytest.raises(
        ProfileValidationError,
        match=msg("environment variable PXPOOL_ENGINES: engines: must be >= 0; got -2"),
    ):
        load_profile("local")


def test_batch_env_var_on_a_local_profile_says_it_applies_to_batch_profiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PXPOOL_WALLTIME", "01:00:00")
    with pytest.raises(
        ProfileValidationError,
        match=msg("environment variable PXPOOL_WALLTIME: walltime: applies to batch profiles"),
    ):
        load_profile("local")


def test_bad_walltime_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPOOL_WALLTIME", "90 minutes")
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            "environment variable PXPOOL_WALLTIME: slurm.walltime: "
            "cannot read walltime '90 minutes'; write 'HH:MM:SS'"
        ),
    ):
        load_profile("slurm")


# --------------------------------------------------------------------------------------
# SSH hosts and engine counts
# --------------------------------------------------------------------------------------


def test_ssh_profile_without_hosts_says_to_set_hosts() -> None:
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            f"{builtin_path('ssh')}: ssh.hosts: an ssh profile needs at least one host; "
            'set hosts = ["node1", "user@node2:2222"] or pass hosts=[...] to Pool.from_profile'
        ),
    ):
        load_profile("ssh")


def test_ssh_profile_with_an_empty_host_list_names_the_file_that_set_it(user_dir: Path) -> None:
    path = write_profile(user_dir, "ssh", "[ssh]\nhosts = []\n")
    with pytest.raises(
        ProfileValidationError, match=msg(f"{path}: ssh.hosts: an ssh profile needs at least")
    ):
        load_profile("ssh")


def test_host_strings_are_parsed_into_user_host_and_port() -> None:
    hosts = load_profile(
        "ssh", hosts=["user@host:2222", "node1", "me@node2", "node3:2200"]
    ).ssh.hosts
    assert hosts == (
        SSHHost(host="host", port=2222, user="user"),
        SSHHost(host="node1", port=22, user=""),
        SSHHost(host="node2", user="me"),
        SSHHost(host="node3", port=2200),
    )


def test_host_tables_set_per_host_fields() -> None:
    hosts = load_profile(
        "ssh",
        hosts=[
            {"host": "node2", "engines": 2, "python": "/opt/venv/bin/python"},
            {
                "host": "node3",
                "user": "me",
                "port": 2022,
                "work_dir": "/scratch",
                "activate": ["source /opt/venv/bin/activate"],
            },
        ],
    ).ssh.hosts
    assert hosts == (
        SSHHost(host="node2", engines=2, python="/opt/venv/bin/python"),
        SSHHost(
            host="node3",
            user="me",
            port=2022,
            work_dir="/scratch",
            activate=("source /opt/venv/bin/activate",),
        ),
    )


def test_hosts_in_a_user_file_mix_strings_and_tables(user_dir: Path) -> None:
    write_profile(
        user_dir,
        "ssh",
        """\
        [ssh]
        hosts = ["a@node1:2222", { host = "node2", engines = 4, python = "/usr/bin/python3" }]
        """,
    )
    profile = load_profile("ssh")
    assert profile.ssh.hosts == (
        SSHHost(host="node1", port=2222, user="a"),
        SSHHost(host="node2", engines=4, python="/usr/bin/python3"),
    )
    assert profile.ssh.options == ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10")


def test_hosts_keyword_string_is_comma_separated() -> None:
    hosts = load_profile("ssh", hosts="node1, me@node2:2200").ssh.hosts
    assert hosts == (SSHHost(host="node1"), SSHHost(host="node2", user="me", port=2200))


def test_hosts_env_var_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPOOL_HOSTS", "node1,node2")
    assert [h.host for h in load_profile("ssh").ssh.hosts] == ["node1", "node2"]


def test_host_table_with_an_unknown_key_suggests_the_close_one(user_dir: Path) -> None:
    path = write_profile(user_dir, "ssh", '[ssh]\nhosts = [{ host = "n", engnes = 2 }]\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(
            f"{path}: ssh.hosts[0].engnes: unknown key; did you mean 'engines'? "
            "allowed: host, port, user, engines, python, work_dir, activate"
        ),
    ):
        load_profile("ssh")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"user": "me"}, 'ssh.hosts[1].host: each host table needs host = "name"'),
        ({"host": ""}, 'ssh.hosts[1].host: each host table needs host = "name"'),
        (3, "ssh.hosts[1]: must be a string like 'user@node:22' or a table; got 3"),
        (
            "a@b@c",
            "ssh.hosts[1]: cannot read host 'a@b@c'; write it as 'host', 'user@host' or "
            "'user@host:port'",
        ),
        ("node:port", "ssh.hosts[1]: cannot read host 'node:port'"),
        (
            {"host": "n", "engines": -1},
            "ssh.hosts[1].engines: must be a non-negative integer; got -1",
        ),
        (
            {"host": "n", "port": "22"},
            "ssh.hosts[1].port: must be a non-negative integer; got '22'",
        ),
        (
            {"host": "n", "engines": True},
            "ssh.hosts[1].engines: must be a non-negative integer; got True",
        ),
        (
            {"host": "n", "activate": "source x"},
            "ssh.hosts[1].activate: must be a list of strings; got 'source x' (str)",
        ),
    ],
)
def test_bad_host_entry_names_its_index_and_what_is_allowed(entry: Any, expected: str) -> None:
    with pytest.raises(ProfileValidationError, match=msg(f"keyword argument hosts=: {expected}")):
        load_profile("ssh", hosts=["good", entry])


def test_hosts_that_are_not_a_list_are_rejected(user_dir: Path) -> None:
    path = write_profile(user_dir, "ssh", '[ssh]\nhosts = "node1"\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(f'{path}: ssh.hosts: must be a list of hosts like ["node1", "user@node2:2222"]'),
    ):
        load_profile("ssh")


@pytest.mark.parametrize("name", (*BATCH_NAMES, "mpi"))
def test_batch_and_mpi_profiles_reject_zero_engines(name: str) -> None:
    with pytest.raises(
        ProfileValidationError,
        match=msg(f"keyword argument engines=: engines: {name} profiles need engines >= 1; got 0"),
    ):
        load_profile(name, engines=0)


def test_zero_engines_in_a_user_batch_file_names_that_file(user_dir: Path) -> None:
    path = write_profile(user_dir, "slurm", "engines = 0\n")
    with pytest.raises(
        ProfileValidationError,
        match=msg(f"{path}: engines: slurm profiles need engines >= 1; got 0"),
    ):
        load_profile("slurm")


def test_a_user_only_batch_profile_without_engines_is_rejected(user_dir: Path) -> None:
    path = write_profile(user_dir, "mine", 'provider = "pbs"\n')
    with pytest.raises(
        ProfileValidationError,
        match=msg(f"{path}: engines: pbs profiles need engines >= 1; got 0"),
    ):
        load_profile("mine")


# --------------------------------------------------------------------------------------
# Frozen results and the error tree
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


def test_profile_errors_sit_in_the_pxpool_error_tree() -> None:
    assert issubclass(ProfileError, PxpoolError)
    assert issubclass(UnknownProfileError, ProfileError)
    assert issubclass(UnknownProfileError, LookupError)
    assert issubclass(ProfileValidationError, ProfileError)
    assert issubclass(ProfileValidationError, ValueError)


def _write_and_load(name: str, text: str) -> Callable[[Path], object]:
    def run(folder: Path) -> object:
        write_profile(folder, name, text)
        return load_profile(name)

    return run


ERROR_CASES: dict[str, Callable[[Path], object]] = {
    "unknown profile": lambda _: load_profile("slrum"),
    "invalid toml": _write_and_load("broken", "engines = = 1\n"),
    "unknown key": _write_and_load("local", "engnes = 2\n"),
    "not a table": _write_and_load("local", 'engine = "x"\n'),
    "wrong type": lambda _: load_profile("local", engines="four"),
    "not allowed": lambda _: load_profile("local", provider="slurn"),
    "unknown keyword": lambda _: load_profile("local", engins=2),
    "batch key on local": lambda _: load_profile("local", partition="x"),
    "walltime": lambda _: load_profile("slurm", walltime="90 minutes"),
    "memory": lambda _: load_profile("slurm", memory="lots"),
    "no hosts": lambda _: load_profile("ssh"),
    "bad host": lambda _: load_profile("ssh", hosts=["a@b@c"]),
    "zero batch engines": lambda _: load_profile("slurm", engines=0),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_every_profile_error_is_a_pxpool_profile_error(case: str, user_dir: Path) -> None:
    with pytest.raises(ProfileError) as info:
        ERROR_CASES[case](user_dir)
    assert isinstance(info.value, PxpoolError)
    assert str(info.value)


# --------------------------------------------------------------------------------------
# Layered aliases, read-only settings and profile names
# --------------------------------------------------------------------------------------


def test_partition_and_queue_keywords_together_are_rejected() -> None:
    with pytest.raises(ProfileValidationError, match="set either partition or queue, not both"):
        load_profile("slurm", partition="a", queue="b")


def test_user_queue_replaces_the_builtin_partition(user_dir: Path) -> None:
    write_profile(user_dir, "slurm", '[slurm]\nqueue = "short"\n')
    assert load_profile("slurm").batch.queue == "short"


def test_partition_keyword_replaces_a_user_queue(user_dir: Path) -> None:
    write_profile(user_dir, "slurm", '[slurm]\nqueue = "short"\n')
    assert load_profile("slurm", partition="long").batch.queue == "long"


def test_engine_env_of_a_loaded_profile_is_read_only() -> None:
    profile = load_profile("local", env={"A": "1"})
    assert dict(profile.engine.env) == {"A": "1"}
    with pytest.raises(TypeError):
        profile.engine.env["B"] = "2"  # type: ignore[index]


@pytest.mark.parametrize("name", ["../local", "a/b", "/etc/passwd", ".hidden", ""])
def test_profile_names_that_are_paths_are_rejected(name: str) -> None:
    with pytest.raises(ProfileError, match="Invalid profile name"):
        load_profile(name)


def test_restart_policy_and_encryption_have_safe_defaults() -> None:
    profile = load_profile("local")
    assert (profile.restart, profile.max_restarts, profile.restart_backoff) == ("never", 3, 1.0)
    assert profile.controller.encrypt is False


@pytest.mark.parametrize("text,value", [("true", True), ("1", True), ("off", False)])
def test_booleans_read_from_environment_text(
    monkeypatch: pytest.MonkeyPatch, text: str, value: bool
) -> None:
    monkeypatch.setenv("PXPOOL_ENCRYPT", text)
    assert load_profile("local").controller.encrypt is value


def test_bad_boolean_and_restart_policy_name_the_allowed_values() -> None:
    with pytest.raises(ProfileValidationError, match="encrypt: must be true or false; got 'maybe'"):
        load_profile("local", encrypt="maybe")
    with pytest.raises(ProfileValidationError, match="did you mean 'on-failure'"):
        load_profile("local", restart="on-failur")


@pytest.mark.parametrize("provider", ["local", "mpi"])
def test_controller_in_a_job_needs_a_batch_provider(provider: str) -> None:
    with pytest.raises(
        ProfileValidationError,
        match=r'controller.location: "job" runs the controller in a batch job',
    ):
        load_profile(provider, controller_location="job")
