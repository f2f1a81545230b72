"""Errors of the Kubernetes provider, each with Kubernetes' own reason and the next step.

They subclass the start errors of :mod:`pxpool.errors`, so code that handles a pool
that did not come up catches them too::

    ProfileError
    └── KubernetesImageUnknown  no image in the profile and no notebook pod to take it from
    PoolStartError
    ├── KubernetesUnavailable   no Kubernetes client package, or no cluster configuration
    ├── KubernetesForbidden     RBAC refused a request (names the Role `pxpool k8s-rbac` prints)
    ├── KubernetesRejected      the API server refused an object or answered with an error
    └── EngineStartError
        └── PodFailedError      an engine pod cannot run: Unschedulable, ErrImagePull,
                                ImagePullBackOff, CreateContainerConfigError, OOMKilled, ...
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ...errors import EngineStartError, PoolStartError, ProfileError
from .rbac import role_yaml
from .reasons import Problem

_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")

__all__ = [
    "KubernetesImageUnknown",
    "KubernetesUnavailable",
    "KubernetesForbidden",
    "KubernetesRejected",
    "PodFailedError",
]


class KubernetesImageUnknown(ProfileError):
    """``image`` is empty and the notebook's own pod (whose image it defaults to) was not found."""

    def __init__(self, profile: str, why: str) -> None:
        self.profile = profile
        super().__init__(
            f"Profile {profile!r} sets no kubernetes.image and the notebook's own image cannot "
            f"be found ({why}). Set image in the profile, e.g. "
            f"Pool.from_profile({profile!r}, image='quay.io/jupyter/scipy-notebook:2024-05-27'), "
            "with the same Python and packages as this notebook."
        )


class KubernetesUnavailable(PoolStartError):
    """The ``kubernetes`` package is missing, or neither an in-cluster service account
    nor a kubeconfig says which cluster to use."""


class KubernetesForbidden(PoolStartError):
    """The API server answered 403: the service account lacks a permission."""

    def __init__(
        self, verb: str, resource: str, namespace: str, message: str, service_account: str
    ) -> None:
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        super().__init__(
            f"Kubernetes forbids this service account to {verb} {resource} in namespace "
            f"{namespace!r}: {message}\nAsk an administrator to apply this Role (printed by "
            f"`pxpool k8s-rbac --namespace {namespace}`):\n\n"
            + role_yaml(namespace, service_account)
        )


class KubernetesRejected(PoolStartError):
    """The API server refused a request: an invalid object, an unknown namespace, ..."""

    def __init__(self, verb: str, resource: str, status: int | None, message: str) -> None:
        self.status = status
        super().__init__(
            f"Kubernetes refused to {verb} {resource} (HTTP {status}): {message}. "
            "`pool.job_script()` shows the manifests pxpool sends."
        )


class PodFailedError(EngineStartError):
    """An engine pod will not run (or ended) before its engines registered."""

    def __init__(
        self,
        problem: Problem,
        job: str,
        engine_ids: Sequence[int],
        profile: str,
        output: str = "",
    ) -> None:
        self.problem = problem
        self.reason = problem.reason
        self.job = job
        self.engine_ids = list(engine_ids)
        hint = f"{problem.hint} in profile {profile!r}"
        missing = _MISSING_MODULE.search(output)
        if missing:  # e.g. pxpool installed with --user in a home the pods do not mount
            hint = (
                f"the image lacks the Python package {missing[1]!r}: set image in profile "
                f"{profile!r} to one with pxpool and ipyparallel installed (packages in the "
                "notebook's home directory are not in the engine pods)"
            )
        super().__init__(
            f"Kubernetes Job {job} (engines {self.engine_ids}) cannot run its engines: "
            f"{problem.describe()}. Next: {hint}.",
            output,
        )
