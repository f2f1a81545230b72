"""Keyword and ``PXPOOL_*`` environment variable overrides: how their text is read
(command-line style strings, lists, booleans) and how a wrong one is reported, naming the
keyword or variable, the value and what is allowed.

Batch settings given as keywords or variables are covered in test_profile_batch, ssh
hosts in test_profile_ssh.

Each test runs with an empty temporary user profile directory and without any
``PXPOOL_*`` setting from the host environment (the ``user_dir`` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest

from pxpool.errors import ProfileValidationError
from pxpool.profile import load_profile

from .profile_helpers import msg

pytestmark = pytest.mark.usefixtures("user_dir")


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
