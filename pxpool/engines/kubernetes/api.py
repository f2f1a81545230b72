"""The Kubernetes API, through the official Python client (``pip install kubernetes``).

Why the client and not ``kubectl``: a JupyterHub notebook image has pip but rarely
kubectl; the client reads the pod's service account (in-cluster configuration) or a
kubeconfig on its own; and its errors carry the API server's status and message as
data, so a refusal is reported without parsing a command's text. Each call here is
blocking (the provider runs it in a thread) and returns plain dicts in the API's own
camelCase, the shape :mod:`.reasons` reads and the manifests are written in.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from ...errors import PoolStartError
from .errors import forbidden, rejected

__all__ = ["KubeApi", "SERVICE_ACCOUNT_DIR", "in_cluster"]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT = 15.0  # seconds for one API request


def in_cluster() -> bool:
    """True inside a pod: Kubernetes gives every container the API server's address."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _client() -> Any:
    """The ``kubernetes`` package (untyped: imported by name, so it types as Any)."""
    try:
        return importlib.import_module("kubernetes")
    except ImportError:
        raise PoolStartError(
            "The kubernetes provider needs the Kubernetes Python client; install it with "
            "`pip install 'pxpool[kubernetes]'` (or `pip install kubernetes`) and start again."
        ) from None


class KubeApi:
    """The few calls the provider makes; errors become pxpool errors with their reason."""

    def __init__(self, service_account: str = "default") -> None:
        kubernetes = _client()
        try:
            if in_cluster():
                kubernetes.config.load_incluster_config()
            else:
                # the client reads KUBECONFIG when first imported: read it now
                kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except kubernetes.config.ConfigException as exc:
            raise PoolStartError(
                f"No Kubernetes cluster to talk to: {exc}. Inside a pod the service account "
                "is used (KUBERNETES_SERVICE_HOST); elsewhere set KUBECONFIG or write "
                "~/.kube/config."
            ) from None
        self._api = kubernetes.client.ApiClient()
        self._core = kubernetes.client.CoreV1Api(self._api)
        self._batch = kubernetes.client.BatchV1Api(self._api)
        self._error = kubernetes.client.exceptions.ApiException
        self.service_account = service_account

    def close(self) -> None:
        self._api.close()

    def default_namespace(self) -> str:
        """The namespace of this pod's service account, else the kubeconfig context's."""
        try:
            return (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip()
        except OSError:
            pass
        try:
            config = _client().config
            _, context = config.list_kube_config_contexts(os.environ.get("KUBECONFIG"))
            return str(context["context"].get("namespace") or "default")
        except Exception:
            return "default"

    def _call(self, verb: str, resource: str, namespace: str, method: Any, *args: Any) -> Any:
        try:
            result = method(*args, _request_timeout=REQUEST_TIMEOUT)
        except self._error as exc:
            if exc.status == 404 and verb in ("get", "delete"):
                return None
            message = _message(exc)
            if exc.status == 403:
                raise forbidden(verb, resource, namespace, message, self.service_account) from None
            raise rejected(verb, resource, exc.status, message) from None
        except OSError as exc:  # urllib3's connection errors are OSErrors
            raise rejected(verb, resource, None, f"no answer from the API server: {exc}") from exc
        return self._api.sanitize_for_serialization(result)

    # -------------------------------------------------- pods

    def read_pod(self, namespace: str, name: str) -> Any:
        return self._call("get", "pods", namespace, self._core.read_namespaced_pod, name, namespace)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = self._call("list", "pods", namespace, self._pods_matching, namespace, selector)
        return list(found.get("items") or [])

    def _pods_matching(self, namespace: str, selector: str, **kwargs: Any) -> Any:
        return self._core.list_namespaced_pod(namespace, label_selector=selector, **kwargs)

    def pod_log(self, namespace: str, name: str, lines: int = 40) -> str:
        try:  # the raw response: the client turns a decoded log into "b'...'" text
            response = self._core.read_namespaced_pod_log(
                name,
                namespace,
                tail_lines=lines,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except (self._error, OSError):
            return ""  # a pod that never started has no log
        return bytes(response.data).decode(errors="replace")

    # -------------------------------------------------- the connection Secret

    def create_secret(self, namespace: str, body: dict[str, Any]) -> None:
        """Create (or, left by an earlier pool of the same name, replace) a Secret."""
        try:
            self._core.create_namespaced_secret(namespace, body, _request_timeout=REQUEST_TIMEOUT)
            return
        except self._error as exc:
            if exc.status != 409:  # only "AlreadyExists" is replaced; the rest as _call says
                self._call("create", "secrets", namespace, _raise, exc)
        self.delete_secret(namespace, body["metadata"]["name"])
        create = self._core.create_namespaced_secret
        self._call("create", "secrets", namespace, create, namespace, body)

    def delete_secret(self, namespace: str, name: str) -> None:
        self._call(
            "delete", "secrets", namespace, self._core.delete_namespaced_secret, name, namespace
        )

    # -------------------------------------------------- Jobs

    def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        self._call("create", "jobs", namespace, self._batch.create_namespaced_job, namespace, body)

    def read_job(self, namespace: str, name: str) -> Any:
        return self._call(
            "get", "jobs", namespace, self._batch.read_namespaced_job, name, namespace
        )

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = self._call("list", "jobs", namespace, self._jobs_matching, namespace, selector)
        return list(found.get("items") or [])

    def _jobs_matching(self, namespace: str, selector: str, **kwargs: Any) -> Any:
        return self._batch.list_namespaced_job(namespace, label_selector=selector, **kwargs)

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job; its pods go too (background propagation: the Job object goes at
        once, the garbage collector deletes the pods, each with its grace period)."""
        self._call(
            "delete",
            "jobs",
            namespace,
            self._delete_job,
            name,
            namespace,
        )

    def _delete_job(self, name: str, namespace: str, **kwargs: Any) -> Any:
        return self._batch.delete_namespaced_job(
            name, namespace, propagation_policy="Background", **kwargs
        )


def _raise(exc: BaseException, **kwargs: Any) -> None:
    """Raise ``exc`` where :meth:`KubeApi._call` translates it."""
    raise exc


def _message(exc: Any) -> str:
    """The API server's own message (its Status object), else the HTTP reason."""
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
