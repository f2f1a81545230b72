"""The ``idle_timeout`` profile key (seconds or 'HH:MM:SS', every provider, 0 = never) and the
core-hours arithmetic and state file behind `pxpool status`."""

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


# --------------------------------------------------------------------------------------
# Core-hours arithmetic and the state other processes read (no engines needed)
# --------------------------------------------------------------------------------------


def test_core_clock_counts_cores_times_each_engines_registered_time() -> None:
    from pxpool._reliability.idle import CoreClock

    clock = CoreClock(cores=4)
    clock.opened([0, 1], now=1000.0)
    clock.opened([0], now=1500.0)  # already counted from 1000
    clock.close({1}, now=1900.0)
    assert clock.core_seconds(now=1900.0) == 4 * (900 + 900)
    clock.close({0}, now=4600.0)
    assert clock.core_seconds(now=9999.0) == 4 * (3600 + 900)  # nothing open: no growth


def test_status_reads_core_hours_and_released_engines_the_owner_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import time

    from pxpool._core import runtime
    from pxpool._reliability import idle as _idle
    from pxpool.health import EngineSnapshot

    monkeypatch.setenv("PXPOOL_RUNTIME_DIR", str(tmp_path))
    directory = runtime.pool_dir("lazy-pool", create=True)
    state = {
        "idle_timeout": 60.0,
        "cores_per_engine": 2,
        "engine_seconds": 1800.0,
        "open": {"2": time.time() - 1800.0},
        "released_ids": [0, 1],
        "released_at": time.time(),
    }
    (directory / _idle.STATE_FILE).write_text(json.dumps(state))
    read = _idle.read_state("lazy-pool")
    assert read is not None and read["core_hours"] == pytest.approx(2.0, abs=0.01)

    def row(engine_id: int, state: str) -> EngineSnapshot:
        fields = dict.fromkeys(EngineSnapshot.__dataclass_fields__)
        fields.update(engine_id=engine_id, state=state, tasks_done=0, tasks_failed=0)
        return EngineSnapshot(**fields)  # type: ignore[arg-type]

    marked = _idle.mark_released("lazy-pool", [row(0, "stopped"), row(1, "dead"), row(2, "idle")])
    assert [s.state for s in marked] == ["released", "dead", "idle"]
    assert _idle.read_state("no-such-pool") is None
