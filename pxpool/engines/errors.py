"""Errors of the engine providers: batch jobs that did not bring engines, ssh hosts,
Kubernetes pods and API requests.

They subclass the start errors of :mod:`pxpool.errors` (whose docstring draws the whole
tree), so code that handles a pool that did not come up catches them too. Each carries
the facts a user needs without opening a log: the command and its output for a submit,
the job id, final state and output tail for a job that ended, the scheduler's own reason
for jobs still waiting, the host and ssh's stderr, both python versions::

    PoolStartError
    ├── SubmitCommandNotFound   sbatch/qsub/bsub/condor_submit is not on PATH
    ├── SubmitRejected          the submit command failed or printed no job id
    ├── KubernetesForbidden     RBAC refused a request (with the Role `pxpool k8s-rbac` prints)
    └── EngineStartError
        ├── JobFailedError      a job ended before all its engines registered (or,
        │                       for a controller job, before its connection files)
        ├── EnginesMissingError fewer engines than asked before the start timeout
        ├── SSHConnectError     ssh could not reach a host or log in
        ├── RemotePythonError   the remote python is missing or differs from this one
        └── PodFailedError      an engine pod cannot run: Unschedulable, ErrImagePull,
                                ImagePullBackOff, CreateContainerConfigError, OOMKilled, ...
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import EngineStartError, PoolStartError, tail

__all__ = [
    "SubmitCommandNotFound",
    "SubmitRejected",
    "JobFailedError",
    "EnginesMissingError",
    "SSHConnectError",
    "RemotePythonError",
    "KubernetesForbidden",
    "PodFailedError",
]


class SubmitCommandNotFound(PoolStartError):
    """The batch system's submit command is not on ``PATH``."""

    def __init__(self, command: str, profile: str, provider: str, path: str) -> None:
        self.command = command
        self.profile = profile
        super().__init__(
            f"Cannot submit engine jobs for profile {profile!r}: the {provider} submit command "
            f"{command!r} is not on PATH ({path or '(empty)'}). Run pxpool on a machine where "
            f"`{command}` works (a login node), or load its module before starting the pool; "
            f"`pxpool script {profile}` prints the job script without submitting it."
        )


class SubmitRejected(PoolStartError):
    """The submit command exited with an error, timed out, or printed no job id."""

    def __init__(
        self,
        command: Sequence[str],
        exit_code: int | None,
        stdout: str,
        stderr: str,
        profile: str,
        problem: str = "",
    ) -> None:
        self.command = list(command)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.profile = profile
        what = problem or f"exited with code {exit_code}"
        super().__init__(
            f"Submitting an engine job failed: `{' '.join(self.command)}` {what}.\n"
            f"  stdout:\n{tail(stdout) or '    (empty)'}\n"
            f"  stderr:\n{tail(stderr) or '    (empty)'}\n"
            f"Check queue/partition, account, walltime, memory and directives in profile "
            f"{profile!r}; `pxpool script {profile}` prints the script that was submitted."
        )


class JobFailedError(EngineStartError):
    """A batch job left the queue or failed before all of its engines registered."""

    def __init__(
        self,
        job_id: str,
        state: str,
        output: str,
        *,
        system: str,
        engine_ids: Sequence[int],
        output_file: str,
        profile: str,
        controller: bool = False,
    ) -> None:
        self.job_id = job_id
        self.state = state
        self.engine_ids = list(engine_ids)
        self.output_file = output_file
        self.controller = controller  # the controller's own job (controller.location = "job")
        what, before = (
            ("the pool's controller", "the controller wrote its connection files")
            if controller
            else (f"engines {self.engine_ids}", "its engines registered")
        )
        super().__init__(
            f"{system} job {job_id} ({what}) ended in state {state} before {before}; "
            f"its output file is {output_file}. Fix the prologue, "
            f"python or directives in profile {profile!r} (see `pxpool script {profile}`) "
            "and start the pool again.",
            output or "(the job wrote no output)",
        )


class EnginesMissingError(EngineStartError):
    """Fewer engines registered than asked before the start timeout; jobs still wait."""

    def __init__(
        self,
        registered: Sequence[int],
        wanted: Sequence[int],
        timeout: float,
        jobs: dict[str, tuple[str, str]],
        pending: Sequence[str],
        *,
        system: str,
        profile: str,
    ) -> None:
        self.registered = sorted(registered)
        self.wanted = sorted(wanted)
        self.jobs = dict(jobs)  # job id -> (state, scheduler's reason)
        self.pending = list(pending)
        lines = "\n".join(
            f"    job {job_id}: {state}" + (f" (reason: {reason})" if reason else "")
            for job_id, (state, reason) in self.jobs.items()
        )
        super().__init__(
            f"{len(self.registered)} of {len(self.wanted)} engines registered within "
            f"{timeout:g}s; missing: {sorted(set(self.wanted) - set(self.registered))}. "
            f"{system} jobs still pending: {', '.join(self.pending) or '(none)'}.\n"
            f"  Jobs of these engines:\n{lines or '    (none known)'}\n"
            f"Ask for fewer cores or less memory, another queue, or raise timeouts.start "
            f"in profile {profile!r}."
        )


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


# ------------------------------------------------------------------ Kubernetes


class KubernetesForbidden(PoolStartError):
    """The API server answered 403: the service account lacks a permission; the
    message quotes the Role (``role``, YAML) that grants what pxpool needs."""

    def __init__(self, verb: str, resource: str, namespace: str, message: str, role: str) -> None:
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        super().__init__(
            f"Kubernetes forbids this service account to {verb} {resource} in namespace "
            f"{namespace!r}: {message}\nAsk an administrator to apply this Role (printed by "
            f"`pxpool k8s-rbac --namespace {namespace}`):\n\n{role}"
        )


class PodFailedError(EngineStartError):
    """An engine pod will not run (or ended) before its engines registered; ``reason``
    is Kubernetes' word (``Unschedulable``, ``ImagePullBackOff``, ``OOMKilled``, ...)."""

    def __init__(
        self,
        reason: str,
        what: str,
        hint: str,
        job: str,
        engine_ids: Sequence[int],
        output: str = "",
    ) -> None:
        self.reason = reason
        self.job = job
        self.engine_ids = list(engine_ids)
        super().__init__(
            f"Kubernetes Job {job} (engines {self.engine_ids}) cannot run its engines: "
            f"{what}. Next: {hint}.",
            output,
        )
