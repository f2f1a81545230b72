"""The notebook's own pod: its image (the engines' default), its uid (the owner of the
engine Jobs, so they go when it goes), its IP (where the controller listens).

Kubernetes names a pod's host after the pod, so ``HOSTNAME`` is the pod's name and the
hostname resolves to the pod IP; ``PXPOOL_POD_NAME``, ``PXPOOL_POD_NAMESPACE`` and
``PXPOOL_POD_IP`` (e.g. from the downward API) take precedence.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from ipyparallel.cluster.launcher import LocalControllerLauncher
from traitlets import List

from .api import KubeApi, in_cluster
from .manifests import Owner

__all__ = ["NotebookPod", "find_notebook_pod", "pod_ip", "PodIPController"]

NOTEBOOK_CONTAINER = "notebook"  # JupyterHub's KubeSpawner names its container so
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class NotebookPod:
    name: str
    namespace: str
    uid: str
    image: str
    ip: str
    service_account: str

    @property
    def owner(self) -> Owner:
        return Owner(self.name, self.uid)


def _pod_name() -> str | None:
    explicit = os.environ.get("PXPOOL_POD_NAME")
    if explicit:
        return explicit
    return (os.environ.get("HOSTNAME") or socket.gethostname()) if in_cluster() else None


def find_notebook_pod(api: KubeApi, namespace: str) -> tuple[NotebookPod | None, str]:
    """The pod this process runs in, or None and why it is not known."""
    name = _pod_name()
    if name is None:
        return None, "this process does not run in a Kubernetes pod (no KUBERNETES_SERVICE_HOST)"
    namespace = os.environ.get("PXPOOL_POD_NAMESPACE") or namespace
    pod: Any = api.read_pod(namespace, name)
    if not pod:
        return None, f"no pod {name!r} in namespace {namespace!r}"
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    named = [c for c in containers if c.get("name") == NOTEBOOK_CONTAINER]
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    found = NotebookPod(
        name=name,
        namespace=namespace,
        uid=str(metadata.get("uid") or ""),
        image=str((named or containers)[0].get("image") or ""),
        ip=str(status.get("podIP") or ""),
        service_account=str((pod.get("spec") or {}).get("serviceAccountName") or "default"),
    )
    return found, ""


def pod_ip() -> str | None:
    """This pod's IP, without asking the API server (the controller starts before)."""
    for variable in ("PXPOOL_POD_IP", "POD_IP"):
        if os.environ.get(variable):
            return os.environ[variable]
    if not in_cluster():
        return None
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return None


class PodIPController(LocalControllerLauncher):  # type: ignore[misc]  # untyped base
    """pxpool's local controller, listening on the pod IP (engine pods reach the notebook's
    pod there) unless the profile names another address than the loopback default."""

    controller_cmd = List([sys.executable, "-m", "pxpool._entry.controller_main"])

    def find_args(self) -> list[str]:
        args: list[str] = list(super().find_args())
        address = pod_ip()
        if address is None:
            return args
        return [
            f"--ip={address}" if a.startswith("--ip=") and a[5:] in LOOPBACK else a for a in args
        ]
