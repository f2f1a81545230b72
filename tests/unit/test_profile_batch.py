"""Batch settings ([slurm], [sge], [pbs], [lsf], [htcondor] tables): launcher, walltime
and memory text, partition/queue/pe per provider and their aliases across layers, batch
keywords and variables on a non-batch profile, engine counts batch and mpi profiles need,
and the controller running in a batch job.

Each test runs with an empty temporary user profile directory and without any
``PXPOOL_*`` setting from the host environment (the ``user_dir`` fixture).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pxpool.errors import ProfileValidationError
from pxpool.profile import load_profile

from .profile_helpers import BATCH_NAMES, msg, write_profile

pytestmark = pytest.mark.usefixtures("user_dir")


# --------------------------------------------------------------------------------------
# Launcher, walltime and memory
# --------------------------------------------------------------------------------------


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
# Partition, queue and pe per provider
# --------------------------------------------------------------------------------------


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


def test_partition_and_queue_keywords_together_are_rejected() -> None:
    with pytest.raises(ProfileValidationError, match="set either partition or queue, not both"):
        load_profile("slurm", partition="a", queue="b")


def test_user_queue_replaces_the_builtin_partition(user_dir: Path) -> None:
    write_profile(user_dir, "slurm", '[slurm]\nqueue = "short"\n')
    assert load_profile("slurm").batch.queue == "short"


def test_partition_keyword_replaces_a_user_queue(user_dir: Path) -> None:
    write_profile(user_dir, "slurm", '[slurm]\nqueue = "short"\n')
    assert load_profile("slurm", partition="long").batch.queue == "long"


# --------------------------------------------------------------------------------------
# Batch environment variables
# --------------------------------------------------------------------------------------


def test_batch_env_var_applies_to_the_provider_given_as_keyword(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PXPOOL_WALLTIME", "02:00:00")
    profile = load_profile("local", provider="slurm", engines=2)
    assert profile.batch.walltime_seconds == 7200


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
# Engine counts and the controller in a job
# --------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("provider", ["local", "mpi"])
def test_controller_in_a_job_needs_a_batch_provider(provider: str) -> None:
    with pytest.raises(
        ProfileValidationError,
        match=r'controller.location: "job" runs the controller in a batch job',
    ):
        load_profile(provider, controller_location="job")
