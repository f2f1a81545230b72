"""The ssh provider's fork servers: one per pool on each SSH host whose pxpool has one.

The first engine started on a host starts the server there (through the stand-in,
:mod:`pxpool._entry.forkserver.stand_in`, which takes the place the engine had in the
ssh session: its pid is the one pxpool kills, it passes signals on and exits as the
engine did); later engines fork from it. The pool's stop ends each server over ssh
(its engines are stopped before, one by one, as ever); a server left alone exits by
itself once it has had no engine for a while.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Sequence

from ..profile import Profile
from ._ssh_launcher import REMOTE_TERM_GRACE, remote_command, run_bounded
from .base import ENGINE_MODULE
from .forking import stand_in_command, stop_server_command

IDLE_EXIT = 30.0  # seconds a server with no engine lives on, should the pool's stop miss it
STOP_TIMEOUT = 10.0  # seconds for one host's server to be stopped over ssh


def engine_command(python: str, profile: Profile, cluster_id: str, forking: bool) -> list[str]:
    """``python -m`` the engine, or the stand-in that forks it from the host's server.
    A SIGTERM the stand-in passes on becomes a SIGKILL before pxpool's own SIGKILL
    (which would reach only the stand-in) would have followed."""
    if not forking:
        return [python, "-m", ENGINE_MODULE]
    options = [f"--idle-exit={IDLE_EXIT:g}", f"--kill-after={REMOTE_TERM_GRACE - 0.5:g}"]
    return stand_in_command(python, cluster_id, profile.engine.preload, *options)


async def stop_servers(hosts: Sequence[tuple[list[str], str]], cluster_id: str) -> None:
    """End the pool's server on each host (``(ssh argv, remote python)``), side by side."""

    async def stop(ssh_argv: list[str], python: str) -> None:
        script = f"exec {shlex.join(stop_server_command(python, cluster_id))}"
        await run_bounded([*ssh_argv, "--", remote_command(script)], STOP_TIMEOUT)

    await asyncio.gather(*(stop(argv, python) for argv, python in hosts))
