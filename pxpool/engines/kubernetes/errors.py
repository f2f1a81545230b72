"""How the Kubernetes provider's errors (in :mod:`pxpool.engines.errors`, with every
provider's) are made from what Kubernetes said: the Role for a refusal, the next step
for a pod's reason."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ...errors import PoolStartError, ProfileError
from ..errors import KubernetesForbidden, PodFailedError
from .rbac import role_yaml
from .reasons import Problem

__all__ = [
    "KubernetesForbidden",
    "PodFailedError",
    "forbidden",
    "pod_failed",
    "image_unknown",
    "rejected",
]

_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


def image_unknown(profile: str, why: str) -> ProfileError:
    """``image`` is empty and the notebook's own pod (whose image it defaults to) was
    not found."""
    return ProfileError(
        f"Profile {profile!r} sets no kubernetes.image and the notebook's own image cannot "
        f"be found ({why}). Set image in the profile, e.g. "
        f"Pool.from_profile({profile!r}, image='quay.io/jupyter/scipy-notebook:2024-05-27'), "
        "with the same Python and packages as this notebook."
    )


def rejected(verb: str, resource: str, status: int | None, message: str) -> PoolStartError:
    """The API server refused a request: an invalid object, an unknown namespace, ..."""
    return PoolStartError(
        f"Kubernetes refused to {verb} {resource} (HTTP {status}): {message}. "
        "`pool.job_script()` shows the manifests pxpool sends."
    )


def forbidden(
    verb: str, resource: str, namespace: str, message: str, service_account: str
) -> KubernetesForbidden:
    """A 403, with the Role ``service_account`` needs in ``namespace``."""
    role = role_yaml(namespace, service_account)
    return KubernetesForbidden(verb, resource, namespace, message, role)


def pod_failed(
    problem: Problem, job: str, engine_ids: Sequence[int], profile: str, output: str = ""
) -> PodFailedError:
    """``problem`` of a pod of ``job``, with the next step (and the pod's log)."""
    hint = f"{problem.hint} in profile {profile!r}"
    missing = _MISSING_MODULE.search(output)
    if missing:  # e.g. pxpool installed with --user in a home the pods do not mount
        hint = (
            f"the image lacks the Python package {missing[1]!r}: set image in profile "
            f"{profile!r} to one with pxpool and ipyparallel installed (packages in the "
            "notebook's home directory are not in the engine pods)"
        )
    return PodFailedError(problem.reason, problem.describe(), hint, job, engine_ids, output)
