"""``pool.logs(engine_id)``: an engine's output, for a running or a dead engine.

Two sources, each shown under a heading naming its file:

1. the engine process's own output (start-up and log lines, a crash's last words),
   as its provider's launcher keeps it (:mod:`pxpool._logs.output`); for an engine
   that died, also the output of the process that ended, taken when the death was
   noticed (ipyparallel removes the file once the replacement starts);
2. the lines the engine kept of everything its tasks and ``%%px`` cells printed
   (:mod:`pxpool._logs.agent`), across every process that had this engine id.

The kept file is read where it is: directly when this machine sees the same file
(the pool's directory, where local engines and batch jobs keep it; the ring's header
holds the random token the engine reported), over the engine's own ssh command for an
SSH host (which keeps it in its temporary directory), else from the engine while it runs.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core import runtime
from ..errors import EngineNotFoundError
from . import agent as _logs_agent
from .agent import last_lines
from .output import engine_output, output_path

if TYPE_CHECKING:
    from .._core.core import PoolCore

__all__ = ["EngineLogs", "KeptFile"]

log = logging.getLogger("pxpool.logs")
INSTALL_TIMEOUT = 30.0  # seconds for an engine to start keeping its output
READ_TIMEOUT = 10.0  # seconds for reading a kept file over ssh or from the engine
REMOVE_TIMEOUT = 5.0  # seconds for removing a host's kept files at the pool's stop
CONNECT_TIMEOUT = 3.0  # seconds for ssh to reach a host for a kept file
ENDED_LINES = 2000  # lines kept of the output of an engine process that ended


@dataclass(frozen=True)
class KeptFile:
    """Where one engine keeps its output (as its agent reported it)."""

    path: str
    host: str
    token: str  # the ring's random token (its header), as the engine read it
    ssh_argv: tuple[str, ...] = ()  # the engine's ssh command, for an SSH host

    def local(self) -> bool:
        """True when this machine sees the engine's file: the same path holds the same
        token here (also over NFS, where device numbers differ from host to host)."""
        return _logs_agent.token_of(self.path) == self.token


def _ssh_run(argv: tuple[str, ...], script: str, timeout: float) -> tuple[int | None, bytes]:
    """Run ``script`` through an engine's ssh command (here without one); (exit code or
    None, its stdout, or its stderr when it failed)."""
    # ssh keeps the first value of an option: a short connect timeout, ahead of the engine's
    quick = [argv[0], "-o", f"ConnectTimeout={CONNECT_TIMEOUT:g}", *argv[1:]] if argv else []
    command = [*quick, "--", shlex.join(["sh", "-c", script])] if argv else ["sh", "-c", script]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{type(exc).__name__}: {exc}".encode()
    return done.returncode, done.stdout if done.returncode == 0 else done.stderr


def _remove(where: tuple[str, tuple[str, ...]], folder: str) -> None:
    """Remove one host's kept files of a pool (and the user's folder of them, if empty)."""
    host, ssh_argv = where
    parent = shlex.quote(os.path.dirname(folder))
    script = f"rm -rf {shlex.quote(folder)}; rmdir {parent} 2>/dev/null; true"
    code, said = _ssh_run(ssh_argv, script, REMOVE_TIMEOUT)
    if code != 0:
        log.warning("pxpool: kept output %s on %s not removed: %r", folder, host, said)


def _how(code: Any) -> str:
    if isinstance(code, int) and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}" if isinstance(code, int) else "ended"


class EngineLogs:
    """One pool's engine logs: the engine hook, death snapshots, and the reading."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        self.lock = threading.Lock()
        self.kept: dict[int, KeptFile] = {}  # engine id -> its kept file
        # engine id -> (launcher, output) of its process that ended
        self.ended: dict[int, tuple[Any, str]] = {}
        self.gone: set[int] = set()  # engines that died and were not started again

    # ------------------------------------------------------------ engine side

    def engines_joined(self, core: PoolCore, engine_ids: list[int]) -> None:
        """Engine hook: ``engine_ids`` keep their output from now on."""
        if not engine_ids:
            return
        client, cluster = core.running()
        cluster.add_death_listener(self.engine_died)
        pool_logs = str(runtime.pool_dir(core.name) / "logs")
        ssh = {i: tuple(getattr(self._launcher_of(i), "ssh_argv", None) or ()) for i in engine_ids}
        pending = {  # an SSH host keeps the file on its own disk, read over ssh
            i: client[i].apply_async(_logs_agent.install, i, "" if ssh[i] else pool_logs, core.name)
            for i in engine_ids
        }
        for engine_id, result in pending.items():
            try:
                answer = result.get(timeout=INSTALL_TIMEOUT)
            except Exception as exc:
                log.warning("pxpool: engine %s does not keep its output: %r", engine_id, exc)
                continue
            kept = KeptFile(
                str(answer["path"]),
                str(answer["host"]),
                str(answer["token"]),
                ssh[engine_id],
            )
            with self.lock:
                self.kept[engine_id] = kept
                self.gone.discard(engine_id)

    def engine_died(self, set_id: str, stop_data: dict[str, Any]) -> None:
        """Death listener: keep the ended processes' output before ipyparallel removes it."""
        cluster = self.core.cluster
        launcher = None if cluster is None else cluster.engines.get(set_id)
        ids = self.core.engine_sets.get(set_id, [])
        if launcher is None or not ids:
            return
        how = _how(stop_data.get("exit_code"))
        for engine_id in ids:
            text = engine_output(launcher, engine_id, len(ids), ENDED_LINES)
            with self.lock:
                self.ended[engine_id] = (launcher, f"{text}(the process ended: {how})\n")
                self.gone.add(engine_id)

    def teardown(self, name: str) -> None:
        """Teardown hook: kept files outside the pool's directory go with the pool."""
        with self.lock:
            kept, self.kept = dict(self.kept), {}
            live = {i: entry for i, entry in kept.items() if i not in self.gone}
            self.ended.clear()
            self.gone.clear()
        folders = {  # <pool dir>/logs goes with the pool's directory; ssh only where needed
            (entry.host, () if entry.local() else entry.ssh_argv): os.path.dirname(entry.path)
            for entry in live.values()  # (not on a host whose engines all died: it may be down)
            if os.path.basename(os.path.dirname(entry.path)) == name
        }
        if folders:  # one ssh per host, side by side
            with ThreadPoolExecutor(len(folders), thread_name_prefix="pxpool-logs") as workers:
                list(workers.map(_remove, folders, folders.values()))

    # ------------------------------------------------------------ reading

    def _in_pool_dir(self, engine_id: int) -> KeptFile | None:
        """The file an engine keeps in the pool's directory (for an engine whose agent
        answered another process: this one attached later)."""
        path = str(runtime.pool_dir(self.core.name) / "logs" / f"engine-{engine_id}.log")
        token = _logs_agent.token_of(path)
        return KeptFile(path, "this machine", token) if token else None

    def _launcher_of(self, engine_id: int) -> Any:
        cluster = self.core.cluster
        for set_id, ids in self.core.engine_sets.items():
            if engine_id in ids and cluster is not None:
                return cluster.engines.get(set_id)
        return None

    def text(self, engine_id: int, tail: int = 200) -> str:
        """The last ``tail`` lines of each of the engine's outputs, under headings."""
        if isinstance(tail, bool) or not isinstance(tail, int) or tail <= 0:
            raise ValueError(f"tail must be a whole number of lines > 0; got {tail!r}")
        if isinstance(engine_id, bool) or not isinstance(engine_id, int):
            raise EngineNotFoundError(engine_id, self.core.registered_ids())
        with self.lock:
            kept = self.kept.get(engine_id) or self._in_pool_dir(engine_id)
            ended = self.ended.get(engine_id)
        known = self.core.owner_ids() | set(self.kept) | set(self.ended)
        if engine_id not in known and kept is None:
            raise EngineNotFoundError(engine_id, self.core.registered_ids())
        parts: list[str] = []
        if ended is not None:
            parts.append(f"==> engine {engine_id}: output of its process that ended <==\n")
            parts.append(last_lines(ended[1], tail))
        launcher = self._launcher_of(engine_id)
        if launcher is not None and (ended is None or launcher is not ended[0]):
            where = output_path(launcher) or "its launcher"
            parts.append(f"==> engine {engine_id}: process output ({where}) <==\n")
            together = sum(len(ids) for ids in self.core.sets_of([engine_id]))
            parts.append(engine_output(launcher, engine_id, together, tail))
        if kept is not None:
            parts.append(
                f"==> engine {engine_id}: printed, kept in {kept.path} on {kept.host} <==\n"
            )
            parts.append(self._read_kept(engine_id, kept, tail))
        elif launcher is None and ended is None:
            parts.append(f"(engine {engine_id} has kept no output yet)\n")
        return "".join(p if not p or p.endswith("\n") else p + "\n" for p in parts)

    def _read_kept(self, engine_id: int, kept: KeptFile, tail: int) -> str:
        if kept.local():
            return _logs_agent.read_tail(kept.path, tail)
        if kept.ssh_argv:  # the ring (2 MiB at most) comes over and is read here
            code, content = _ssh_run(kept.ssh_argv, f"cat {shlex.quote(kept.path)}", READ_TIMEOUT)
            if code == 0:
                return last_lines(_logs_agent.ring_text(content), tail)
            said = content.decode("utf-8", "replace").strip()[-300:]
            return f"(could not read it over ssh: {said})\n"
        if engine_id in self.core.registered_ids():
            try:
                view = self.core.view(engine_id)
                return str(view.apply_async(_logs_agent.tail, tail).get(timeout=READ_TIMEOUT))
            except Exception as exc:
                return f"(could not read it from the engine: {exc!r})\n"
        return f"(not readable from here: the engine is gone and {kept.host} is not reached over ssh)\n"
