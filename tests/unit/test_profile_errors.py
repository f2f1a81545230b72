"""Mistakes in profile files and names, reported with source, key, value and what is
allowed: unknown profiles, invalid TOML, unknown keys and tables, wrong values in files,
profile names that are paths; and the error tree every profile error belongs to.

Each test runs with an empty temporary user profile directory and without any
``PXPOOL_*`` setting from the host environment (the ``user_dir`` fixture).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pxpool.errors import ProfileError, ProfileValidationError, PxpoolError, UnknownProfileError
from pxpool.profile import builtin_profile_dir, load_profile

from .profile_helpers import msg, write_profile

pytestmark = pytest.mark.usefixtures("user_dir")


# --------------------------------------------------------------------------------------
# Unknown profiles and unreadable files
# --------------------------------------------------------------------------------------


def test_unknown_profile_lists_known_names_and_searched_folders(user_dir: Path) -> None:
    write_profile(user_dir, "mine", "")
    known = "htcondor, kubernetes, local, lsf, mine, mpi, pbs, sge, slurm, ssh"
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


@pytest.mark.parametrize("name", ["../local", "a/b", "/etc/passwd", ".hidden", ""])
def test_profile_names_that_are_paths_are_rejected(name: str) -> None:
    with pytest.raises(ProfileError, match="Invalid profile name"):
        load_profile(name)


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
            "restart_window, idle_timeout, [controller], [engine]"
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


# --------------------------------------------------------------------------------------
# The error tree
# --------------------------------------------------------------------------------------


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
