"""The kubernetes provider's manifests: validated offline against the official
Kubernetes OpenAPI schema (kubernetes-validate, strict), golden-tested, and the pod's
shell run for real (``sh``, with a stand-in for python), as job scripts are."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import pxpool
from pxpool.engines import provider_for
from pxpool.engines.kubernetes import KubernetesProvider
from pxpool.engines.kubernetes.manifests import (
    JobRequest,
    Owner,
    dns_name,
    job_manifest,
    pod_script,
    secret_manifest,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

GOLDEN = Path(__file__).parent / "golden" / "kubernetes-manifests.yaml"
SCHEMA_VERSIONS = ("1.33",)  # a recent cluster's
FULL = {
    "image": "quay.io/jupyter/scipy-notebook:2024-05-27",
    "namespace": "science",
    "cpu": "500m",
    "cpu_limit": "2",
    "k8s_memory": "2Gi",
    "k8s_memory_limit": "3Gi",
    "gpus": 1,
    "node_selector": "cloud.google.com/gke-nodepool=gpu",
    "tolerations": "nvidia.com/gpu:NoSchedule,dedicated=science:NoExecute,spot",
    "service_account": "pxpool-engines",
    "image_pull_secrets": "regcred",
    "k8s_walltime": "02:00:00",
    "engines_per_pod": 2,
    "pods_per_job": 2,
    "drain_time": 45,
    "engines": 4,
    "env": "OMP_NUM_THREADS=1",
}


def provider(**overrides: Any) -> KubernetesProvider:
    found = provider_for(pxpool.load_profile("kubernetes", **overrides))
    assert isinstance(found, KubernetesProvider)
    return found


def manifests(**overrides: Any) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(provider(**overrides).job_script("demo")))


VARIANTS = {
    "defaults": {"image": "python:3.11-slim"},
    "everything": FULL,
    "one-pod-many-engines": {"image": "python:3.11", "engines": 8, "engines_per_pod": 8},
}


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_fits_the_kubernetes_openapi_schema(variant: str, version: str) -> None:
    for document in manifests(**VARIANTS[variant]):
        kubernetes_validate.validate(document, version, strict=True)


def test_schema_validation_refuses_what_a_cluster_would_refuse() -> None:
    """The positive control of the test above: the validator does reject a bad field."""
    job = manifests(**VARIANTS["defaults"])[1]
    job["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # "resources" misspelt
    with pytest.raises(kubernetes_validate.ValidationError, match="'resource' was unexpected"):
        kubernetes_validate.validate(job, "1.33", strict=True)


def test_manifests_match_the_golden_file() -> None:
    """Regenerate with PXPOOL_UPDATE_GOLDEN=1 after a deliberate change, and read the diff."""
    text = provider(**FULL).job_script("demo")
    if os.environ.get("PXPOOL_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_job_is_indexed_with_no_retries_and_resources_per_pod() -> None:
    secret, job = manifests(**FULL)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 7200
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 45
    resources = pod["containers"][0]["resources"]  # two engines per pod: twice each
    assert resources["requests"] == {"cpu": "1", "memory": "4Gi", "nvidia.com/gpu": "2"}
    assert resources["limits"] == {"memory": "6Gi", "cpu": "4", "nvidia.com/gpu": "2"}
    assert pod["tolerations"][2] == {"key": "spot", "operator": "Exists"}
    assert pod["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]


def test_secret_and_job_are_owned_by_the_notebook_pod() -> None:
    owner = Owner("jupyter-ada", "6f1c")
    request = JobRequest("p", "pods-0", "ns", "img", "python3", (0, 1), owner=owner)
    for made in (
        job_manifest(request, pxpool.load_profile("kubernetes").kubernetes),
        secret_manifest("p", "ns", "{}", owner),
    ):
        reference = made["metadata"]["ownerReferences"][0]
        assert (reference["kind"], reference["name"], reference["uid"]) == (
            "Pod",
            "jupyter-ada",
            "6f1c",
        )


def test_names_are_dns_labels_that_keep_long_pools_apart() -> None:
    a, b = (dns_name(f"pxpool-{'x' * 80}-{n}", room=6) for n in "ab")
    assert a != b and len(a) <= 57 and len(b) <= 57
    assert dns_name("pxpool-My_Pool.1") == "pxpool-my-pool-1"


def _run_pod(tmp_path: Path, rank: int, signal_after: float | None = None) -> list[str]:
    """Run the pod's shell with a python that records its engine id and waits."""
    fake = tmp_path / "python"
    fake.write_text(
        '#!/bin/sh\nfor a; do case "$a" in --IPEngine.id=*) id=${a#*=};; esac; done\n'
        f'echo "start $id" >> {tmp_path}/log\n'
        f"trap 'echo \"term $id\" >> {tmp_path}/log; exit 0' TERM\n"
        "while :; do sleep 0.05; done\n"
    )
    fake.chmod(0o755)
    env = dict(
        os.environ,
        JOB_COMPLETION_INDEX=str(rank),
        PXPOOL_ENGINE_IDS="4 5 6 7 8",
        PXPOOL_ENGINES_PER_POD="2",
    )
    shell = subprocess.Popen(["/bin/sh", "-c", pod_script(str(fake), [])], env=env)
    try:
        deadline = time.monotonic() + 10
        while (
            len((tmp_path / "log").read_text().split("start")) < 3
            if (tmp_path / "log").exists()
            else True
        ):
            assert time.monotonic() < deadline, "the pod's engines did not start"
            time.sleep(0.02)
        shell.terminate()  # the kubelet's SIGTERM to PID 1
        assert shell.wait(timeout=10) == 0
    finally:
        shell.kill()
    return sorted((tmp_path / "log").read_text().split("\n"))[1:]


def test_pod_shell_starts_its_ranks_engines_and_passes_sigterm_on(tmp_path: Path) -> None:
    assert _run_pod(tmp_path, rank=1) == ["start 6", "start 7", "term 6", "term 7"]
