"""One engine set as one Indexed Job, kept in ``cluster.engines`` like any launcher.

The cluster file records the Job's name and namespace, so ``pxpool stop`` from another
process deletes it too. While the Job runs its pods are looked at (one list request
a poll): a pod Kubernetes cannot run (:func:`.reasons.pod_problem`) ends the set at
once with Kubernetes' reason, which the startup wait raises as
:class:`~.errors.PodFailedError` and the supervisor reports as the engines' death
("out of memory" for OOMKilled). Stopping deletes the Job and waits, bounded, until
its pods are gone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ipyparallel as ipp
from ipyparallel.cluster.launcher import BaseLauncher
from traitlets import Any as AnyTrait
from traitlets import Dict, Float, List, Unicode

from ...errors import EngineStartError
from ..jobs import EndsOnStop, shut_engines_down
from .api import KubeApi
from .errors import PodFailedError, pod_failed
from .reasons import Problem, job_problem, pod_problem

__all__ = ["PodJob", "describe_pods"]

POLL_FIRST = 0.25  # seconds between looks at the pods, growing to POLL_MAX
POLL_MAX = 2.0
WATCH_FAILURES = 5  # failed looks in a row after which a Job is no longer watched


def describe_pods(pods: list[dict[str, Any]]) -> str:
    """``name Phase (waiting reason)`` per pod, for a timeout's message."""
    parts = []
    for pod in pods:
        status = pod.get("status") or {}
        waiting = [
            str((c.get("state") or {}).get("waiting", {}).get("reason"))
            for c in status.get("containerStatuses") or []
            if (c.get("state") or {}).get("waiting")
        ]
        extra = f" ({', '.join(waiting)})" if waiting else ""
        parts.append(f"{pod.get('metadata', {}).get('name')} {status.get('phase')}{extra}")
    return "; ".join(parts) or "no pods yet"


class PodJob(EndsOnStop, BaseLauncher):  # type: ignore[misc]  # untyped base
    """An Indexed Job running a set of engines; ``stop()`` deletes it and waits for its pods."""

    engine_set_id = Unicode()
    provider_name = Unicode().tag(to_dict=True)
    profile_name = Unicode().tag(to_dict=True)
    job_name = Unicode().tag(to_dict=True)
    namespace = Unicode().tag(to_dict=True)
    engine_ids: List[int] = List().tag(to_dict=True)
    manifest = Dict()
    cancel_timeout = Float(60.0)
    unschedulable_wait = Float(0.0)  # seconds before Unschedulable is fatal (autoscalers)
    problem = AnyTrait(None)  # the Problem that ended the set, if one did

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._watcher: asyncio.Future[None] | None = None
        self._api: KubeApi | None = None
        self._pods: list[dict[str, Any]] = []
        self._output = ""
        self._unschedulable_since = 0.0
        self.engine_client: ipp.Client | None = None  # set by the provider

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            self._api = KubeApi()
        return self._api

    @property
    def pods_seen(self) -> list[dict[str, Any]]:
        """The Job's pods at the last look."""
        return self._pods

    @property
    def selector(self) -> str:
        return f"job-name={self.job_name}"  # the label the Job controller gives its pods

    def find_args(self) -> list[str]:
        return ["kubernetes", "job", self.job_name]

    async def start(self, n: int | None = None) -> None:
        await asyncio.to_thread(self.api.create_job, self.namespace, dict(self.manifest))
        self.notify_start({"job_name": self.job_name, "namespace": self.namespace})
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        delay = POLL_FIRST
        seen = False
        failures = 0
        while self.state == "running":
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX)
            try:
                pods = await asyncio.to_thread(self.api.list_pods, self.namespace, self.selector)
                failures = 0
            except Exception as exc:  # a moment without the API server: look again
                failures += 1
                self.log.debug("pxpool: listing pods of %s: %r", self.job_name, exc)
                if failures >= WATCH_FAILURES:  # gone for good (a process that let go)
                    return
                continue
            self._pods = pods
            seen = seen or bool(pods)
            problem = self._fatal(next(filter(None, map(pod_problem, pods)), None))
            if problem is None and seen and _all_ended(pods):
                problem = await self._job_ended()
            if problem is not None and self.state == "running":
                await self._ended(problem)
                return

    def _fatal(self, problem: Problem | None) -> Problem | None:
        """``problem``, unless the pods are Unschedulable for less than
        ``unschedulable_wait`` (a cluster autoscaler adds nodes for such pods)."""
        if problem is None or problem.reason != "Unschedulable" or not self.unschedulable_wait:
            return problem
        first = self._unschedulable_since = self._unschedulable_since or time.monotonic()
        return problem if time.monotonic() - first >= self.unschedulable_wait else None

    async def _job_ended(self) -> Problem:
        job = await asyncio.to_thread(self.api.read_job, self.namespace, self.job_name)
        return (job_problem(job) if job else None) or Problem(
            "Completed", "every engine of the Job exited", fatal=False, exit_code=0
        )

    async def _ended(self, problem: Problem) -> None:
        self.problem = problem
        if problem.pod:
            self._output = await asyncio.to_thread(self.api.pod_log, self.namespace, problem.pod)
        code = problem.exit_code if problem.exit_code is not None else 1
        self.notify_stop({"job_name": self.job_name, "exit_code": code, "how": problem.how()})

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self._shut_engines_down()
        try:
            await asyncio.to_thread(self.api.delete_job, self.namespace, self.job_name)
            await self.pods_gone(self.cancel_timeout)
        finally:
            if self.state == "running":
                self.notify_stop({"job_name": self.job_name, "exit_code": 0})

    async def pods_gone(self, timeout: float) -> bool:
        """Wait (bounded) until no pod of this Job is left; True if none is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(self.api.list_pods, self.namespace, self.selector):
                return True
            await asyncio.sleep(0.2)
        return False

    async def _shut_engines_down(self) -> None:
        if self.state == "running":
            await shut_engines_down(self.engine_client, self.engine_ids, self.cancel_timeout)

    def get_output(self, remove: bool = False) -> str:
        return self._output

    def _log_output(self, stop_data: Any = None) -> None:
        """pxpool quotes the pod's log in its error instead of logging it."""

    # -------------------------------------------------- reports for the startup wait

    def exit_error(self, missing: list[int]) -> PodFailedError:
        problem = self.problem or Problem("Ended", "the Job's pods ended", fatal=False)
        return pod_failed(problem, self.job_name, self.engine_ids, self.profile_name, self._output)

    @classmethod
    def missing_error(
        cls, launchers: list[Any], registered: list[int], wanted: list[int], timeout: float
    ) -> EngineStartError:
        jobs = [job for job in launchers if isinstance(job, PodJob)]
        states = "; ".join(f"Job {j.job_name}: {describe_pods(j.pods_seen)}" for j in jobs)
        profile = jobs[0].profile_name if jobs else "?"
        return EngineStartError(
            f"{len(registered)} of {len(wanted)} engines registered within {timeout:g}s; "
            f"missing: {sorted(set(wanted) - set(registered))}. {states}. Pods still pending "
            f"wait for nodes or images: raise timeouts.start in profile {profile!r}, or look "
            "with `kubectl describe pod`."
        )


def _all_ended(pods: list[dict[str, Any]]) -> bool:
    """True when no pod is left running or starting (none at all, or every one ended)."""
    return all((p.get("status") or {}).get("phase") in ("Succeeded", "Failed") for p in pods)
