"""A pool's record keeps the profile it was started with, overrides included."""

from __future__ import annotations

import json

import pytest

from pxpool import load_profile
from pxpool._core import runtime


def round_trip(profile: object) -> object:
    record = {"profile": "x", "profile_settings": runtime.profile_record(profile)}  # type: ignore[arg-type]
    return runtime.record_profile(json.loads(json.dumps(record)))


def test_keyword_hosts_env_and_options_survive_the_record() -> None:
    profile = load_profile(
        "ssh",
        hosts=["u@h:2222", {"host": "x", "engines": 3, "activate": ["source a"]}],
        identity_file="/k",
        env={"A": "1"},
        ssh_options=["-o", "X=y"],
        tunnel=False,
    )
    assert round_trip(profile) == profile


@pytest.mark.parametrize("name", ["local", "slurm", "sge", "pbs", "lsf", "htcondor", "mpi"])
def test_built_in_profiles_survive_the_record(name: str) -> None:
    profile = load_profile(name)
    assert round_trip(profile) == profile


def test_a_record_without_settings_loads_the_named_profile() -> None:
    assert runtime.record_profile({"profile": "local"}) == load_profile("local")
