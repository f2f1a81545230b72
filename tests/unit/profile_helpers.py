"""Helpers shared by the profile tests (test_profile_*.py): the built-in profile names,
writing a user profile file, and turning a literal message into a ``match=`` pattern."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from pxpool.profile import Profile, builtin_profile_dir, load_profile

BUILTIN_NAMES = ("htcondor", "kubernetes", "local", "lsf", "mpi", "pbs", "sge", "slurm", "ssh")
BATCH_NAMES = ("htcondor", "lsf", "pbs", "sge", "slurm")
SSH_HOSTS = ["node1"]


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
