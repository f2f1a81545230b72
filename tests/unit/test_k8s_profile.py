"""The ``[kubernetes]`` profile table: quantities as Kubernetes reads them, tolerations
in kubectl's taint syntax, errors that name the key; and ``pxpool k8s-rbac``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

import pxpool
from pxpool._profile.settings import Toleration
from pxpool.cli import main
from pxpool.engines.kubernetes.rbac import RULES
from pxpool.errors import ProfileValidationError


def test_defaults_are_the_safe_ones() -> None:
    settings = pxpool.load_profile("kubernetes").kubernetes
    assert (settings.image, settings.namespace) == ("", "")  # the notebook pod's
    assert settings.memory_limit_bytes is None and settings.memory_bytes == 2**30
    assert (settings.engines_per_pod, settings.pods_per_job, settings.drain_time) == (1, 1, 30)
    assert settings.unschedulable_wait == 0  # Kubernetes' reasons are reported at once


def test_quantities_are_read_as_kubernetes_reads_them() -> None:
    settings = pxpool.load_profile(
        "kubernetes", cpu="250m", cpu_limit="1.5", k8s_memory="2G", k8s_memory_limit="4Gi"
    ).kubernetes
    assert (settings.cpu_millis, settings.cpu_limit_millis) == (250, 1500)
    assert (settings.memory_bytes, settings.memory_limit_bytes) == (2 * 10**9, 4 * 2**30)


def test_tolerations_read_kubectl_taint_syntax() -> None:
    settings = pxpool.load_profile(
        "kubernetes", tolerations=["gpu=true:NoSchedule", "spot:NoExecute", "any"]
    ).kubernetes
    assert settings.tolerations == (
        Toleration("gpu", "Equal", "true", "NoSchedule"),
        Toleration("spot", "Exists", "", "NoExecute"),
        Toleration("any", "Exists", "", ""),
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cpu": "two"}, r"kubernetes\.cpu: cannot read CPU 'two'; write cores or millicores"),
        ({"k8s_memory": "4GB"}, r"kubernetes\.memory: cannot read memory '4GB'.*'512Mi'"),
        (
            {"k8s_memory": "2Gi", "k8s_memory_limit": "1Gi"},
            r"kubernetes\.memory_limit: '1Gi' is below the request memory = '2Gi'",
        ),
        (
            {"tolerations": ["gpu:NoSchedul"]},
            r"kubernetes\.tolerations\[0\]: cannot read toleration",
        ),
        ({"image_pull_policy": "always"}, r"did you mean 'Always'"),
        ({"engines_per_pod": 0}, r"kubernetes\.engines_per_pod: must be >= 1"),
    ],
)
def test_bad_values_name_the_key_and_an_example(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileValidationError, match=message):
        pxpool.load_profile("kubernetes", **overrides)


def test_k8s_rbac_prints_a_role_and_its_binding(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s-rbac", "--namespace", "jhub", "--service-account", "jupyter"]) == 0
    role, binding = yaml.safe_load_all(capsys.readouterr().out)
    assert (role["kind"], role["metadata"]["namespace"]) == ("Role", "jhub")
    granted = {(r["apiGroups"][0], r["resources"][0]): r["verbs"] for r in role["rules"]}
    assert granted[("batch", "jobs")] == ["create", "get", "list", "delete"]
    assert len(granted) == len(RULES)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "jupyter", "namespace": "jhub"}
    ]


def test_offered_to_start_only_with_a_cluster_to_talk_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JupyterLab's sidebar lists profiles whose provider can start here."""
    from pxpool.engines import provider_for

    provider = provider_for(pxpool.load_profile("kubernetes"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'none'}{os.pathsep}{tmp_path / 'nor'}")
    assert provider.startable_here() is False  # a laptop with the client, no cluster
    (tmp_path / "nor").write_text("apiVersion: v1\nkind: Config\n")
    assert provider.startable_here() is True
    monkeypatch.delenv("KUBECONFIG")
    assert provider.startable_here() is False  # ~/.kube/config missing
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # inside a pod
    assert provider.startable_here() is True
