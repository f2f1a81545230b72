"""The ssh profile's hosts: strings and tables in files, keywords and ``PXPOOL_HOSTS``,
parsed into SSHHost entries; a missing, empty or malformed host list reported with its
source, index and what is allowed.

Each test runs with an empty temporary user profile directory and without any
``PXPOOL_*`` setting from the host environment (the ``user_dir`` fixture).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pxpool.errors import ProfileValidationError
from pxpool.profile import SSHHost, load_profile

from .profile_helpers import builtin_path, msg, write_profile

pytestmark = pytest.mark.usefixtures("user_dir")


# --------------------------------------------------------------------------------------
# SSH hosts
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
