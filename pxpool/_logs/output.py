"""What an engine's process wrote to its own stdout and stderr, as its launcher kept it.

Every provider sends the engine process's output (its start-up and log lines, a
crash's last words) to a file: local engines and the MPI launcher to one per process
in the pool's ``log/`` folder, an SSH engine through its ssh client to the same place,
a batch job to the job's output file (one per job, shared by its engines). ipyparallel
reads such a file and removes it when an engine set stops, and caches what it read;
so a running engine's file is read directly, and a dead one's text is taken from its
launcher when the death is noticed (:meth:`pxpool._logs.logs.EngineLogs.engine_died`).
"""

from __future__ import annotations

import os
import re
from typing import Any

from .agent import last_lines

READ_BYTES = 1 << 20  # bytes read from the end of an output file

__all__ = ["engine_output", "process_output", "file_tail", "of_engine"]

# ipyparallel's engine log lines name their engine: "[PxpoolEngine.3.3] ..."
_TAGGED = re.compile(r"\[\w*Engine\.(\d+)[.\]]")


def file_tail(path: str, lines: int) -> str:
    """The last ``lines`` lines of a text file ("" if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - READ_BYTES))
            return last_lines(handle.read().decode("utf-8", "replace"), lines)
    except OSError:
        return ""


def of_engine(text: str, engine_id: int) -> str:
    """``text`` without the log lines of other engines (a batch job's output file is
    shared by the job's engines); untagged lines stay."""
    kept = []
    for line in text.splitlines(keepends=True):
        tag = _TAGGED.search(line)
        if tag is None or int(tag[1]) == engine_id:
            kept.append(line)
    return "".join(kept)


def _file_or_cached(launcher: Any, lines: int) -> str:
    path = str(getattr(launcher, "output_file", "") or "")
    if path and os.path.isfile(path):
        return file_tail(path, lines)
    get_output = getattr(launcher, "get_output", None)
    if callable(get_output):  # read and removed on stop: ipyparallel keeps the text
        return last_lines(str(get_output() or ""), lines)
    return ""


def process_output(launcher: Any, lines: int) -> str:
    """The last ``lines`` lines one engine set's launcher kept of its processes' output."""
    since_start = getattr(launcher, "output_since_start", None)
    if callable(since_start):  # an SSH engine: only this run's part of its file
        return last_lines(str(since_start()), lines)
    children = getattr(launcher, "launchers", None)
    if isinstance(children, dict):  # ipyparallel's local engine set: one file per engine
        stopped = getattr(launcher, "outputs", None) or {}
        texts = [str(text) for key, text in stopped.items() if key not in children]
        texts += [_file_or_cached(child, lines) for child in children.values()]
        return last_lines("".join(texts), lines)
    return _file_or_cached(launcher, lines)


def output_path(launcher: Any) -> str:
    """The file a launcher sends its processes' output to, for headings ("" if none)."""
    path = str(getattr(launcher, "output_file", "") or "")
    children = getattr(launcher, "launchers", None)
    if not path and isinstance(children, dict) and children:
        path = str(getattr(next(iter(children.values())), "output_file", "") or "")
    return path


def engine_output(launcher: Any, engine_id: int, engines: int, lines: int) -> str:
    """The last ``lines`` lines of ``engine_id``'s process output; in a set of several
    ``engines`` (a batch job's), without the other engines' log lines."""
    if engines <= 1:
        return process_output(launcher, lines)
    return last_lines(of_engine(process_output(launcher, engines * lines), engine_id), lines)
