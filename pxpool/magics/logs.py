"""``%pxlogs``: what an engine of the current pool printed, also after it died.

::

    %pxlogs 3                 # the last 200 lines of each of engine 3's outputs
    %pxlogs 3 --tail 50
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from ..errors import PxpoolError
from ..pool import current

__all__ = ["LogsMagics", "USAGE"]

USAGE = "%pxlogs ENGINE [--tail LINES]"


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError with the usage instead of exiting."""

    def error(self, message: str) -> Any:  # argparse calls this on bad usage
        raise UsageError(f"%pxlogs: {message}; usage: {USAGE}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%pxlogs", add_help=False)
    parser.add_argument("engine", type=int)
    parser.add_argument("--tail", type=int, default=200)
    return parser


@magics_class
class LogsMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)  # type: ignore[no-untyped-call]  # IPython's Magics.__init__ is unannotated

    @line_magic  # type: ignore[untyped-decorator]  # IPython's decorator is unannotated
    def pxlogs(self, line: str = "") -> None:
        """Print engine ENGINE's output (``pool.logs(ENGINE, tail=LINES)``)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:  # an unclosed quote
            raise UsageError(f"%pxlogs: {exc}; usage: {USAGE}") from None
        args = _parser().parse_args(words)  # bad usage: UsageError (see _Parser)
        if args.tail <= 0:
            raise UsageError(f"%pxlogs: --tail must be a number of lines > 0; got {args.tail}")
        try:
            text = current().logs(args.engine, tail=args.tail)
        except PxpoolError as exc:
            raise UsageError(str(exc)) from None
        print(text, end="")
