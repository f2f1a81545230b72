"""What a lane task prints: caught on its engine, shown in the client with its result.

ipyparallel publishes a task's output on the engine's iopub channel under the task's
request, and its client shows it with the result. A lane task has no request the
client or the hub would recognise, so :class:`Catching` (engine side) collects what
the task writes to ``sys.stdout`` and ``sys.stderr`` while it runs, still passing every
write on to the engine's own streams (where the engine keeps its output:
:mod:`pxpool._logs.agent`), and the reply carries it back. The client shows it under
ipyparallel's ``[stdout:N]`` heading once, when the task's result (or error) is first
asked for (:meth:`pxpool._tasks.future.TaskFuture.result`).

A reply header is bounded (:data:`pxpool._tasks.wire.MAX_HEADER`), so a task's output
travels back with its last ``MAX_CHARS`` characters; ``pool.logs(engine)`` has the rest.

Both sides import the standard library only.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["Catching", "show", "MAX_CHARS"]

MAX_CHARS = 100_000  # characters of a task's output sent back (stdout and stderr each)


class _Catch:
    """A stream that keeps what is written to it (its latest MAX_CHARS characters) and
    passes it on."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def write(self, text: str) -> Any:
        if isinstance(text, str) and text:
            self.parts.append(text)
            self.size += len(text)
            if self.size > 2 * MAX_CHARS:
                self._trim()
        return self.stream.write(text)

    def _trim(self) -> None:
        joined = "".join(self.parts)
        self.dropped += len(joined) - MAX_CHARS
        self.parts, self.size = [joined[-MAX_CHARS:]], MAX_CHARS

    def text(self) -> str:
        if self.size > MAX_CHARS:
            self._trim()
        joined = "".join(self.parts)
        if self.dropped:
            note = f"[... {self.dropped} characters before these; pool.logs(engine) has them]\n"
            return note + joined
        return joined

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class Catching:
    """``with Catching() as caught:`` a task's prints go to ``caught`` and on."""

    def __enter__(self) -> Catching:
        self.saved = sys.stdout, sys.stderr
        self.out, self.err = _Catch(sys.stdout), _Catch(sys.stderr)
        sys.stdout, sys.stderr = self.out, self.err
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self.saved

    def printed(self) -> list[str]:
        """``[stdout, stderr]`` of the task, or ``[]`` when it printed nothing."""
        out, err = self.out.text(), self.err.text()
        return [out, err] if out or err else []


def _show(text: str, heading: str, stream: TextIO) -> None:
    if not text:
        return
    several = text.count("\n") > int(text.endswith("\n"))
    sep = "\n" if several and not text.startswith("\n") else " "
    stream.write(f"{heading}{sep}{text}" + ("" if text.endswith("\n") else "\n"))


def show(engine_id: int | None, stdout: str, stderr: str) -> None:
    """In the client: a task's output under ipyparallel's ``[stdout:N]`` headings."""
    where = "?" if engine_id is None else str(engine_id)
    _show(stdout, f"[stdout:{where}]", sys.stdout)
    _show(stderr, f"[stderr:{where}]", sys.stderr)
