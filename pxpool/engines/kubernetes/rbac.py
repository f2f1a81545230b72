"""The Role the notebook's service account needs, and the message when it lacks it.

``pxpool k8s-rbac`` prints the Role and its RoleBinding as YAML for an administrator
to apply; a request the API server forbids is reported with the verb and resource it
refused and the same Role.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

__all__ = ["RULES", "role_manifests", "role_yaml", "k8s_role_yaml", "to_yaml"]

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

# what the provider does, resource by resource (and why)
RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "pods", ("get", "list", "watch")),  # the notebook's own pod; engine pods' states
    ("", "pods/log", ("get",)),  # the output of a pod that failed
    ("", "secrets", ("create", "delete")),  # the connection file for engines
    ("batch", "jobs", ("create", "get", "list", "delete")),  # one Job per engine set
)


def role_manifests(namespace: str, service_account: str = "default") -> list[dict[str, Any]]:
    """A Role with :data:`RULES` and a RoleBinding to ``service_account``."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "pxpool", "namespace": namespace},
        "rules": [
            {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
            for group, resource, verbs in RULES
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "pxpool", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pxpool"},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
    return [role, binding]


def to_yaml(documents: list[Any]) -> str:
    """YAML documents (PyYAML, which the Kubernetes client brings); JSON, which YAML
    reads too, without it."""
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        return "\n---\n".join(json.dumps(d, indent=2) for d in documents) + "\n"

    class Dumper(yaml.SafeDumper):  # type: ignore[misc]  # untyped base
        """Multi-line strings (the pod's script) as literal blocks, no anchors."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return str(yaml.dump_all(documents, Dumper=Dumper, sort_keys=False, default_flow_style=False))


def role_yaml(namespace: str, service_account: str = "default") -> str:
    return to_yaml(role_manifests(namespace, service_account))


def k8s_role_yaml(namespace: str | None = None, service_account: str = "") -> str:
    """``pxpool k8s-rbac``: the Role for ``namespace`` (default: this pod's namespace,
    else ``default``) bound to ``service_account`` (default: ``default``)."""
    if not namespace:
        try:
            namespace = Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
        except OSError:
            namespace = "default"
    return role_yaml(namespace or "default", service_account or "default")
