"""Failures of the ssh provider, raised before or while remote engines start.

Both subclass :class:`~pxpool.errors.EngineStartError`, so code that handles a pool
that did not come up catches them too; their attributes carry the values the
message quotes (host, ssh's stderr, both versions).
"""

from __future__ import annotations

from ..errors import EngineStartError, tail

__all__ = ["SSHConnectError", "RemotePythonError"]


class SSHConnectError(EngineStartError):
    """ssh could not reach a host or log in (refused, timed out, authentication failed)."""

    def __init__(
        self, host: str, command: str, exit_code: int | None, stderr: str, hint: str
    ) -> None:
        self.host = host
        self.command = command
        self.exit_code = exit_code
        self.stderr = stderr
        what = "did not answer" if exit_code is None else f"exited with {exit_code}"
        if "Permission denied" in stderr:
            what += " (authentication failed)"
        super().__init__(
            f"Cannot reach SSH host {host}: `{command}` {what}. "
            f"ssh said:\n{tail(stderr) if stderr.strip() else '    (nothing)'}\n  {hint}"
        )


class RemotePythonError(EngineStartError):
    """The remote python is missing, lacks ipyparallel, or differs from this client's.

    ``remote_version``/``remote_ipyparallel`` are ``None`` when the interpreter did
    not run (missing) or ipyparallel could not be imported there.
    """

    def __init__(
        self,
        host: str,
        python: str,
        problem: str,
        *,
        remote_version: str | None = None,
        remote_ipyparallel: str | None = None,
        local_version: str = "",
        local_ipyparallel: str = "",
        output: str = "",
    ) -> None:
        self.host = host
        self.python = python
        self.remote_version = remote_version
        self.remote_ipyparallel = remote_ipyparallel
        self.local_version = local_version
        self.local_ipyparallel = local_ipyparallel
        super().__init__(f"SSH host {host}: {problem}", output)
