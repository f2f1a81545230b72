"""Where the controller listens in the notebook's pod, and how the pod is named."""

from __future__ import annotations

import pytest

from pxpool.engines.kubernetes.notebook import PodIPController, pod_ip


def controller_args(ip: str) -> list[str]:
    launcher = PodIPController(controller_args=[f"--ip={ip}", "--HeartMonitor.period=500"])
    return [a for a in launcher.find_args() if a.startswith("--ip=")]


def test_controller_listens_on_the_pod_ip_instead_of_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PXPOOL_POD_IP", "10.12.3.4")
    assert controller_args("127.0.0.1") == ["--ip=10.12.3.4"]
    assert controller_args("0.0.0.0") == ["--ip=0.0.0.0"]  # the profile's own address stays


def test_outside_a_pod_the_profile_address_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("PXPOOL_POD_IP", "POD_IP", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(variable, raising=False)
    assert pod_ip() is None
    assert controller_args("127.0.0.1") == ["--ip=127.0.0.1"]


def test_inside_a_pod_the_hostname_gives_the_pod_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kubernetes writes the pod's hostname with its IP into /etc/hosts."""
    for variable in ("PXPOOL_POD_IP", "POD_IP"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setattr("socket.gethostname", lambda: "localhost")
    assert pod_ip() == "127.0.0.1"
