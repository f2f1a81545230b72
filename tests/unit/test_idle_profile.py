"""The ``idle_timeout`` profile key: seconds or 'HH:MM:SS', every provider, 0 = never."""

from __future__ import annotations

from pathlib import Path

import pytest

import pxpool
from pxpool.errors import ProfileValidationError


def test_idle_timeout_defaults_to_never() -> None:
    assert pxpool.load_profile("local").idle_timeout == 0.0
    assert pxpool.load_profile("slurm").idle_timeout == 0.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(3, 3.0), (1.5, 1.5), ("600", 600.0), ("00:10:00", 600.0), ("01:30", 5400.0), (0, 0.0)],
)
def test_idle_timeout_reads_seconds_or_walltime_text(value: object, seconds: float) -> None:
    assert pxpool.load_profile("slurm", idle_timeout=value).idle_timeout == seconds


@pytest.mark.parametrize("provider", ["local", "ssh", "mpi", "slurm", "sge"])
def test_idle_timeout_is_allowed_for_every_provider(provider: str) -> None:
    hosts = {"hosts": ["127.0.0.1"]} if provider == "ssh" else {}
    engines = {"engines": 1} if provider != "local" else {}
    profile = pxpool.load_profile(provider, idle_timeout=60, **hosts, **engines)
    assert profile.idle_timeout == 60.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ten minutes", r"idle_timeout: cannot read duration 'ten minutes'; write seconds"),
        (-1, r"idle_timeout: must be >= 0 seconds; got -1"),
        (True, r"idle_timeout: must be seconds or 'HH:MM:SS'.*got True \(bool\)"),
        ("00:61:00", r"idle_timeout: cannot read duration '00:61:00'"),
        (float("inf"), r"idle_timeout: must be a finite number"),
    ],
)
def test_bad_idle_timeout_names_the_key_and_the_value(value: object, message: str) -> None:
    with pytest.raises(ProfileValidationError, match=message):
        pxpool.load_profile("local", idle_timeout=value)


def test_idle_timeout_from_a_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PXPOOL_PROFILE_DIR", str(tmp_path))
    (tmp_path / "lazy.toml").write_text('provider = "local"\nidle_timeout = "00:05:00"\n')
    assert pxpool.load_profile("lazy").idle_timeout == 300.0
    monkeypatch.setenv("PXPOOL_IDLE_TIMEOUT", "45")
    assert pxpool.load_profile("lazy").idle_timeout == 45.0
    monkeypatch.setenv("PXPOOL_IDLE_TIMEOUT", "soon")
    with pytest.raises(ProfileValidationError, match="PXPOOL_IDLE_TIMEOUT.*'soon'"):
        pxpool.load_profile("lazy")
