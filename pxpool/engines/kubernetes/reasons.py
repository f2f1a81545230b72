"""Why engine pods did not come up or died, in Kubernetes' own words.

Read from the pods' and Jobs' status as the API returns it (camelCase dicts), so the
rules are tested on recorded statuses. A *fatal* problem ends the wait at once: a
pod the scheduler cannot place, an image that cannot be pulled, a container that
cannot be configured do not fix themselves while pxpool waits out its start timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Problem", "pod_problem", "job_problem", "FATAL_WAITING", "OOM_KILLED"]

OOM_KILLED = "OOMKilled"
# waiting reasons of a container that will not start without a change to the profile
FATAL_WAITING = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)
_HINTS = {
    "Unschedulable": "lower cpu, memory or gpus per engine (or engines_per_pod), or check "
    "node_selector and tolerations against the cluster's nodes",
    "ErrImagePull": "check image (and image_pull_secrets for a private registry)",
    "ImagePullBackOff": "check image (and image_pull_secrets for a private registry)",
    "InvalidImageName": "check image: it is not a valid image reference",
    "ErrImageNeverPull": "image_pull_policy = 'Never' needs the image on the node; use 'IfNotPresent'",
    "CreateContainerConfigError": "a Secret, ConfigMap or security setting the container "
    "needs is missing or wrong; `kubectl describe pod` names it",
    "CreateContainerError": "the runtime could not create the container; "
    "`kubectl describe pod` says why",
    OOM_KILLED: "raise memory_limit (or memory) in the profile",
    "DeadlineExceeded": "the Job reached its walltime (activeDeadlineSeconds); raise walltime",
}


@dataclass(frozen=True)
class Problem:
    """What went wrong with one pod (or Job): the reason word, its message, the pod."""

    reason: str
    message: str
    pod: str = ""
    fatal: bool = True
    exit_code: int | None = None

    @property
    def oom(self) -> bool:
        return self.reason == OOM_KILLED

    @property
    def hint(self) -> str:
        return _HINTS.get(self.reason, "`kubectl describe pod` and `kubectl logs` say more")

    def describe(self) -> str:
        where = f"pod {self.pod}: " if self.pod else ""
        text = f"{where}{self.reason}"
        return f"{text} ({self.message})" if self.message else text

    def how(self) -> str:
        """The death as the health table and ``pool.engine_deaths()`` say it."""
        if self.oom:
            return f"out of memory: Kubernetes killed pod {self.pod} (OOMKilled)"
        return (
            f"pod {self.pod} ended: {self.reason}" + (f" ({self.message})" if self.message else "")
            if self.pod
            else f"its Job ended: {self.describe()}"
        )


def _name(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def _unschedulable(pod: dict[str, Any]) -> Problem | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return Problem("Unschedulable", str(condition.get("message") or ""), _name(pod))
    return None


def _container_problem(pod: dict[str, Any], status: dict[str, Any]) -> Problem | None:
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in FATAL_WAITING:
        return Problem(str(waiting["reason"]), str(waiting.get("message") or ""), _name(pod))
    ended = state.get("terminated") or {}
    if ended.get("reason") == OOM_KILLED:
        return Problem(OOM_KILLED, "", _name(pod), exit_code=ended.get("exitCode"))
    if ended and ended.get("exitCode") not in (None, 0):
        code = ended.get("exitCode")
        message = str(ended.get("message") or f"exit code {code}")
        return Problem(str(ended.get("reason") or "Error"), message, _name(pod), exit_code=code)
    return None


def pod_problem(pod: dict[str, Any]) -> Problem | None:
    """The first problem of ``pod`` that pxpool reports, or None (fine, or still starting)."""
    status = pod.get("status") or {}
    found = _unschedulable(pod)
    for container in status.get("containerStatuses") or []:
        found = found or _container_problem(pod, container)
    if found is None and status.get("phase") == "Failed":
        found = Problem(
            str(status.get("reason") or "Failed"), str(status.get("message") or ""), _name(pod)
        )
    return found


def job_problem(job: dict[str, Any]) -> Problem | None:
    """A Job that failed as a whole (its walltime, a failed pod under backoffLimit 0)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return Problem(
                str(condition.get("reason") or "Failed"), str(condition.get("message") or "")
            )
    return None
