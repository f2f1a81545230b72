"""Which pod and Job states the kubernetes provider reports, and in whose words: the
statuses below are shaped as the API server returns them."""

from __future__ import annotations

from typing import Any

import pytest

from pxpool.engines.errors import KubernetesForbidden, PodFailedError
from pxpool.engines.kubernetes.errors import forbidden, pod_failed
from pxpool.engines.kubernetes.reasons import job_problem, pod_problem

SCHEDULER = (
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are "
    "available: 3 No preemption victims found for incoming pod."
)


def pod(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "pxpool-p-pods-0-ab12-0-xyz"}, "status": status}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": message}}
    return pod({"phase": "Pending", "containerStatuses": [{"name": "engines", "state": state}]})


def test_unschedulable_pod_is_fatal_with_the_schedulers_message() -> None:
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    found = pod_problem(
        pod({"phase": "Pending", "conditions": [{**condition, "message": SCHEDULER}]})
    )
    assert found is not None and found.fatal
    assert found.describe() == f"pod pxpool-p-pods-0-ab12-0-xyz: Unschedulable ({SCHEDULER})"
    assert "gpus" in found.hint


@pytest.mark.parametrize(
    "reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"]
)
def test_container_that_cannot_start_is_fatal(reason: str) -> None:
    found = pod_problem(waiting(reason, "details"))
    assert found is not None and (found.reason, found.message) == (reason, "details")


def test_pod_still_being_created_is_no_problem() -> None:
    """The negative control: a pod on its way (pulling, mounting) is waited for."""
    assert pod_problem(waiting("ContainerCreating")) is None
    assert pod_problem(pod({"phase": "Running"})) is None


def test_oom_killed_container_reads_as_out_of_memory() -> None:
    ended = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    found = pod_problem(pod({"phase": "Failed", "containerStatuses": [{"state": ended}]}))
    assert found is not None and found.oom and found.exit_code == 137
    assert (
        found.how() == "out of memory: Kubernetes killed pod pxpool-p-pods-0-ab12-0-xyz (OOMKilled)"
    )


def test_job_past_its_deadline_names_deadline_exceeded() -> None:
    condition = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "m"}
    found = job_problem({"status": {"conditions": [condition]}})
    assert found is not None and found.how() == "its Job ended: DeadlineExceeded (m)"
    assert job_problem({"status": {"conditions": [{**condition, "status": "False"}]}}) is None


def test_pod_failure_error_says_what_and_what_next() -> None:
    found = pod_problem(waiting("ImagePullBackOff", 'Back-off pulling image "x"'))
    assert found is not None
    error = pod_failed(found, "pxpool-p-pods-0-ab12", [0, 1], "kubernetes")
    assert isinstance(error, PodFailedError) and error.reason == "ImagePullBackOff"
    assert str(error) == (
        "Kubernetes Job pxpool-p-pods-0-ab12 (engines [0, 1]) cannot run its engines: pod "
        'pxpool-p-pods-0-ab12-0-xyz: ImagePullBackOff (Back-off pulling image "x"). Next: check '
        "image (and image_pull_secrets for a private registry) in profile 'kubernetes'."
    )


def test_forbidden_error_carries_the_role_to_apply() -> None:
    error = forbidden("create", "jobs", "jhub", "jobs.batch is forbidden", "jupyter")
    assert isinstance(error, KubernetesForbidden)
    text = str(error)
    assert "create jobs in namespace 'jhub'" in text and "pxpool k8s-rbac --namespace jhub" in text
    assert "kind: RoleBinding" in text and "name: jupyter" in text


def test_image_without_pxpool_is_named_as_such() -> None:
    ended = {"terminated": {"reason": "Error", "exitCode": 1}}
    found = pod_problem(pod({"phase": "Failed", "containerStatuses": [{"state": ended}]}))
    assert found is not None
    output = "/opt/conda/bin/python: Error while finding module specification for "
    output += "'pxpool._entry.engine_main' (ModuleNotFoundError: No module named 'pxpool')"
    error = pod_failed(found, "job", [0], "kubernetes", output)
    assert "the image lacks the Python package 'pxpool': set image in profile" in str(error)
