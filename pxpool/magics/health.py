"""``%pxhealth``: the live engine-health panel of the current pool.

::

    %pxhealth                 # refresh every second
    %pxhealth --refresh 0.5   # faster; 0 refreshes only by hand (panel.refresh())
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from ..errors import PxpoolError
from ..pool import current


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%pxhealth", add_help=False, exit_on_error=False)
    parser.add_argument("--refresh", type=float, default=1.0)
    return parser


@magics_class
class HealthMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)  # type: ignore[no-untyped-call]  # IPython's Magics.__init__ is unannotated

    @line_magic  # type: ignore[untyped-decorator]  # IPython's decorator is unannotated
    def pxhealth(self, line: str = "") -> Any:
        """Show the health panel of ``pxpool.current()`` (``--refresh SECONDS``)."""
        try:
            args, extra = _parser().parse_known_args(shlex.split(line))
        except (argparse.ArgumentError, ValueError) as exc:
            raise UsageError(f"%pxhealth: {exc}; usage: %pxhealth [--refresh SECONDS]") from None
        if extra:
            raise UsageError(
                f"%pxhealth: unexpected {' '.join(extra)!r}; usage: %pxhealth [--refresh SECONDS]"
            )
        if args.refresh < 0:
            raise UsageError(f"%pxhealth: --refresh must be >= 0 seconds; got {args.refresh:g}")
        try:
            pool = current()
        except PxpoolError as exc:
            raise UsageError(str(exc)) from None
        return pool.panel(refresh=args.refresh)
