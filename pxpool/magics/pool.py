"""``%pool``: start, attach, inspect, scale, restart and stop a pool from a notebook.

Each subcommand parses its arguments and calls the Python API; wrong usage and every
:class:`~pxpool.errors.PxpoolError` become IPython's ``UsageError`` with the same text,
so a notebook shows the message without a traceback.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from .._health.table import engine_table
from ..errors import PxpoolError
from ..health import format_table
from ..pool import Pool, current
from ..profile import list_profiles, load_profile

__all__ = ["PoolMagics", "USAGE"]

USAGE = {
    "start": "%pool start [PROFILE] [-n N] [--name NAME] [key=value ...]",
    "attach": "%pool attach NAME",
    "status": "%pool status",
    "scale": "%pool scale N",
    "restart": "%pool restart ENGINE",
    "stop": "%pool stop",
    "profiles": "%pool profiles",
}
WHAT = {
    "start": "start a pool (default profile local; key=value sets a profile key) and bind %px",
    "attach": "connect to a pool started elsewhere (`pxpool start`) and bind %px to it",
    "status": "engine, host, pid, state and tasks done of each engine",
    "scale": "grow or shrink the pool to N engines",
    "restart": "replace one engine with a fresh process under the same id",
    "stop": "stop the pool's engines and controller",
    "profiles": "list the profiles and where each comes from",
}
HELP = "\n".join(
    ["%pool: manage this notebook's pool of engines.", ""]
    + [f"  {USAGE[name]}\n      {WHAT[name]}" for name in USAGE]
    + ["", "Then run code on the engines with %px / %%px (see `%%px?`)."]
)
STATUS_COLUMNS = ["engine", "host", "pid", "state", "tasks_done"]


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError naming the subcommand's correct form."""

    def __init__(self, command: str) -> None:
        super().__init__(prog=f"%pool {command}", add_help=False)
        self.command = command

    def error(self, message: str) -> Any:  # argparse calls this on bad usage
        raise UsageError(f"%pool {self.command}: {message}. Usage: {USAGE[self.command]}")


def _split(line: str, command: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%pool {command}: {exc}. Usage: {USAGE[command]}") from None


def _number(command: str, what: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise UsageError(
            f"%pool {command}: {what} must be a whole number >= {minimum}; got {text!r}. "
            f"Usage: {USAGE[command]}"
        )
    return value


@magics_class
class PoolMagics(Magics):
    """The ``%pool`` line magic."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)  # type: ignore[no-untyped-call]  # IPython's Magics.__init__ is unannotated

    @line_magic  # type: ignore[untyped-decorator]  # IPython's decorator is unannotated
    def pool(self, line: str = "") -> None:
        """Manage this notebook's pool of engines; ``%pool`` alone lists the commands."""
        command, _, rest = line.strip().partition(" ")
        if not command:
            print(HELP)
            return
        handler: Callable[[str], None] | None = getattr(self, f"_cmd_{command}", None)
        if command not in USAGE or handler is None:
            raise UsageError(
                f"Unknown %pool command {command!r}; known: {', '.join(sorted(USAGE))}. "
                "Run `%pool` alone for help."
            )
        try:
            handler(rest)
        except PxpoolError as exc:
            raise UsageError(str(exc)) from exc

    def _no_args(self, command: str, rest: str) -> None:
        if _split(rest, command):
            raise UsageError(
                f"%pool {command}: takes no arguments; got {rest.strip()!r}. "
                f"Usage: {USAGE[command]}"
            )

    def _cmd_start(self, rest: str) -> None:
        parser = _Parser("start")
        parser.add_argument("-n", type=int, dest="engines")
        parser.add_argument("--name")
        parser.add_argument("words", nargs="*")
        args = parser.parse_intermixed_args(_split(rest, "start"))
        settings = [w for w in args.words if "=" in w]
        names = [w for w in args.words if "=" not in w]
        if len(names) > 1:
            parser.error(f"one profile name, got {len(names)}: {' '.join(names)}")
        overrides: dict[str, Any] = {}
        for pair in settings:
            key, _, value = pair.partition("=")
            if not key.strip():
                parser.error(f"setting {pair!r} has no key; write key=value, e.g. engines=4")
            overrides[key.strip()] = value
        if args.engines is not None:
            if args.engines < 1:
                parser.error(f"-n must be at least 1; got {args.engines}")
            overrides["engines"] = args.engines
        profile = load_profile(names[0] if names else "local", **overrides)
        running = _running_pool()
        if running is not None:
            raise UsageError(
                f"Pool {running.name!r} is already running here with {running.engines} engines; "
                "stop it with `%pool stop`, or change its size with `%pool scale N`."
            )
        pool = Pool(profile, args.name)
        pool.start_sync()
        print(
            f"Started pool {pool.name!r} ({pool.profile.provider}) with {pool.engines} "
            f"engines {pool.ids}; %px and %%px run on it."
        )

    def _cmd_attach(self, rest: str) -> None:
        words = _split(rest, "attach")
        if len(words) != 1:
            raise UsageError(
                f"%pool attach: needs exactly one pool name; got {len(words)}. "
                f"Usage: {USAGE['attach']} (running pools: `!pxpool list`)"
            )
        pool = Pool.attach(words[0])
        print(
            f"Attached to pool {pool.name!r} with {pool.engines} engines {pool.ids}; "
            "%px and %%px run on it."
        )

    def _cmd_status(self, rest: str) -> None:
        self._no_args("status", rest)
        pool = current()
        print(
            f"Pool {pool.name!r} (profile {pool.profile.name!r}, {pool.profile.provider}): "
            f"{pool.engines} engines"
        )
        print(format_table(engine_table(pool.client), STATUS_COLUMNS))

    def _cmd_scale(self, rest: str) -> None:
        words = _split(rest, "scale")
        if len(words) != 1:
            raise UsageError(
                f"%pool scale: needs one number of engines; got {len(words)} arguments. "
                f"Usage: {USAGE['scale']}"
            )
        count = _number("scale", "N", words[0], 0)
        pool = current()
        ids = pool.scale_sync(count)
        print(f"Pool {pool.name!r} now has {len(ids)} engines {ids}.")

    def _cmd_restart(self, rest: str) -> None:
        words = _split(rest, "restart")
        if len(words) != 1:
            raise UsageError(
                f"%pool restart: needs one engine id; got {len(words)} arguments. "
                f"Usage: {USAGE['restart']}"
            )
        engine = _number("restart", "ENGINE", words[0], 0)
        pool = current()
        pool.restart_sync(engine)
        print(f"Restarted engine {engine} of pool {pool.name!r}.")

    def _cmd_stop(self, rest: str) -> None:
        self._no_args("stop", rest)
        pool = current()
        pool.stop_sync()
        print(f"Stopped pool {pool.name!r}.")

    def _cmd_profiles(self, rest: str) -> None:
        self._no_args("profiles", rest)
        rows = [
            {"name": p.name, "origin": p.origin, "description": p.description}
            for p in list_profiles()
        ]
        print(format_table(rows))


def _running_pool() -> Pool | None:
    try:
        return current()
    except PxpoolError:
        return None
